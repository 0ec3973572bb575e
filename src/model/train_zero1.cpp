// ZeRO-1 for the CPU trainer (data parallelism over MPI): the AdamW moments are sharded over the ranks by whole
// optimizer chunks (kOptimChunk values of one tensor), rank r holding the chunks whose first value falls in
// [r T / N, (r+1) T / N) of the T trainable values. An update reduce-scatters the packed gradients (each rank gets
// the sum of its shard), sums the per-chunk squared norms in chunk order (the partials grad_norm_sq sums, all-
// gathered), clips and updates its shard with adamw_step on exactly the chunks one process would use, and
// all-gathers the parameters: the same bits as the unsharded update, with 1/N of the moments per rank.
#include <algorithm>
#include <cmath>
#include <limits>

#include "dist/mpi_loader.h"
#include "model/train_step.h"
#include "train/optim.h"

namespace recode::model {

void FullTrainer::set_zero1(bool on) {
  if (!on) {
    if (!zero_) return;
    gather_moments();  // back to whole moments on every rank (a collective)
    zero_.reset();
    return;
  }
  if (zero_) return;
  if (!mpi::initialized() || mpi::size() < 2)
    throw Error("ERR_DIST", "ZeRO-1 needs several MPI ranks (launch with mpirun)");
  std::lock_guard<std::mutex> lk(*backend_->train_mutex());
  auto z = std::make_unique<Zero1>();
  for (size_t t = 0; t < tensors_.size(); ++t) {
    const int64_t n = (int64_t)tensors_[t].grad.size();
    for (int64_t b = 0; b < n; b += kOptimChunk) z->chunks.push_back({t, b, std::min(n, b + kOptimChunk)});
    z->total += n;
  }
  const int N = mpi::size(), me = mpi::rank();
  z->elems.assign(N, 0);
  z->nchunks.assign(N, 0);
  int64_t at = 0;
  std::vector<int> owner(z->chunks.size());
  for (size_t c = 0; c < z->chunks.size(); ++c) {
    owner[c] = (int)std::min<int64_t>(N - 1, at * N / std::max<int64_t>(1, z->total));
    z->elems[owner[c]] += z->chunks[c].end - z->chunks[c].begin;
    z->nchunks[owner[c]]++;
    at += z->chunks[c].end - z->chunks[c].begin;
  }
  z->first = std::find(owner.begin(), owner.end(), me) - owner.begin();
  z->last = z->first + (size_t)z->nchunks[me];
  const int64_t own = z->elems[me];
  z->m.assign(own, 0.0f);
  z->v.assign(own, 0.0f);
  z->g.assign(own, 0.0f);
  int64_t off = 0;
  for (size_t c = z->first; c < z->last; ++c) {
    const auto& ch = z->chunks[c];
    TrainTensor& t = tensors_[ch.tensor];
    std::copy(t.exp_avg.begin() + ch.begin, t.exp_avg.begin() + ch.end, z->m.begin() + off);
    std::copy(t.exp_avg_sq.begin() + ch.begin, t.exp_avg_sq.begin() + ch.end, z->v.begin() + off);
    off += ch.end - ch.begin;
  }
  zero_ = std::move(z);
  for (TrainTensor& t : tensors_) {
    std::vector<float>().swap(t.exp_avg);
    std::vector<float>().swap(t.exp_avg_sq);
  }
}

void FullTrainer::gather_moments() {
  if (!zero_) return;
  std::lock_guard<std::mutex> lk(*backend_->train_mutex());
  std::vector<float> full((size_t)zero_->total);
  for (int which = 0; which < 2; ++which) {
    mpi::allgatherv((which ? zero_->v : zero_->m).data(), full.data(), zero_->elems.data(), mpi::Type::F32);
    int64_t off = 0;
    for (TrainTensor& t : tensors_) {
      std::vector<float>& dst = which ? t.exp_avg_sq : t.exp_avg;
      dst.assign(full.begin() + off, full.begin() + off + (int64_t)t.grad.size());
      off += (int64_t)t.grad.size();
    }
  }
}

void FullTrainer::release_moments() {
  if (!zero_) return;
  std::lock_guard<std::mutex> lk(*backend_->train_mutex());
  for (TrainTensor& t : tensors_) {
    std::vector<float>().swap(t.exp_avg);
    std::vector<float>().swap(t.exp_avg_sq);
  }
}

double FullTrainer::apply_adamw_zero1(const AdamWOptions& o) {
  Zero1& z = *zero_;
  // every rank's packed gradient -> the sum over ranks of this rank's shard
  accum_.resize((size_t)z.total);
  int64_t off = 0;
  for (const TrainTensor& t : tensors_) {
    std::copy(t.grad.begin(), t.grad.end(), accum_.begin() + off);
    off += (int64_t)t.grad.size();
  }
  mpi::reduce_scatterv_sum(accum_.data(), z.g.data(), z.elems.data(), mpi::Type::F32);

  // the squared norm: grad_norm_sq's per-chunk partials, summed in chunk order on every rank
  std::vector<double> mine((size_t)(z.last - z.first)), partial(z.chunks.size());
  off = 0;
  for (size_t c = z.first; c < z.last; ++c) {
    double acc = 0.0;
    const int64_t n = z.chunks[c].end - z.chunks[c].begin;
    for (int64_t i = 0; i < n; ++i) acc += (double)z.g[off + i] * (double)z.g[off + i];
    mine[c - z.first] = acc;
    off += n;
  }
  mpi::allgatherv(mine.data(), partial.data(), z.nchunks.data(), mpi::Type::F64);
  double total = 0.0;
  for (double p : partial) total += p;
  const double norm = std::sqrt(total);

  if (std::isfinite(norm)) {
    const double max_norm = o.max_grad_norm > 0 && std::isfinite(o.max_grad_norm)
                                ? o.max_grad_norm
                                : std::numeric_limits<double>::infinity();
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
      const float f = (float)coef;
      for (float& g : z.g) g *= f;
    }
    AdamWHyper h;
    h.lr = o.lr;
    h.beta1 = o.beta1;
    h.beta2 = o.beta2;
    h.eps = o.eps;
    h.weight_decay = o.weight_decay;
    h.step = ++adam_step_;
    // one slot per chunk: adamw_step then works on exactly the chunks the unsharded update uses
    std::vector<ParamSlot> slots;
    off = 0;
    for (size_t c = z.first; c < z.last; ++c) {
      const auto& ch = z.chunks[c];
      TrainTensor& t = tensors_[ch.tensor];
      ParamSlot s;
      s.param = t.param->data() + ch.begin;
      s.grad = z.g.data() + off;
      s.exp_avg = z.m.data() + off;
      s.exp_avg_sq = z.v.data() + off;
      s.count = ch.end - ch.begin;
      s.decay = t.decay;
      slots.push_back(s);
      off += s.count;
    }
    adamw_step(h, slots, 1.0f);
    // every rank's updated shard -> the whole parameters
    off = 0;
    for (size_t c = z.first; c < z.last; ++c) {
      const auto& ch = z.chunks[c];
      const float* p = tensors_[ch.tensor].param->data();
      std::copy(p + ch.begin, p + ch.end, z.g.begin() + off);
      off += ch.end - ch.begin;
    }
    mpi::allgatherv(z.g.data(), accum_.data(), z.elems.data(), mpi::Type::F32);
    off = 0;
    for (TrainTensor& t : tensors_) {
      std::copy(accum_.begin() + off, accum_.begin() + off + (int64_t)t.grad.size(), t.param->begin());
      off += (int64_t)t.grad.size();
    }
    if (adapters_.empty())
      backend_->sync_train_params();
    else
      refresh_adapters(true);
  }
  forwards_in_step_ = 0;
  clear_grads();
  return norm;
}

}  // namespace recode::model
