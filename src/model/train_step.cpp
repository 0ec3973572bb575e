// Full fine-tuning step of the CPU model (see train_step.h). Forward:
//   x = embed[tokens];  for each layer: x = layer(x) (activations kept per layer);  h = rmsnorm(x)
//   logp[t] = log softmax(h[t-1] W_head^T)[tokens[t]]   (fused, never the [T, V] logits)
// Backward, with d loss / d logp_t = -w_t:
//   dh from the log-prob backward (and dW_head), dx from the final norm, each layer in reverse,
//   then the embedding scatter (plus dW_head when the head is tied to the embedding).
#include "model/train_step.h"

#include <cmath>
#include <algorithm>
#include <limits>

#include "train/adapters.h"
#include "model/projections.h"
#include "philox.h"
#include "logprob/logprob.h"
#include "model/cuda_train_step.h"
#include "train/optim.h"

namespace recode::model {
namespace {

// A trainable tensor over `param` with zeroed gradient and AdamW moments.
TrainTensor trainable(const std::string& name, std::vector<int64_t> shape, std::vector<float>* param, bool decay) {
  TrainTensor t;
  t.name = name;
  t.shape = std::move(shape);
  t.param = param;
  t.grad.assign(param->size(), 0.0f);
  t.exp_avg.assign(param->size(), 0.0f);
  t.exp_avg_sq.assign(param->size(), 0.0f);
  t.decay = decay;
  return t;
}

ops::Linear plain_linear(std::vector<float>& w, std::vector<float>& b, int N, int K) {
  ops::Linear l;
  l.w = w.data();
  l.bias = b.empty() ? nullptr : b.data();
  l.N = N;
  l.K = K;
  return l;
}

}  // namespace

std::shared_ptr<Trainer> make_trainer(std::shared_ptr<Backend> backend, const AdapterSpec& spec) {
  if (backend->train_mutex()) return std::make_shared<FullTrainer>(std::move(backend), spec);
  const std::string dev = backend->device();
  if (dev == "cuda" || dev == "emulated" || dev == "counting") return make_cuda_trainer(std::move(backend), spec);
  throw Error("ERR_UNSUPPORTED", std::string("training runs on the cpu backend, not '") + backend->device() + "'");
}

FullTrainer::FullTrainer(std::shared_ptr<Backend> backend, const AdapterSpec& spec)
    : spec_(spec), backend_(std::move(backend)) {
  const ModelConfig& cfg = backend_->config();
  std::mutex* mu = backend_->train_mutex();
  if (!mu)
    throw Error("ERR_UNSUPPORTED",
                std::string("full fine-tuning runs on the cpu backend, not '") + backend_->device() + "'");
  std::lock_guard<std::mutex> lk(*mu);
  p_ = backend_->train_params();
  if (spec.kind != AdapterSpec::Kind::None) {
    init_adapters(spec);
    return;
  }
  const int64_t V = cfg.vocab, C = cfg.hidden, qd = (int64_t)cfg.heads * cfg.head_dim,
                kd = (int64_t)cfg.kv_heads * cfg.head_dim, F = cfg.intermediate, D = cfg.head_dim;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, std::vector<float>* param, bool decay) {
    tensors_.push_back(trainable(name, std::move(shape), param, decay));
  };
  add("model.embed_tokens.weight", {V, C}, p_->embed, true);
  for (int l = 0; l < cfg.layers; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    const TrainLayerParams& L = p_->layers[l];
    add(pre + "input_layernorm.weight", {C}, L.input_norm, false);
    add(pre + "self_attn.q_proj.weight", {qd, C}, L.q_w, true);
    add(pre + "self_attn.k_proj.weight", {kd, C}, L.k_w, true);
    add(pre + "self_attn.v_proj.weight", {kd, C}, L.v_w, true);
    if (cfg.qkv_bias) {
      add(pre + "self_attn.q_proj.bias", {qd}, L.q_b, false);
      add(pre + "self_attn.k_proj.bias", {kd}, L.k_b, false);
      add(pre + "self_attn.v_proj.bias", {kd}, L.v_b, false);
    }
    add(pre + "self_attn.o_proj.weight", {C, qd}, L.o_w, true);
    if (cfg.o_bias) add(pre + "self_attn.o_proj.bias", {C}, L.o_b, false);
    if (cfg.qk_norm) {
      add(pre + "self_attn.q_norm.weight", {D}, L.q_norm, false);
      add(pre + "self_attn.k_norm.weight", {D}, L.k_norm, false);
    }
    add(pre + "post_attention_layernorm.weight", {C}, L.post_attention_norm, false);
    add(pre + "mlp.gate_proj.weight", {F, C}, L.gate_w, true);
    if (cfg.mlp_bias) add(pre + "mlp.gate_proj.bias", {F}, L.gate_b, false);
    add(pre + "mlp.up_proj.weight", {F, C}, L.up_w, true);
    if (cfg.mlp_bias) add(pre + "mlp.up_proj.bias", {F}, L.up_b, false);
    add(pre + "mlp.down_proj.weight", {C, F}, L.down_w, true);
    if (cfg.mlp_bias) add(pre + "mlp.down_proj.bias", {C}, L.down_b, false);
  }
  add("model.norm.weight", {C}, p_->final_norm, false);
  if (p_->lm_head) add("lm_head.weight", {V, C}, p_->lm_head, true);

  // gradient pointers by role (tensors_ is complete: no more reallocation)
  size_t i = 0;
  g_embed_ = tensors_[i++].grad.data();
  g_layers_.resize(cfg.layers);
  for (int l = 0; l < cfg.layers; ++l) {
    ops::LayerGrads& g = g_layers_[l];
    g.input_norm = tensors_[i++].grad.data();
    g.q_w = tensors_[i++].grad.data();
    g.k_w = tensors_[i++].grad.data();
    g.v_w = tensors_[i++].grad.data();
    if (cfg.qkv_bias) {
      g.q_b = tensors_[i++].grad.data();
      g.k_b = tensors_[i++].grad.data();
      g.v_b = tensors_[i++].grad.data();
    }
    g.o_w = tensors_[i++].grad.data();
    if (cfg.o_bias) g.o_b = tensors_[i++].grad.data();
    if (cfg.qk_norm) {
      g.q_norm = tensors_[i++].grad.data();
      g.k_norm = tensors_[i++].grad.data();
    }
    g.post_attention_norm = tensors_[i++].grad.data();
    g.gate_w = tensors_[i++].grad.data();
    if (cfg.mlp_bias) g.gate_b = tensors_[i++].grad.data();
    g.up_w = tensors_[i++].grad.data();
    if (cfg.mlp_bias) g.up_b = tensors_[i++].grad.data();
    g.down_w = tensors_[i++].grad.data();
    if (cfg.mlp_bias) g.down_b = tensors_[i++].grad.data();
  }
  g_final_norm_ = tensors_[i++].grad.data();
  // a tied head's gradient adds into the embedding's
  g_lm_head_ = p_->lm_head ? tensors_[i++].grad.data() : g_embed_;
}

// ---- adapters -------------------------------------------------------------------------------------------
// PEFT's initialisation: A ~ kaiming-uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)) (drawn from Philox keyed by
// the seed, one stream per adapted module), B = 0, and for DoRA m = ||W|| per row, so a fresh adapter leaves the
// model exactly as it was.
void FullTrainer::init_adapters(const AdapterSpec& spec) {
  const ModelConfig& cfg = backend_->config();
  if (spec.rank < 1) throw Error("ERR_INVALID_ARG", "adapter rank must be at least 1");
  if (spec.targets.empty()) throw Error("ERR_INVALID_ARG", "adapter target modules must not be empty");
  if (!(spec.dropout >= 0 && spec.dropout < 1)) throw Error("ERR_INVALID_ARG", "adapter dropout must be in [0, 1)");
  const bool dora = spec.kind == AdapterSpec::Kind::DoRA;
  const int C = cfg.hidden, qd = cfg.heads * cfg.head_dim, kd = cfg.kv_heads * cfg.head_dim, F = cfg.intermediate;
  const int dims[7][2] = {{qd, C}, {kd, C}, {kd, C}, {C, qd}, {F, C}, {F, C}, {C, F}};  // [out, in]
  g_layers_.assign(cfg.layers, ops::LayerGrads{});  // the base is frozen: no base gradients at all
  for (int l = 0; l < cfg.layers; ++l) {
    const TrainLayerParams& L = p_->layers[l];
    std::vector<float>* base[7] = {L.q_w, L.k_w, L.v_w, L.o_w, L.gate_w, L.up_w, L.down_w};
    for (int proj = 0; proj < 7; ++proj) {
      if (std::find(spec.targets.begin(), spec.targets.end(), kProjections[proj]) == spec.targets.end()) continue;
      auto slot = std::make_unique<AdapterSlot>();
      slot->layer = l;
      slot->proj = proj;
      slot->base = base[proj];
      slot->N = dims[proj][0];
      slot->K = dims[proj][1];
      const int64_t rk = (int64_t)spec.rank * slot->K;
      slot->a.resize(rk);
      const double bound = 1.0 / std::sqrt((double)slot->K);
      for (int64_t i = 0; i < rk; ++i)
        slot->a[i] = philox::lora_a_init(spec.seed, (uint32_t)adapters_.size(), (uint64_t)i, bound);
      slot->b.assign((size_t)slot->N * spec.rank, 0.0f);
      if (dora) {
        slot->magnitude.resize(slot->N);
        slot->norm.resize(slot->N);
      }
      adapters_.push_back(std::move(slot));
    }
  }
  if (adapters_.empty()) throw Error("ERR_INVALID_ARG", "adapter target modules match no projection of this model");
  for (auto& slot : adapters_) {
    const std::string module = "base_model.model.model.layers." + std::to_string(slot->layer) + "." +
                               projection_parent(slot->proj) + "." + kProjections[slot->proj];
    // HF Trainer decays every parameter but biases and norm weights
    auto add = [&](const std::string& name, std::vector<int64_t> shape, std::vector<float>* param) {
      tensors_.push_back(trainable(name, std::move(shape), param, true));
    };
    add(module + ".lora_A.weight", {spec.rank, slot->K}, &slot->a);
    add(module + ".lora_B.weight", {slot->N, spec.rank}, &slot->b);
    if (dora) add(module + ".lora_magnitude_vector", {slot->N}, &slot->magnitude);
  }
  // the layer views (tensors_ is complete: no more reallocation)
  for (size_t i = 0, t = 0; i < adapters_.size(); ++i) {
    AdapterSlot& s = *adapters_[i];
    ops::LinearAdapter& v = s.view;
    v.a = s.a.data();
    v.b = s.b.data();
    v.grad_a = tensors_[t++].grad.data();
    v.grad_b = tensors_[t++].grad.data();
    if (dora) {
      v.magnitude = s.magnitude.data();
      v.weight_norm = s.norm.data();
      v.grad_magnitude = tensors_[t++].grad.data();
    }
    v.rank = spec.rank;
    v.scaling = (float)(spec.alpha / spec.rank);
    v.dropout = (float)spec.dropout;
  }
  refresh_adapters(false);
  for (auto& s : adapters_)
    std::copy(s->norm.begin(), s->norm.end(), s->magnitude.begin());  // DoRA: m = ||W + s B A|| = ||W|| (B = 0)
}

// After A, B or m changed: DoRA's row norms, and (repack) the inference weights generation uses: the merged
// weight with adapters on, the base with them off.
void FullTrainer::refresh_adapters(bool repack) {
  std::vector<float> merged;
  for (auto& sp : adapters_) {
    AdapterSlot& s = *sp;
    float* norm = s.norm.empty() ? nullptr : s.norm.data();
    if (repack && adapters_enabled_) {  // the norms come from the same pass over W + s B A
      merged.resize((size_t)s.N * s.K);
      ops::adapter_merged_weight(merged.data(), norm, s.base->data(), s.view, s.N, s.K);
      backend_->repack_linear(s.base, merged.data());
      continue;
    }
    if (norm) ops::adapter_weight_norm(norm, s.base->data(), s.view, s.N, s.K);
    if (repack) backend_->repack_linear(s.base, s.base->data());
  }
}

// See adapter_dropout_key in train_step.h.
void FullTrainer::set_dropout_stream(int forward_index) {
  const uint64_t key = adapter_dropout_key(spec_.seed, adam_step_);
  for (size_t i = 0; i < adapters_.size(); ++i) {
    adapters_[i]->view.seed = key;
    adapters_[i]->view.offset = adapter_dropout_offset(forward_index, adapters_.size(), i);
  }
}

void FullTrainer::set_activation_recomputation(bool on) {
  std::lock_guard<std::mutex> lk(*backend_->train_mutex());
  pending_.reset();  // kept in the other layout
  recompute_ = on;
}

std::string FullTrainer::merged_weight(size_t i, std::vector<float>& out, std::vector<int64_t>& shape) {
  std::lock_guard<std::mutex> lk(*backend_->train_mutex());
  if (i >= adapters_.size()) throw Error("ERR_INVALID_ARG", "merged weight: module index out of range");
  const AdapterSlot& s = *adapters_[i];
  out.resize((size_t)s.N * s.K);
  ops::adapter_merged_weight(out.data(), nullptr, s.base->data(), s.view, s.N, s.K);
  shape = {s.N, s.K};
  return "model.layers." + std::to_string(s.layer) + "." + projection_parent(s.proj) + "." + kProjections[s.proj] +
         ".weight";
}

void FullTrainer::set_adapters_enabled(bool enabled) {
  std::lock_guard<std::mutex> lk(*backend_->train_mutex());
  if (adapters_.empty() || enabled == adapters_enabled_) return;
  pending_.reset();
  adapters_enabled_ = enabled;
  refresh_adapters(true);
}

void FullTrainer::zero_grad() {
  std::lock_guard<std::mutex> lk(*backend_->train_mutex());
  clear_grads();
}

void FullTrainer::clear_grads() {
  for (TrainTensor& t : tensors_) std::fill(t.grad.begin(), t.grad.end(), 0.0f);
  has_grads_ = false;
}

// The training layer views: plain float32 weights (the GEMM packs them per call), so the gradients are
// exactly those of the master weights.
std::vector<ops::LayerWeights> FullTrainer::layer_views(bool with_adapters) const {
  const ops::LayerDims& d = p_->dims;
  std::vector<ops::LayerWeights> lw(p_->layers.size());
  for (size_t l = 0; l < lw.size(); ++l) {
    const TrainLayerParams& P = p_->layers[l];
    ops::LayerWeights& w = lw[l];
    w.input_norm = P.input_norm->data();
    w.post_attention_norm = P.post_attention_norm->data();
    w.q_norm = P.q_norm->empty() ? nullptr : P.q_norm->data();
    w.k_norm = P.k_norm->empty() ? nullptr : P.k_norm->data();
    w.q = plain_linear(*P.q_w, *P.q_b, d.H * d.D, d.C);
    w.k = plain_linear(*P.k_w, *P.k_b, d.Hkv * d.D, d.C);
    w.v = plain_linear(*P.v_w, *P.v_b, d.Hkv * d.D, d.C);
    w.o = plain_linear(*P.o_w, *P.o_b, d.C, d.H * d.D);
    w.gate = plain_linear(*P.gate_w, *P.gate_b, d.F, d.C);
    w.up = plain_linear(*P.up_w, *P.up_b, d.F, d.C);
    w.down = plain_linear(*P.down_w, *P.down_b, d.C, d.F);
  }
  if (with_adapters)
    for (const auto& s : adapters_) {
      ops::LayerWeights& w = lw[s->layer];
      ops::Linear* target[7] = {&w.q, &w.k, &w.v, &w.o, &w.gate, &w.up, &w.down};
      target[s->proj]->adapter = &s->view;
    }
  return lw;
}

void FullTrainer::forward_locked(const std::vector<int>& counts, const int32_t* tokens, float* logp,
                                 const CancelFlag& cancel) {
  pending_.reset();
  const ModelConfig& cfg = backend_->config();
  const ops::LayerDims& d = p_->dims;
  const int C = cfg.hidden, V = cfg.vocab;
  auto f = std::make_unique<Pending>();
  int T = 0;
  for (size_t s = 0; s < counts.size(); ++s) {
    if (counts[s] <= 0) throw Error("ERR_INVALID_ARG", "train step: sequence " + std::to_string(s) + " is empty");
    T += counts[s];
  }
  for (int i = 0; i < T; ++i)
    if (tokens[i] < 0 || tokens[i] >= V)
      throw Error("ERR_INVALID_ARG", "train step: token id " + std::to_string(tokens[i]) + " at index " +
                                         std::to_string(i) + " outside the vocabulary [0, " + std::to_string(V) + ")");
  f->T = T;
  f->tokens.assign(tokens, tokens + T);
  // whole sequences from position 0; attention reads each slice's own keys/values (no cache)
  f->pos.resize(T);
  f->seqs.resize(counts.size());
  for (size_t s = 0, t0 = 0; s < counts.size(); t0 += counts[s], ++s) {
    f->seqs[s].t0 = (int)t0;
    f->seqs[s].t = counts[s];
    for (int j = 0; j < counts[s]; ++j) f->pos[t0 + j] = j;
  }
  f->adapters = !adapters_.empty() && adapters_enabled_;
  f->forward_index = forwards_in_step_;
  if (f->adapters) {
    set_dropout_stream(f->forward_index);
    ++forwards_in_step_;
  }
  const std::vector<ops::LayerWeights> lw = layer_views(f->adapters);
  const float* head = p_->lm_head ? p_->lm_head->data() : p_->embed->data();

  f->x.resize((size_t)T * C);
  ops::embedding_forward(f->x.data(), tokens, p_->embed->data(), T, C);
  ops::LayerActs scratch;
  if (recompute_) {
    f->layer_inputs.resize(cfg.layers);
    scratch.resize(T, d, false);
  } else {
    f->acts.resize(cfg.layers);
  }
  for (int l = 0; l < cfg.layers; ++l) {
    cancel.throw_if_requested();
    if (recompute_) {
      // keep the layer's input only; the activations go to a scratch reused by every layer
      f->layer_inputs[l].assign(f->x.begin(), f->x.end());
      ops::decoder_layer_forward(f->x.data(), lw[l], d, f->pos.data(), T, f->seqs, scratch, p_->inv_freq);
    } else {
      f->acts[l].resize(T, d, true);
      ops::decoder_layer_forward(f->x.data(), lw[l], d, f->pos.data(), T, f->seqs, f->acts[l], p_->inv_freq);
    }
  }
  std::vector<float> normed((size_t)T * C);
  f->rstd.resize(T);
  ops::rmsnorm_forward(normed.data(), f->rstd.data(), f->x.data(), p_->final_norm->data(), T, C, d.eps);

  // rows that predict a next token: position t-1 predicts token t within each sequence
  for (const ops::AttnSeq& s : f->seqs)
    for (int j = 1; j < s.t; ++j) f->row_of.push_back(s.t0 + j);
  const int R = (int)f->row_of.size();
  f->hid.resize((size_t)R * C);
  f->lp.resize(R);
  f->ent.resize(R);
  f->lse.resize(R);
  f->targets.resize(R);
  for (int r = 0; r < R; ++r) {
    std::copy_n(normed.data() + (size_t)(f->row_of[r] - 1) * C, C, f->hid.data() + (size_t)r * C);
    f->targets[r] = tokens[f->row_of[r]];
  }
  std::fill(logp, logp + T, 0.0f);
  if (R > 0) {
    logprob::forward_hidden(f->hid.data(), head, R, C, V, f->targets.data(), 1.0f, f->lp.data(), f->ent.data(),
                            f->lse.data());
    for (int r = 0; r < R; ++r) logp[f->row_of[r]] = f->lp[r];
  }
  pending_ = std::move(f);
}

double FullTrainer::backward_locked(const float* weights, const CancelFlag& cancel) {
  if (!has_grads_) {
    const double loss = backward_into_grads(weights, cancel);
    has_grads_ = true;
    return loss;
  }
  // A later micro-batch: its gradient is computed on its own and then added, so the step's gradient is the plain
  // sum of micro-batch gradients -- the same bits as data-parallel ranks each computing one and summing them.
  if (!pending_)
    throw Error("ERR_INVALID_ARG",
                "train backward: no pending forward (call forward first; each forward takes one backward)");
  size_t total = 0;
  for (const TrainTensor& t : tensors_) total += t.grad.size();
  accum_.resize(total);
  size_t o = 0;
  for (TrainTensor& t : tensors_) {
    std::copy(t.grad.begin(), t.grad.end(), accum_.begin() + (ptrdiff_t)o);
    std::fill(t.grad.begin(), t.grad.end(), 0.0f);
    o += t.grad.size();
  }
  const double loss = backward_into_grads(weights, cancel);  // throws with the gradients cleared
  o = 0;
  for (TrainTensor& t : tensors_) {
    float* g = t.grad.data();
    const float* a = accum_.data() + o;
    for (size_t i = 0; i < t.grad.size(); ++i) g[i] = a[i] + g[i];
    o += t.grad.size();
  }
  has_grads_ = true;
  return loss;
}

void FullTrainer::set_forward_index(int index) {
  std::lock_guard<std::mutex> lk(*backend_->train_mutex());
  if (index < 0) throw Error("ERR_INVALID_ARG", "trainer: forward index must be >= 0");
  forwards_in_step_ = index;
}

void FullTrainer::reduce_gradients(const std::function<void(float*, int64_t)>& sum) {
  std::lock_guard<std::mutex> lk(*backend_->train_mutex());
  size_t total = 0;
  for (const TrainTensor& t : tensors_) total += t.grad.size();
  accum_.resize(total);
  size_t o = 0;
  for (const TrainTensor& t : tensors_) {
    std::copy(t.grad.begin(), t.grad.end(), accum_.begin() + (ptrdiff_t)o);
    o += t.grad.size();
  }
  sum(accum_.data(), (int64_t)total);
  o = 0;
  for (TrainTensor& t : tensors_) {
    std::copy_n(accum_.data() + o, t.grad.size(), t.grad.data());
    o += t.grad.size();
  }
  has_grads_ = true;
}

double FullTrainer::backward_into_grads(const float* weights, const CancelFlag& cancel) {
  if (!pending_)
    throw Error("ERR_INVALID_ARG",
                "train backward: no pending forward (call forward first; each forward takes one backward)");
  std::unique_ptr<Pending> f = std::move(pending_);  // consumed whatever happens
  const ModelConfig& cfg = backend_->config();
  const ops::LayerDims& d = p_->dims;
  const int C = cfg.hidden, V = cfg.vocab, T = f->T;
  for (const ops::AttnSeq& s : f->seqs)
    if (weights[s.t0] != 0.0f)
      throw Error("ERR_INVALID_ARG",
                  "train step: weights[" + std::to_string(s.t0) +
                      "] belongs to the first token of a sequence, which has no prediction; it must be 0");
  for (int i = 0; i < T; ++i)
    if (!std::isfinite(weights[i]))
      throw Error("ERR_INVALID_ARG", "train step: weights[" + std::to_string(i) + "] is not finite");
  if (f->adapters) set_dropout_stream(f->forward_index);
  const std::vector<ops::LayerWeights> lw = layer_views(f->adapters);
  const float* head = p_->lm_head ? p_->lm_head->data() : p_->embed->data();
  const int R = (int)f->row_of.size();
  double loss = 0;
  std::vector<float> dlogp(R);
  for (int r = 0; r < R; ++r) {
    dlogp[r] = -weights[f->row_of[r]];
    loss -= (double)weights[f->row_of[r]] * f->lp[r];
  }
  try {
    std::vector<float> dnormed((size_t)T * C, 0.0f);
    if (R > 0) {
      // a frozen head (adapters) gets no gradient
      // The gradients are zero on entry (backward_locked moves earlier micro-batches aside, and a tied head's
      // embedding gradient is added below), so the head's gradient is written in place: a vocabulary-sized
      // scratch (545 MB for Qwen2.5's 151,936 x 896) cost a fresh zeroed allocation and an extra pass every step.
      std::vector<float> dhid((size_t)R * C);
      logprob::backward_hidden(f->hid.data(), head, R, C, V, f->targets.data(), 1.0f, f->lse.data(), f->ent.data(),
                               dlogp.data(), nullptr, dhid.data(), g_lm_head_);
      for (int r = 0; r < R; ++r)
        std::copy_n(dhid.data() + (size_t)r * C, C, dnormed.data() + (size_t)(f->row_of[r] - 1) * C);
    }
    std::vector<float> dx((size_t)T * C, 0.0f);
    ops::rmsnorm_backward(dx.data(), g_final_norm_, dnormed.data(), f->x.data(), p_->final_norm->data(), f->rstd.data(),
                          T, C);
    for (int l = cfg.layers - 1; l >= 0; --l) {
      cancel.throw_if_requested();
      if (recompute_) {
        // the same forward again (same weights, same dropout masks: the same activations), for this layer only
        ops::LayerActs& acts = f->acts.empty() ? f->acts.emplace_back() : f->acts[0];
        acts.resize(T, d, true);
        std::vector<float>& x = f->layer_inputs[l];
        ops::decoder_layer_forward(x.data(), lw[l], d, f->pos.data(), T, f->seqs, acts, p_->inv_freq);
        std::vector<float>().swap(x);
      }
      const ops::LayerActs& acts = recompute_ ? f->acts[0] : f->acts[l];
      ops::decoder_layer_backward(dx.data(), lw[l], d, f->pos.data(), T, f->seqs, acts, p_->inv_freq, g_layers_[l]);
    }
    if (g_embed_) ops::embedding_backward(g_embed_, dx.data(), f->tokens.data(), T, C);
    return loss;
  } catch (...) {
    // an interrupted backward leaves partial sums: drop them rather than apply a half gradient
    clear_grads();
    throw;
  }
}

void FullTrainer::forward(const std::vector<int>& counts, const int32_t* tokens, float* logp,
                          const CancelFlag& cancel) {
  std::lock_guard<std::mutex> lk(*backend_->train_mutex());
  forward_locked(counts, tokens, logp, cancel);
}

double FullTrainer::backward(const float* weights, size_t count, const CancelFlag& cancel) {
  std::lock_guard<std::mutex> lk(*backend_->train_mutex());
  if (!pending_)
    throw Error("ERR_INVALID_ARG",
                "train backward: no pending forward (call forward first; each forward takes one backward)");
  if (count != (size_t)pending_->T)
    throw Error("ERR_INVALID_ARG", "train backward: weights must hold one weight per token of the pending forward (" +
                                       std::to_string(pending_->T) + "), got " + std::to_string(count));
  return backward_locked(weights, cancel);
}

double FullTrainer::step(const std::vector<int>& counts, const int32_t* tokens, const float* weights, float* logp,
                         const CancelFlag& cancel) {
  std::lock_guard<std::mutex> lk(*backend_->train_mutex());
  // the weights are checked before any work
  for (size_t s = 0, t0 = 0; s < counts.size(); t0 += std::max(counts[s], 0), ++s)
    if (counts[s] > 0 && weights[t0] != 0.0f)
      throw Error("ERR_INVALID_ARG", "train step: weights[" + std::to_string(t0) +
                                         "] belongs to the first token of sequence " + std::to_string(s) +
                                         ", which has no prediction; it must be 0");
  forward_locked(counts, tokens, logp, cancel);
  return backward_locked(weights, cancel);
}

double FullTrainer::apply_adamw(const AdamWOptions& o) {
  std::lock_guard<std::mutex> lk(*backend_->train_mutex());
  pending_.reset();  // its activations belong to the old weights
  if (zero_) return apply_adamw_zero1(o);
  std::vector<float*> grads;
  std::vector<int64_t> sizes;
  for (TrainTensor& t : tensors_) {
    grads.push_back(t.grad.data());
    sizes.push_back((int64_t)t.grad.size());
  }
  const double max_norm =
      o.max_grad_norm > 0 && std::isfinite(o.max_grad_norm) ? o.max_grad_norm : std::numeric_limits<double>::infinity();
  const double norm = clip_grad_norm(grads, sizes, max_norm);
  if (std::isfinite(norm)) {
    AdamWHyper h;
    h.lr = o.lr;
    h.beta1 = o.beta1;
    h.beta2 = o.beta2;
    h.eps = o.eps;
    h.weight_decay = o.weight_decay;
    h.step = ++adam_step_;
    std::vector<ParamSlot> slots;
    for (TrainTensor& t : tensors_) {
      ParamSlot s;
      s.param = t.param->data();
      s.grad = t.grad.data();
      s.exp_avg = t.exp_avg.data();
      s.exp_avg_sq = t.exp_avg_sq.data();
      s.count = (int64_t)t.grad.size();
      s.decay = t.decay;
      slots.push_back(s);
    }
    adamw_step(h, slots, 1.0f);
    if (adapters_.empty())
      backend_->sync_train_params();
    else
      refresh_adapters(true);
  }
  forwards_in_step_ = 0;
  clear_grads();
  return norm;
}

void FullTrainer::set_tensors(const std::vector<TensorUpdate>& updates, int64_t steps_taken) {
  std::lock_guard<std::mutex> lk(*backend_->train_mutex());
  for (const TensorUpdate& u : updates)
    if (u.index >= tensors_.size()) throw Error("ERR_INVALID_ARG", "trainer: tensor index out of range");
  pending_.reset();  // its activations belong to the old weights
  bool weights_changed = false;
  for (const TensorUpdate& u : updates) {
    TrainTensor& t = tensors_[u.index];
    const size_t n = t.grad.size();
    if (u.param) {
      std::copy(u.param, u.param + n, t.param->data());
      weights_changed = true;
    }
    if (zero_) {
      // only this rank's chunks of the given moments
      int64_t off = 0;
      for (size_t c = zero_->first; c < zero_->last; ++c) {
        const Zero1::Chunk& ch = zero_->chunks[c];
        if (ch.tensor == u.index) {
          if (u.exp_avg) std::copy(u.exp_avg + ch.begin, u.exp_avg + ch.end, zero_->m.begin() + off);
          if (u.exp_avg_sq) std::copy(u.exp_avg_sq + ch.begin, u.exp_avg_sq + ch.end, zero_->v.begin() + off);
        }
        off += ch.end - ch.begin;
      }
      continue;
    }
    if (u.exp_avg) std::copy(u.exp_avg, u.exp_avg + n, t.exp_avg.data());
    if (u.exp_avg_sq) std::copy(u.exp_avg_sq, u.exp_avg_sq + n, t.exp_avg_sq.data());
  }
  if (weights_changed) {
    if (adapters_.empty())
      backend_->sync_train_params();
    else
      refresh_adapters(true);
  }
  if (steps_taken >= 0) {
    adam_step_ = steps_taken;
    forwards_in_step_ = 0;
  }
}

}  // namespace recode::model
