// Full fine-tuning step on the CUDA backend (see cuda_train_step.h), the device twin of train_step.cpp:
//   x_0 = embed[tokens];  x_{l+1} = layer_l(x_l) (every layer's activations kept, or with activation
//   recomputation only each x_l, layer l's forward redone just before its backward);  h = rmsnorm(x_L)
//   logp[t] = log softmax(h[t-1] W_head^T)[tokens[t]]   (fused hidden-state log-prob, fp32 logits)
// Backward, with d loss / d logp_t = -w_t: the head (dh, dW_head), the final norm, each layer in reverse, the
// embedding scatter; a tied head's gradient adds into the embedding's.
// Then AdamW with global-norm clipping on the fp32 masters, writing the backend's inference weights.
// The decoder layer's forward and backward are cuda_decoder_layer.cpp's, shared with the inference backend; this
// file gives it causal attention over the packed sequences, one set of kept activations per layer, and its
// parameters and gradients. Adapter mode (LoRA / DoRA): every model tensor frozen (no weight-gradient GEMMs, no
// embedding scatter, no head gradient); the layer's projection hooks run adapted projections through
// adapted_forward() / adapted_backward() (src/ops/adapter_linear.cpp's math on the device); after each update the
// DoRA norms are recomputed; generation runs the adapters beside the base (generation_forward, through the
// backend's projection hook).
//
// Every kernel runs on the device ('cuda': librecode_cuda.so; 'emulated': the same kernels through the SIMT
// emulation); the host only uploads token ids and weights and reads back logp and the gradient norm.
#include "model/cuda_train_step.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "model/cuda_decoder_layer.h"
#include "train/adapters.h"
#include "model/projections.h"
#include "philox.h"
#include "device/device_buffer.h"
#include "device/memory_count.h"
#include "dist/nccl_comm.h"
#include "dist/nccl_loader.h"
#include "core/numeric.h"

namespace recode::model {
namespace {

#define CALL RECODE_KERNEL_CALL

using Buf = DeviceBuffer;  // one device allocation (bytes), freed with the trainer's kernels

// One model or adapter tensor on the device. Frozen ones (the base under adapters) have no gradient, moments
// or fp32 master copy of a bf16 array (grad is empty: G() gives NULL and the backward skips their gradients).
struct Param {
  size_t n = 0;
  void* storage = nullptr;  // the backend's array (its inference weights), or an adapted projection's frozen base
  int storage_dtype = RECODE_F32;
  float* master = nullptr;  // fp32 master weights: `storage` itself when that is fp32, else master_own
  bool trainable = true;
  Buf master_own, grad, exp_avg, exp_avg_sq;
};

// One LoRA / DoRA adapter on one projection of one decoder layer. Its base weight is the backend's own array,
// never changed: training reads it as the frozen base, and generation with adapters on runs the adapter beside it
// (generation_forward) instead of a merged copy, so no second copy of the adapted matrices exists.
struct Adapter {
  int layer = 0, proj = 0, N = 0, K = 0;
  int w = -1;                  // params_ index of the frozen base weight (the backend's array)
  int a = -1, b = -1, m = -1;  // params_ indices of lora_A [r, K], lora_B [N, r], DoRA's magnitude [N] (-1: LoRA)
  Buf a_c, b_c;                // bf16 compute: A and B rounded to bf16 after every change
  Buf norm;                    // DoRA: ||W + s B A|| per row (fp32 [N])
  // the pending forward's drop(x) A^T [T, r] (compute dtype) and DoRA's pre [T, N] (fp32): the adapter's own
  // buffers, or, recomputing activations, one pair per projection shared by every layer (each layer's are
  // recomputed with its forward just before its backward)
  void* u = nullptr;
  float* pre = nullptr;
  uint64_t seed = 0, offset = 0;  // this forward's dropout stream
};

// Parameter indices of one decoder layer (-1: absent); w and b by projection (cuda_layer::kQ ... kDown).
struct LayerIdx {
  int input_norm = -1, q_norm = -1, k_norm = -1, post_attention_norm = -1;
  int w[cuda_layer::kProjectionCount] = {-1, -1, -1, -1, -1, -1, -1};
  int b[cuda_layer::kProjectionCount] = {-1, -1, -1, -1, -1, -1, -1};
};

// Device buffers and the decoder layer's view of them (what one layer keeps for its backward, or the backward's
// scratch).
template <class View>
struct Bufs {
  std::vector<Buf> bufs;
  View view;
  // Keeps `b` and returns its pointer for a field of the view.
  template <class T = void>
  T* keep(Buf b) {
    bufs.push_back(std::move(b));
    return bufs.back().as<T>();
  }
};

class CudaTrainer final : public Trainer {
 public:
  CudaTrainer(std::shared_ptr<Backend> backend, const AdapterSpec& spec)
      : backend_(std::move(backend)), P_(cuda_train_params(*backend_)), kern_(P_.device) {
    const ModelConfig& cfg = backend_->config();
    spec_ = spec;
    const bool adapters = spec.kind != AdapterSpec::Kind::None;
    if (adapters) {
      if (spec.rank < 1) throw Error("ERR_INVALID_ARG", "adapter rank must be at least 1");
      if (spec.targets.empty()) throw Error("ERR_INVALID_ARG", "adapter target modules must not be empty");
      if (!(spec.dropout >= 0 && spec.dropout < 1)) throw Error("ERR_INVALID_ARG", "adapter dropout must be in [0, 1)");
    }
    dt_ = P_.dtype;
    es_ = dt_ == RECODE_BF16 ? sizeof(bf16) : sizeof(float);
    dims_ = {cfg.hidden, cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.intermediate, (float)cfg.eps, cfg.qk_norm, dt_};
    std::lock_guard<std::mutex> lk(*P_.mu);
    const int64_t V = cfg.vocab, C = cfg.hidden, qd = (int64_t)cfg.heads * cfg.head_dim,
                  kd = (int64_t)cfg.kv_heads * cfg.head_dim, F = cfg.intermediate, D = cfg.head_dim;
    // the same tensors in the same order as the CPU trainer (train_step.cpp)
    // with adapters every model tensor is frozen: kept for the kernels to read, not trained
    auto add = [&](const std::string& name, std::vector<int64_t> shape, void* storage, int storage_dtype, bool decay) {
      Param p;
      p.n = 1;
      for (int64_t s : shape) p.n *= (size_t)s;
      p.storage = storage;
      p.storage_dtype = storage_dtype;
      if (adapters) {
        p.trainable = false;
        if (storage_dtype == RECODE_F32) p.master = static_cast<float*>(storage);
        params_.push_back(std::move(p));
        return (int)params_.size() - 1;
      }
      if (storage_dtype == RECODE_F32) {
        p.master = static_cast<float*>(storage);
      } else {                                   // exact: the bf16 values are the loaded ones
        MemScope scope(MemCategory::Optimizer);  // only the update reads it (ZeRO-1 would shard it)
        p.master_own = Buf(&kern_, p.n * sizeof(float));
        p.master = p.master_own.as<float>();
        CALL(cast_bf16_to_f32, p.n, storage, p.master, nullptr);
      }
      add_trainable(std::move(p), name, std::move(shape), decay);
      train_.push_back((int)params_.size() - 1);
      return (int)params_.size() - 1;
    };
    const int sd = P_.dtype;
    embed_ = add("model.embed_tokens.weight", {V, C}, P_.embed, sd, true);
    layers_.resize(cfg.layers);
    for (int l = 0; l < cfg.layers; ++l) {
      const std::string pre = "model.layers." + std::to_string(l) + ".";
      const CudaLayerParams& L = P_.layers[l];
      LayerIdx& x = layers_[l];
      x.input_norm = add(pre + "input_layernorm.weight", {C}, L.input_norm, sd, false);
      x.w[cuda_layer::kQ] = add(pre + "self_attn.q_proj.weight", {qd, C}, L.q_w, sd, true);
      x.w[cuda_layer::kK] = add(pre + "self_attn.k_proj.weight", {kd, C}, L.k_w, sd, true);
      x.w[cuda_layer::kV] = add(pre + "self_attn.v_proj.weight", {kd, C}, L.v_w, sd, true);
      if (cfg.qkv_bias) {
        x.b[cuda_layer::kQ] = add(pre + "self_attn.q_proj.bias", {qd}, L.q_b, RECODE_F32, false);
        x.b[cuda_layer::kK] = add(pre + "self_attn.k_proj.bias", {kd}, L.k_b, RECODE_F32, false);
        x.b[cuda_layer::kV] = add(pre + "self_attn.v_proj.bias", {kd}, L.v_b, RECODE_F32, false);
      }
      x.w[cuda_layer::kO] = add(pre + "self_attn.o_proj.weight", {C, qd}, L.o_w, sd, true);
      if (cfg.o_bias) x.b[cuda_layer::kO] = add(pre + "self_attn.o_proj.bias", {C}, L.o_b, RECODE_F32, false);
      if (cfg.qk_norm) {
        x.q_norm = add(pre + "self_attn.q_norm.weight", {D}, L.q_norm, sd, false);
        x.k_norm = add(pre + "self_attn.k_norm.weight", {D}, L.k_norm, sd, false);
      }
      x.post_attention_norm = add(pre + "post_attention_layernorm.weight", {C}, L.post_attention_norm, sd, false);
      x.w[cuda_layer::kGate] = add(pre + "mlp.gate_proj.weight", {F, C}, L.gate_w, sd, true);
      if (cfg.mlp_bias) x.b[cuda_layer::kGate] = add(pre + "mlp.gate_proj.bias", {F}, L.gate_b, RECODE_F32, false);
      x.w[cuda_layer::kUp] = add(pre + "mlp.up_proj.weight", {F, C}, L.up_w, sd, true);
      if (cfg.mlp_bias) x.b[cuda_layer::kUp] = add(pre + "mlp.up_proj.bias", {F}, L.up_b, RECODE_F32, false);
      x.w[cuda_layer::kDown] = add(pre + "mlp.down_proj.weight", {C, F}, L.down_w, sd, true);
      if (cfg.mlp_bias) x.b[cuda_layer::kDown] = add(pre + "mlp.down_proj.bias", {C}, L.down_b, RECODE_F32, false);
    }
    final_norm_ = add("model.norm.weight", {C}, P_.final_norm, sd, false);
    head_ = P_.lm_head ? add("lm_head.weight", {V, C}, P_.lm_head, sd, true) : embed_;  // tied: adds into embed's
    if (adapters) init_adapters();
    host_params_.resize(tensors_.size());
    for (size_t i = 0; i < tensors_.size(); ++i) tensors_[i].param = &host_params_[i];
    *P_.release_training = [this] { release_workspace(); };
    *P_.hooks_owner = this;
    MemScope scope(MemCategory::Scratch);
    norm_acc_ = Buf(&kern_, sizeof(float));
    sumsq_scratch_ = Buf(&kern_, RECODE_REDUCE_PARTS * sizeof(float));
  }

  ~CudaTrainer() override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    if (*P_.hooks_owner == this) {  // generation runs the base model again
      *P_.generation_project = nullptr;
      *P_.release_training = nullptr;
      *P_.hooks_owner = nullptr;
    }
  }

  double step(const std::vector<int>& counts, const int32_t* tokens, const float* weights, float* logp,
              const CancelFlag& cancel) override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    // the weights are checked before any work
    for (size_t s = 0, t0 = 0; s < counts.size(); t0 += std::max(counts[s], 0), ++s)
      if (counts[s] > 0 && weights[t0] != 0.0f)
        throw Error("ERR_INVALID_ARG", "train step: weights[" + std::to_string(t0) +
                                           "] belongs to the first token of sequence " + std::to_string(s) +
                                           ", which has no prediction; it must be 0");
    forward_locked(counts, tokens, logp, cancel);
    return backward_locked(weights, cancel);
  }

  void forward(const std::vector<int>& counts, const int32_t* tokens, float* logp, const CancelFlag& cancel) override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    forward_locked(counts, tokens, logp, cancel);
  }

  double backward(const float* weights, size_t count, const CancelFlag& cancel) override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    if (!pending_)
      throw Error("ERR_INVALID_ARG",
                  "train backward: no pending forward (call forward first; each forward takes one backward)");
    if (count != (size_t)T_)
      throw Error("ERR_INVALID_ARG", "train backward: weights must hold one weight per token of the pending forward (" +
                                         std::to_string(T_) + "), got " + std::to_string(count));
    return backward_locked(weights, cancel);
  }

  double apply_adamw(const AdamWOptions& o) override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    pending_ = false;            // its activations belong to the old weights
    if (zero_) reduce_locked();  // ZeRO-1 sums the gradients itself, as the cpu trainer's does
    // global norm: one deterministic sum of squares over every gradient into one device float
    CALL(device_memset, norm_acc_.as(), 0, sizeof(float), nullptr);
    for (int i : train_)
      CALL(sum_squares, params_[i].n, params_[i].grad.as<float>(), norm_acc_.as<float>(), sumsq_scratch_.as<float>(),
           nullptr);
    float sumsq = 0;
    CALL(copy_to_host, &sumsq, norm_acc_.as(), sizeof(float));
    const double norm = std::sqrt((double)sumsq);
    if (std::isfinite(norm)) {
      // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1
      double scale = 1.0;
      if (o.max_grad_norm > 0 && std::isfinite(o.max_grad_norm)) scale = std::min(1.0, o.max_grad_norm / (norm + 1e-6));
      const int step = (int)++adam_step_;
      for (size_t i = 0; i < train_.size(); ++i) {
        if (zero_ && owner_[i] != comm_->rank()) continue;  // ZeRO-1: its owner updates it and sends it below
        Param& p = params_[train_[i]];
        CALL(adamw_update, p.n, p.master, p.grad.as<float>(), p.exp_avg.as<float>(), p.exp_avg_sq.as<float>(),
             p.storage_dtype == RECODE_BF16 ? p.storage : nullptr, (float)o.lr, (float)o.beta1, (float)o.beta2,
             (float)o.eps, tensors_[i].decay ? (float)o.weight_decay : 0.0f, step, (float)scale, nullptr);
      }
      if (zero_) share_updated();
      if (!adapters_.empty()) refresh_adapters();
    }
    forwards_in_step_ = 0;
    clear_grads();
    return norm;
  }

  void zero_grad() override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    clear_grads();
  }

  void set_tensors(const std::vector<TensorUpdate>& updates, int64_t steps_taken) override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    for (const TensorUpdate& u : updates)
      if (u.index >= train_.size()) throw Error("ERR_INVALID_ARG", "trainer: tensor index out of range");
    pending_ = false;  // its activations belong to the old weights
    bool weights_changed = false;
    for (const TensorUpdate& u : updates) {
      Param& p = params_[train_[u.index]];
      const size_t bytes = p.n * sizeof(float);
      if (u.param) {
        weights_changed = true;
        CALL(copy_to_device, p.master, u.param, bytes);
        if (p.storage_dtype == RECODE_BF16)
          CALL(cast_f32_to_bf16, p.n, p.master, p.storage, nullptr);  // inference copy
      }
      // ZeRO-1: a rank keeps the moments of its own tensors only
      if (u.exp_avg && p.exp_avg.as()) CALL(copy_to_device, p.exp_avg.as(), u.exp_avg, bytes);
      if (u.exp_avg_sq && p.exp_avg_sq.as()) CALL(copy_to_device, p.exp_avg_sq.as(), u.exp_avg_sq, bytes);
    }
    if (weights_changed && !adapters_.empty()) refresh_adapters();
    if (steps_taken >= 0) {
      adam_step_ = steps_taken;
      forwards_in_step_ = 0;
    }
  }

  // Host copies of the device arrays, downloaded on every call.
  const std::vector<TrainTensor>& tensors() override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    for (size_t i = 0; i < train_.size(); ++i) {
      const Param& p = params_[train_[i]];
      TrainTensor& t = tensors_[i];
      const size_t bytes = p.n * sizeof(float);
      host_params_[i].resize(p.n);
      t.grad.resize(p.n);
      CALL(copy_to_host, host_params_[i].data(), p.master, bytes);
      CALL(copy_to_host, t.grad.data(), p.grad.as(), bytes);
      if (!p.exp_avg.as()) {  // ZeRO-1: another rank's tensor, not gathered
        t.exp_avg.clear();
        t.exp_avg_sq.clear();
        continue;
      }
      t.exp_avg.resize(p.n);
      t.exp_avg_sq.resize(p.n);
      CALL(copy_to_host, t.exp_avg.data(), p.exp_avg.as(), bytes);
      CALL(copy_to_host, t.exp_avg_sq.data(), p.exp_avg_sq.as(), bytes);
    }
    return tensors_;
  }

  int64_t steps_taken() const override { return adam_step_; }

  // ---- data parallelism: gradients summed on the device through NCCL ---------------------------------------
  void set_forward_index(int index) override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    if (index < 0) throw Error("ERR_INVALID_ARG", "trainer: forward index must be >= 0");
    forwards_in_step_ = index;
  }

  void init_nccl(const void* unique_id, int rank, int size) override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    const nccl::Status& s = nccl::status();
    if (!s.loaded) throw Error("ERR_NCCL_UNAVAILABLE", "NCCL is unavailable: " + s.error);
    // 'emulated' arrays live in host memory and 'cuda' arrays on the GPU: each needs the library that reads them
    if (P_.device == Device::Emulated && !s.host_memory)
      throw Error("ERR_UNSUPPORTED", "device 'emulated' keeps its arrays in host memory, which " + s.library +
                                         " (NCCL: GPU memory) cannot reduce; the emulated device runs data parallel "
                                         "with recode's test NCCL over MPI (test/fixtures/nccl_mpi.c)");
    if (P_.device == Device::CUDA && s.host_memory)
      throw Error("ERR_UNSUPPORTED", s.library +
                                         " is recode's test NCCL, which reduces host memory: device 'cuda' needs "
                                         "NCCL itself (libnccl.so.2)");
    if (P_.device != Device::CUDA && P_.device != Device::Emulated)
      throw Error("ERR_UNSUPPORTED", std::string("an NCCL communicator on device '") + device_name(P_.device) + "'");
    comm_.reset();
    comm_ = std::make_unique<nccl::Comm>(unique_id, rank, size);
  }

  // Every trainable gradient buffer summed in place, one grouped ncclAllReduce each, on the stream the kernels
  // use (the default one): clipping and AdamW then see the same sum on every rank, so every rank keeps the same
  // weights. `sum` (the host MPI path of the CPU trainer) is not used.
  void reduce_gradients(const std::function<void(float*, int64_t)>& sum) override {
    (void)sum;
    std::lock_guard<std::mutex> lk(*P_.mu);
    reduce_locked();
  }

  // ZeRO-1: the AdamW moments sharded by whole tensors, rank r owning those whose first value falls in its 1/N of the
  // trainable values. apply_adamw all-reduces the gradients itself (do not also call reduce_gradients: every rank
  // then computes the same global norm, in the same order as without sharding); each rank updates its own tensors and
  // broadcasts them, so the weights are the bits of the unsharded update, with about 1/N of the moment memory per rank
  // (whole tensors: the embedding's owner holds more).
  void set_zero1(bool on) override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    if (on == zero_) return;
    if (!comm_) throw Error("ERR_DIST", "ZeRO-1 on the CUDA trainer shards over its NCCL communicator: join one first");
    if (!on) {
      gather_locked();  // whole moments on every rank again (a collective)
      zero_ = false;
      return;
    }
    const size_t N = (size_t)comm_->size();
    size_t total = 0, at = 0;
    for (int i : train_) total += params_[i].n;
    owner_.assign(train_.size(), 0);
    for (size_t k = 0; k < train_.size(); ++k) {
      owner_[k] = (int)std::min(N - 1, at * N / std::max<size_t>(1, total));
      at += params_[train_[k]].n;
    }
    zero_ = true;
    release_locked();
  }
  void gather_moments() override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    gather_locked();
  }
  void release_moments() override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    release_locked();
  }

  void set_adapters_enabled(bool enabled) override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    if (adapters_.empty() || enabled == adapters_enabled_) return;
    pending_ = false;
    adapters_enabled_ = enabled;  // generation's hook reads it
  }

  size_t adapted_modules() const override { return adapters_.size(); }

  // Recomputation keeps each layer's input only and redoes one layer's forward before its backward: the same
  // gradients, bit for bit, for one layer's activations instead of all of them.
  void set_activation_recomputation(bool on) override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    if (on == recompute_) return;
    recompute_ = on;
    pending_ = false;  // its activations are laid out for the other mode
    cap_ = 0;          // the workspace is laid out again on the next forward
  }

  std::string merged_weight(size_t i, std::vector<float>& out, std::vector<int64_t>& shape) override {
    std::lock_guard<std::mutex> lk(*P_.mu);
    if (i >= adapters_.size()) throw Error("ERR_INVALID_ARG", "merged weight: module index out of range");
    Adapter& ad = adapters_[i];
    MemScope scope(MemCategory::Scratch);
    Buf merged = f32((size_t)ad.N * ad.K);
    low_rank_product(ad);
    CALL(adapter_merge, ad.N, ad.K, params_[ad.w].storage, ba_.as<float>(), scaling(),
         ad.m >= 0 ? params_[ad.m].master : nullptr, merged.as(), dt_, RECODE_F32, nullptr);
    out.resize((size_t)ad.N * ad.K);
    CALL(copy_to_host, out.data(), merged.as(), out.size() * sizeof(float));
    shape = {ad.N, ad.K};
    return "model.layers." + std::to_string(ad.layer) + "." + projection_parent(ad.proj) + "." + kProjections[ad.proj] +
           ".weight";
  }

 private:
  // ---- helpers -------------------------------------------------------------------------------------------
  // The weights the kernels read: the fp32 masters when computing in fp32, the backend's bf16 arrays in bf16.
  const void* W(int i) const { return dt_ == RECODE_F32 ? (const void*)params_[i].master : params_[i].storage; }
  float* G(int i) const { return params_[i].grad.as<float>(); }
  const float* bias(int i) const { return i < 0 ? nullptr : params_[i].master; }  // biases are fp32
  float* gbias(int i) const { return i < 0 ? nullptr : G(i); }
  // Element `e` of a compute-dtype buffer.
  void* at(const Buf& b, size_t e) const { return b.as<char>() + e * es_; }
  Buf act(size_t elems) { return Buf(&kern_, elems * es_); }
  Buf f32(size_t elems) { return Buf(&kern_, elems * sizeof(float)); }

  void clear_grads() {
    for (int i : train_) CALL(device_memset, params_[i].grad.as(), 0, params_[i].n * sizeof(float), nullptr);
    grads_zero_ = true;
  }

  void reduce_locked() {
    if (!comm_)
      throw Error(
          "ERR_DIST",
          "the CUDA trainer sums gradients over ranks through NCCL: join a communicator first (trainerInitNccl)");
    std::vector<std::pair<float*, size_t>> bufs;
    for (int i : train_) bufs.emplace_back(G(i), params_[i].n);
    comm_->allreduce_sum_f32(bufs, nullptr);
    grads_zero_ = false;
  }

  // ---- ZeRO-1 (set_zero1) ------------------------------------------------------------------------------------
  bool owns(size_t k) const { return !zero_ || owner_[k] == comm_->rank(); }
  // Every rank receives each tensor its owner updated: the fp32 master, and the bf16 copy the kernels read.
  void share_updated() {
    std::vector<nccl::Comm::Broadcast> b;
    for (size_t k = 0; k < train_.size(); ++k) {
      Param& p = params_[train_[k]];
      b.push_back({p.master, p.n * sizeof(float), owner_[k]});
      if (p.storage_dtype == RECODE_BF16) b.push_back({p.storage, p.n * sizeof(bf16), owner_[k]});
    }
    comm_->broadcast(b, nullptr);
  }
  // Moments of the other ranks' tensors, from their owners (a collective), until release_locked.
  void gather_locked() {
    if (!zero_) return;
    MemScope optimizer(MemCategory::Optimizer);
    std::vector<nccl::Comm::Broadcast> b;
    for (size_t k = 0; k < train_.size(); ++k) {
      Param& p = params_[train_[k]];
      if (!p.exp_avg.as()) {
        p.exp_avg = Buf(&kern_, p.n * sizeof(float));
        p.exp_avg_sq = Buf(&kern_, p.n * sizeof(float));
      }
      b.push_back({p.exp_avg.as(), p.n * sizeof(float), owner_[k]});
      b.push_back({p.exp_avg_sq.as(), p.n * sizeof(float), owner_[k]});
    }
    comm_->broadcast(b, nullptr);
  }
  void release_locked() {
    if (!zero_) return;
    for (size_t k = 0; k < train_.size(); ++k)
      if (!owns(k)) {
        params_[train_[k]].exp_avg = Buf();
        params_[train_[k]].exp_avg_sq = Buf();
      }
  }

  // ---- the decoder layer's view of layer l ---------------------------------------------------------------
  const cuda_layer::Acts& layer_acts(int l) const { return acts_[recompute_ ? 0 : l].view; }
  // Its weights as the kernels read them, and (g) where its gradients go.
  cuda_layer::Weights layer_params(int l, cuda_layer::Grads* g = nullptr) const {
    const LayerIdx& x = layers_[l];
    cuda_layer::Weights w;
    cuda_layer::Grads unused;
    if (!g) g = &unused;
    auto norm = [&](int i, const void*& wp, float*& gp) {
      if (i < 0) return;  // absent (q/k norms of a model without them)
      wp = W(i);
      gp = G(i);
    };
    norm(x.input_norm, w.input_norm, g->input_norm);
    norm(x.post_attention_norm, w.post_attention_norm, g->post_attention_norm);
    norm(x.q_norm, w.q_norm, g->q_norm);
    norm(x.k_norm, w.k_norm, g->k_norm);
    for (int p = 0; p < cuda_layer::kProjectionCount; ++p) {
      w.proj[p] = {W(x.w[p]), bias(x.b[p]), dims_.out_of(p), dims_.in_of(p)};
      g->w[p] = G(x.w[p]);
      g->b[p] = gbias(x.b[p]);
    }
    w.inv_freq = P_.inv_freq;
    return w;
  }
  // The pending forward's hooks for layer l: causal attention; adapted projections where adapters are on.
  cuda_layer::Hooks layer_hooks(int l) {
    cuda_layer::Hooks h;
    h.attention = [this](const cuda_layer::Acts& a) { cuda_layer::causal_attention(kern_, dims_, a, batches_); };
    if (!fwd_adapters_) return h;
    h.project = [this, l](int p, const cuda_layer::Linear& L, const void* x, void* y, int M) {
      Adapter* ad = adapter_on(l, p);
      if (ad) adapted_forward(*ad, L, x, y, M);
      return ad != nullptr;
    };
    h.project_backward = [this, l](int p, const cuda_layer::Linear& L, const void* dy, const void* x, void* dx,
                                   int accumulate, int M) {
      Adapter* ad = adapter_on(l, p);
      if (ad) adapted_backward(*ad, L, dy, x, dx, accumulate, M);
      return ad != nullptr;
    };
    return h;
  }

  // ---- adapters ------------------------------------------------------------------------------------------
  float scaling() const { return (float)(spec_.alpha / spec_.rank); }
  const void* lora_a(const Adapter& ad) const {
    return dt_ == RECODE_F32 ? (const void*)params_[ad.a].master : ad.a_c.as();
  }
  const void* lora_b(const Adapter& ad) const {
    return dt_ == RECODE_F32 ? (const void*)params_[ad.b].master : ad.b_c.as();
  }

  // PEFT's initialisation, bit for bit the CPU trainer's (train_step.cpp init_adapters): A from Philox keyed by
  // the seed (one stream per module, computed on the host), B = 0, DoRA m = ||W|| per row (host, in order).
  void init_adapters() {
    const ModelConfig& cfg = backend_->config();
    const bool dora = spec_.kind == AdapterSpec::Kind::DoRA;
    const int r = spec_.rank;
    adapter_at_.assign(cfg.layers, std::vector<int>(cuda_layer::kProjectionCount, -1));
    for (int l = 0; l < cfg.layers; ++l) {
      for (int proj = 0; proj < cuda_layer::kProjectionCount; ++proj) {
        if (std::find(spec_.targets.begin(), spec_.targets.end(), kProjections[proj]) == spec_.targets.end()) continue;
        Adapter ad;
        ad.layer = l;
        ad.proj = proj;
        ad.N = dims_.out_of(proj);
        ad.K = dims_.in_of(proj);
        ad.w = layers_[l].w[proj];
        adapter_at_[l][proj] = (int)adapters_.size();
        adapters_.push_back(std::move(ad));
      }
    }
    if (adapters_.empty()) throw Error("ERR_INVALID_ARG", "adapter target modules match no projection of this model");
    MemScope scope(MemCategory::Trainable);
    // the counting device (`recode plan`) allocates as here but computes nothing: no initial values to draw
    const bool counting = P_.device == Device::Counting;
    auto add = [&](const std::string& name, std::vector<int64_t> shape, const std::vector<float>& init) {
      Param p;
      p.n = init.size();
      p.storage_dtype = RECODE_F32;
      p.master_own = Buf(&kern_, p.n * sizeof(float));
      p.master = p.master_own.as<float>();
      CALL(copy_to_device, p.master, init.data(), p.n * sizeof(float));
      add_trainable(std::move(p), name, std::move(shape), true);  // HF Trainer decays all but biases and norms
      train_.push_back((int)params_.size() - 1);
      return (int)params_.size() - 1;
    };
    for (size_t i = 0; i < adapters_.size(); ++i) {
      Adapter& ad = adapters_[i];
      const std::string module = "base_model.model.model.layers." + std::to_string(ad.layer) + "." +
                                 projection_parent(ad.proj) + "." + kProjections[ad.proj];
      std::vector<float> a((size_t)r * ad.K);
      const double bound = 1.0 / std::sqrt((double)ad.K);
      for (int64_t j = 0; j < (int64_t)a.size() && !counting; ++j)
        a[j] = philox::lora_a_init(spec_.seed, (uint32_t)i, (uint64_t)j, bound);
      ad.a = add(module + ".lora_A.weight", {r, ad.K}, a);
      ad.b = add(module + ".lora_B.weight", {ad.N, r}, std::vector<float>((size_t)ad.N * r, 0.0f));
      if (dora) {
        // m = ||W|| per row, summed in double in order like the CPU trainer's norm (B = 0: W + s B A = W)
        std::vector<float> w(counting ? 0 : (size_t)ad.N * ad.K);
        if (counting) {
        } else if (dt_ == RECODE_F32) {
          CALL(copy_to_host, w.data(), params_[ad.w].storage, w.size() * sizeof(float));
        } else {
          std::vector<bf16> wb(w.size());
          CALL(copy_to_host, wb.data(), params_[ad.w].storage, wb.size() * sizeof(bf16));
          for (size_t j = 0; j < w.size(); ++j) w[j] = bf16_to_float(wb[j]);
        }
        std::vector<float> m(ad.N);
        for (int o = 0; o < ad.N && !counting; ++o) {
          double sq = 0;
          for (int j = 0; j < ad.K; ++j) sq += (double)w[(size_t)o * ad.K + j] * w[(size_t)o * ad.K + j];
          m[o] = (float)std::sqrt(sq);
        }
        ad.m = add(module + ".lora_magnitude_vector", {ad.N}, m);
        ad.norm = f32(ad.N);
      }
      if (dt_ == RECODE_BF16) {
        ad.a_c = act((size_t)r * ad.K);
        ad.b_c = act((size_t)ad.N * r);
      }
    }
    refresh_adapters();
    // generation runs the adapters through the backend's projection hook while this trainer lives
    *P_.generation_project = [this](int l, int p, const cuda_layer::Linear& L, const void* x, void* y, int M) {
      const int i = adapters_enabled_ ? adapter_at_[l][p] : -1;
      if (i >= 0) generation_forward(adapters_[i], L, x, y, M);
      return i >= 0;
    };
  }

  // ba_ = B A (fp32 [N, K]) of one adapter: dA[M=N, K] = dC[N, r] . B[r, K] with dC = lora_B, B = lora_A.
  void low_rank_product(const Adapter& ad) {
    const size_t need = (size_t)ad.N * ad.K * sizeof(float);
    MemScope scope(MemCategory::Scratch);
    if (ba_.bytes() < need) ba_ = Buf(&kern_, need);
    CALL(gemm_backward_input, ad.N, spec_.rank, ad.K, params_[ad.b].master, params_[ad.a].master, ba_.as(), RECODE_F32,
         RECODE_F32, 0, nullptr);
  }

  // After A, B or m changed: the bf16 copies and DoRA's row norms (what training and generation read).
  void refresh_adapters() {
    for (Adapter& ad : adapters_) {
      if (dt_ == RECODE_BF16) {
        CALL(cast_f32_to_bf16, params_[ad.a].n, params_[ad.a].master, ad.a_c.as(), nullptr);
        CALL(cast_f32_to_bf16, params_[ad.b].n, params_[ad.b].master, ad.b_c.as(), nullptr);
      }
      if (ad.m < 0) continue;
      low_rank_product(ad);  // B A, for the norms
      CALL(dora_weight_norm, ad.N, ad.K, params_[ad.w].storage, ba_.as<float>(), scaling(), ad.norm.as<float>(), dt_,
           nullptr);
    }
  }

  // Generation's adapted projection (adapters on, no dropout): y = x W^T + s (x A^T) B^T, DoRA rescaled per row
  // by m / ||W + s B A||, + bias: the training forward's arithmetic on the base the backend holds.
  void generation_forward(const Adapter& ad, const cuda_layer::Linear& L, const void* x, void* y, int M) {
    const int r = spec_.rank, N = L.N, K = L.K;
    const bool dora = ad.m >= 0;
    if (gen_rows_ < M) {  // grown with generation's largest step, like the backend's own buffers
      MemScope scope(MemCategory::Generation);
      size_t maxN = 0;
      for (const Adapter& a : adapters_) maxN = std::max(maxN, (size_t)a.N);
      gen_u_ = act((size_t)M * r);
      gen_lora_ = act((size_t)M * maxN);
      gen_rows_ = M;
    }
    CALL(gemm_forward, M, r, K, x, lora_a(ad), nullptr, gen_u_.as(), dt_, dt_, 0, nullptr);
    CALL(gemm_forward, M, N, r, gen_u_.as(), lora_b(ad), nullptr, gen_lora_.as(), dt_, dt_, 0, nullptr);
    CALL(gemm_forward, M, N, K, x, L.w, nullptr, y, dt_, dt_, 0, nullptr);
    CALL(adapter_forward_combine, M, N, y, nullptr, gen_lora_.as(), dora ? params_[ad.m].master : nullptr,
         dora ? ad.norm.as<float>() : nullptr, scaling(), L.b, y, nullptr, dt_, nullptr);
  }

  // Dropout masks are a function of (seed, updates taken, forward within the update, module): the CPU
  // trainer's set_dropout_stream, so both draw the same masks.
  void set_dropout_stream(int forward_index) {
    const uint64_t key = adapter_dropout_key(spec_.seed, adam_step_);
    for (size_t i = 0; i < adapters_.size(); ++i) {
      adapters_[i].seed = key;
      adapters_[i].offset = adapter_dropout_offset(forward_index, adapters_.size(), i);
    }
  }

  // The adapter on projection `proj` of layer l in the pending forward, or null.
  Adapter* adapter_on(int l, int proj) {
    if (!fwd_adapters_) return nullptr;
    const int i = adapter_at_[l][proj];
    return i < 0 ? nullptr : &adapters_[i];
  }

  // y[M, N] = x W^T + b through adapter ad on the frozen projection L (src/ops/adapter_linear.cpp's forward).
  void adapted_forward(Adapter& ad, const cuda_layer::Linear& L, const void* x, void* y, int M) {
    const int r = spec_.rank, N = L.N, K = L.K;
    const float p = (float)spec_.dropout;
    const bool dora = ad.m >= 0, drop = p > 0.0f;
    const void* xd = x;
    if (drop) {
      CALL(adapter_dropout, (size_t)M * K, x, ad_xd_.as(), ad.seed, ad.offset, p, dt_, nullptr);
      xd = ad_xd_.as();
    }
    CALL(gemm_forward, M, r, K, xd, lora_a(ad), nullptr, ad.u, dt_, dt_, 0, nullptr);             // u = drop(x) A^T
    CALL(gemm_forward, M, N, r, ad.u, lora_b(ad), nullptr, ad_lora_.as(), dt_, dt_, 0, nullptr);  // u B^T
    CALL(gemm_forward, M, N, K, x, L.w, nullptr, y, dt_, dt_, 0, nullptr);                        // x W^T
    const void* base_drop = nullptr;
    if (dora && drop) {
      CALL(gemm_forward, M, N, K, xd, L.w, nullptr, ad_base_drop_.as(), dt_, dt_, 0, nullptr);  // drop(x) W^T
      base_drop = ad_base_drop_.as();
    }
    CALL(adapter_forward_combine, M, N, y, base_drop, ad_lora_.as(), dora ? params_[ad.m].master : nullptr,
         dora ? ad.norm.as<float>() : nullptr, scaling(), L.b, y, dora ? ad.pre : nullptr, dt_, nullptr);
  }

  // The backward of adapted_forward(): dx (+)= d x; the adapter's gradients added into dA, dB (, dm).
  void adapted_backward(Adapter& ad, const cuda_layer::Linear& L, const void* dy, const void* x, void* dx,
                        int accumulate, int M) {
    const int r = spec_.rank, N = L.N, K = L.K;
    const float p = (float)spec_.dropout;
    const bool dora = ad.m >= 0, drop = p > 0.0f;
    const float* m = dora ? params_[ad.m].master : nullptr;
    const float* norm = dora ? ad.norm.as<float>() : nullptr;
    // the frozen base: dx (+)= dy W
    CALL(gemm_backward_input, M, N, K, dy, L.w, dx, dt_, dt_, accumulate, nullptr);
    // dm += sum_t dy pre / n;  gs = s c dy;  e = (c - 1) dy
    if (dora) CALL(dora_magnitude_grad, M, N, dy, ad.pre, norm, G(ad.m), dt_, nullptr);
    CALL(adapter_grad_scale, M, N, dy, m, norm, scaling(), ad_gs_.as(), dora ? ad_e_.as() : nullptr, dt_, nullptr);
    // dB += gs^T u;  du = gs B
    CALL(gemm_backward_weight, M, N, r, ad_gs_.as(), ad.u, G(ad.b), nullptr, dt_, RECODE_F32, 1, nullptr);
    CALL(gemm_backward_input, M, N, r, ad_gs_.as(), lora_b(ad), ad_du_.as(), dt_, dt_, 0, nullptr);
    // dA += du^T drop(x) (the mask drawn again from the same stream)
    const void* xd = x;
    if (drop) {
      CALL(adapter_dropout, (size_t)M * K, x, ad_xd_.as(), ad.seed, ad.offset, p, dt_, nullptr);
      xd = ad_xd_.as();
    }
    CALL(gemm_backward_weight, M, r, K, ad_du_.as(), xd, G(ad.a), nullptr, dt_, RECODE_F32, 1, nullptr);
    // dx += mask / (1 - p) ((c - 1) dy W + du A)
    if (dora) CALL(gemm_backward_input, M, N, K, ad_e_.as(), L.w, ad_dx_.as(), dt_, dt_, 0, nullptr);
    CALL(gemm_backward_input, M, r, K, ad_du_.as(), lora_a(ad), ad_dx_.as(), dt_, dt_, dora ? 1 : 0, nullptr);
    CALL(adapter_dropout_add, (size_t)M * K, dx, ad_dx_.as(), ad.seed, ad.offset, drop ? p : 0.0f, dt_, nullptr);
  }

  // Adapter scratch for T tokens: per adapter u (and DoRA's pre), shared buffers sized for the widest projection.
  void ensure_adapter_workspace(int T) {
    MemScope acts(MemCategory::Activations);
    size_t maxN = 0, maxK = 0;
    adapter_acts_.clear();
    std::vector<void*> shared_u(cuda_layer::kProjectionCount, nullptr);
    std::vector<float*> shared_pre(cuda_layer::kProjectionCount, nullptr);
    for (Adapter& ad : adapters_) {
      if (!recompute_ || !shared_u[ad.proj]) {
        adapter_acts_.push_back(act((size_t)T * spec_.rank));
        shared_u[ad.proj] = adapter_acts_.back().as();
        if (ad.m >= 0) {
          adapter_acts_.push_back(f32((size_t)T * ad.N));
          shared_pre[ad.proj] = adapter_acts_.back().as<float>();
        }
      }
      ad.u = shared_u[ad.proj];
      ad.pre = shared_pre[ad.proj];
      maxN = std::max(maxN, (size_t)ad.N);
      maxK = std::max(maxK, (size_t)ad.K);
    }
    const size_t t = T;
    MemScope scratch(MemCategory::Scratch);
    ad_xd_ = act(t * maxK);
    ad_dx_ = act(t * maxK);
    ad_lora_ = act(t * maxN);
    ad_base_drop_ = act(t * maxN);
    ad_gs_ = act(t * maxN);
    ad_e_ = act(t * maxN);
    ad_du_ = act(t * spec_.rank);
  }

  // Frees the workspace while generation runs (unless a forward's activations await their backward); the next
  // training forward lays it out again.
  void release_workspace() {
    ba_ = Buf();
    if (pending_ || cap_ == 0) return;
    cap_ = 0;
    for (Buf* b :
         {&ids_, &normed_, &rstd_final_,   &hid_,   &lp_,    &ent_,     &lse_,          &dlogp_, &dhid_, &tmp_,
          &dx_,  &dh_,     &norm_scratch_, &ad_xd_, &ad_dx_, &ad_lora_, &ad_base_drop_, &ad_gs_, &ad_e_, &ad_du_})
      *b = Buf();
    xs_.clear();
    acts_.clear();
    adapter_acts_.clear();
    scratch_ = Bufs<cuda_layer::Scratch>();
  }

  // Buffers for a batch of T tokens (grown, never shrunk while training; freed while generation runs).
  void ensure_workspace(int T) {
    if (T <= cap_) return;
    const ModelConfig& cfg = backend_->config();
    const size_t t = (size_t)T, C = cfg.hidden, H = cfg.heads, Hkv = cfg.kv_heads, D = cfg.head_dim,
                 F = cfg.intermediate, qd = H * D, kd = Hkv * D;
    cap_ = 0;  // an allocation failure below leaves no half-sized workspace marked usable
    MemScope acts_scope(MemCategory::Activations);
    ids_ = Buf(&kern_, 3 * t * sizeof(int32_t));
    xs_.clear();
    for (int l = 0; l <= cfg.layers; ++l) xs_.push_back(act(t * C));
    acts_.clear();
    acts_.resize(recompute_ ? 1 : cfg.layers);  // recomputing: one set, each layer's forward redone before its backward
    tmp_ = act(t * C);
    for (Bufs<cuda_layer::Acts>& b : acts_) {
      cuda_layer::Acts& a = b.view;
      a.h1 = b.keep(act(t * C));
      a.rstd1 = b.keep<float>(f32(t));
      if (cfg.qk_norm) {
        a.q_pre = b.keep(act(t * qd));
        a.k_pre = b.keep(act(t * kd));
        a.q_rstd = b.keep<float>(f32(t * H));
        a.k_rstd = b.keep<float>(f32(t * Hkv));
      }
      a.q = b.keep(act(t * qd));
      a.k = b.keep(act(t * kd));
      a.v = b.keep(act(t * kd));
      a.att = b.keep(act(t * qd));
      a.lse = b.keep<float>(f32(t * H));
      a.x_mid = b.keep(act(t * C));
      a.h2 = b.keep(act(t * C));
      a.rstd2 = b.keep<float>(f32(t));
      a.gate = b.keep(act(t * F));
      a.up = b.keep(act(t * F));
      a.act = b.keep(act(t * F));
      a.tmp = tmp_.as();
    }
    normed_ = act(t * C);
    rstd_final_ = f32(t);
    hid_ = act(t * C);
    lp_ = f32(t);
    ent_ = f32(t);
    lse_ = f32(t);
    dlogp_ = f32(t);
    MemScope scratch_scope(MemCategory::Scratch);
    dhid_ = f32(t * C);
    dx_ = act(t * C);
    dh_ = act(t * C);
    norm_scratch_ = f32((size_t)RECODE_REDUCE_PARTS * std::max(C, D));
    scratch_ = {};
    cuda_layer::Scratch& s = scratch_.view;
    s.dh = dh_.as();
    s.d_act = scratch_.keep(act(t * F));
    s.d_gate = scratch_.keep(act(t * F));
    s.d_up = scratch_.keep(act(t * F));
    s.d_att = scratch_.keep(act(t * qd));
    s.dq = scratch_.keep(act(t * qd));
    s.dk = scratch_.keep(act(t * kd));
    s.dv = scratch_.keep(act(t * kd));
    s.dq_pre = scratch_.keep(act(t * qd));
    s.dk_pre = scratch_.keep(act(t * kd));
    s.att = scratch_.keep<float>(f32(t * H));
    s.norm = norm_scratch_.as<float>();
    if (!adapters_.empty()) ensure_adapter_workspace(T);
    cap_ = T;
  }

  // ---- forward -------------------------------------------------------------------------------------------
  void forward_locked(const std::vector<int>& counts, const int32_t* tokens, float* logp, const CancelFlag& cancel) {
    pending_ = false;
    const ModelConfig& cfg = backend_->config();
    const int C = cfg.hidden, V = cfg.vocab;
    int T = 0;
    for (size_t s = 0; s < counts.size(); ++s) {
      if (counts[s] <= 0) throw Error("ERR_INVALID_ARG", "train step: sequence " + std::to_string(s) + " is empty");
      T += counts[s];
    }
    if (T == 0) throw Error("ERR_INVALID_ARG", "train step: the batch holds no sequence");
    for (int i = 0; i < T; ++i)
      if (tokens[i] < 0 || tokens[i] >= V)
        throw Error("ERR_INVALID_ARG", "train step: token id " + std::to_string(tokens[i]) + " at index " +
                                           std::to_string(i) + " outside the vocabulary [0, " + std::to_string(V) +
                                           ")");
    P_.release_generation();  // the backend's step buffers, and generation's adapter scratch, make room
    gen_u_ = Buf();
    gen_lora_ = Buf();
    gen_rows_ = 0;
    ensure_workspace(T);
    fwd_adapters_ = !adapters_.empty() && adapters_enabled_;
    fwd_index_ = forwards_in_step_;
    if (fwd_adapters_) {
      set_dropout_stream(fwd_index_);
      ++forwards_in_step_;
    }
    counts_ = counts;
    batches_ = cuda_layer::causal_batches(counts);
    t0_.assign(counts.size(), 0);
    row_of_.clear();
    // ids: tokens [T] | positions [T] | targets [R] (row r predicts token row_of[r] from the row before it)
    std::vector<int32_t> ids((size_t)3 * T, 0);
    for (size_t s = 0, t0 = 0; s < counts.size(); t0 += counts[s], ++s) {
      t0_[s] = (int)t0;
      for (int j = 0; j < counts[s]; ++j) {
        ids[t0 + j] = tokens[t0 + j];
        ids[(size_t)T + t0 + j] = j;
        if (j > 0) row_of_.push_back((int)t0 + j);
      }
    }
    const int R = (int)row_of_.size();
    for (int r = 0; r < R; ++r) ids[(size_t)2 * T + r] = tokens[row_of_[r]];
    if (G(embed_)) {  // the embedding rows the backward's scatter touches (see backward_locked)
      fwd_rows_.assign(tokens, tokens + T);
      std::sort(fwd_rows_.begin(), fwd_rows_.end());
      fwd_rows_.erase(std::unique(fwd_rows_.begin(), fwd_rows_.end()), fwd_rows_.end());
    }
    CALL(copy_to_device, ids_.as(), ids.data(), ids.size() * sizeof(int32_t));
    const int32_t* d_tokens = ids_.as<int32_t>();
    const int32_t* d_pos = d_tokens + T;
    const int32_t* d_targets = d_tokens + 2 * T;

    CALL(embedding_forward, T, C, V, d_tokens, W(embed_), xs_[0].as(), dt_, nullptr);
    for (int l = 0; l < cfg.layers; ++l) {
      cancel.throw_if_requested();
      cuda_layer::forward(kern_, dims_, layer_params(l), T, d_pos, xs_[l].as(), xs_[l + 1].as(), layer_acts(l),
                          layer_hooks(l));
    }
    const void* x_final = xs_[cfg.layers].as();
    CALL(rmsnorm_forward, T, C, x_final, W(final_norm_), dims_.eps, normed_.as(), rstd_final_.as<float>(), dt_,
         nullptr);

    // the rows that predict a token (all but each sequence's last), gathered for the log-prob head
    for (size_t s = 0, r0 = 0; s < counts.size(); r0 += counts[s] - 1, ++s) {
      const size_t n = (size_t)(counts[s] - 1) * C;
      if (n > 0) CALL(copy_device, at(hid_, r0 * C), at(normed_, (size_t)t0_[s] * C), n * es_, nullptr);
    }
    std::fill(logp, logp + T, 0.0f);
    lp_host_.assign(R, 0.0f);
    if (R > 0) {
      CALL(logprob_hidden_forward_device, hid_.as(), W(head_), R, C, V, d_targets, 1.0f, dt_, lp_.as<float>(),
           ent_.as<float>(), lse_.as<float>());
      CALL(copy_to_host, lp_host_.data(), lp_.as(), (size_t)R * sizeof(float));  // synchronises
      for (int r = 0; r < R; ++r) logp[row_of_[r]] = lp_host_[r];
    }
    T_ = T;
    pending_ = true;
  }

  // ---- backward ------------------------------------------------------------------------------------------
  double backward_locked(const float* weights, const CancelFlag& cancel) {
    if (!pending_)
      throw Error("ERR_INVALID_ARG",
                  "train backward: no pending forward (call forward first; each forward takes one backward)");
    pending_ = false;  // consumed whatever happens
    const ModelConfig& cfg = backend_->config();
    const int C = cfg.hidden, V = cfg.vocab, T = T_, R = (int)row_of_.size();
    for (int t0 : t0_)
      if (weights[t0] != 0.0f)
        throw Error("ERR_INVALID_ARG",
                    "train step: weights[" + std::to_string(t0) +
                        "] belongs to the first token of a sequence, which has no prediction; it must be 0");
    for (int i = 0; i < T; ++i)
      if (!std::isfinite(weights[i]))
        throw Error("ERR_INVALID_ARG", "train step: weights[" + std::to_string(i) + "] is not finite");
    double loss = 0;
    std::vector<float> dlogp(R);
    for (int r = 0; r < R; ++r) {
      dlogp[r] = -weights[row_of_[r]];
      loss -= (double)weights[row_of_[r]] * lp_host_[r];
    }
    const int32_t* d_tokens = ids_.as<int32_t>();
    const int32_t* d_pos = d_tokens + T;
    const int32_t* d_targets = d_tokens + 2 * T;
    if (fwd_adapters_) set_dropout_stream(fwd_index_);
    // Gradient accumulation adds this backward's gradient to the earlier ones once per element, as the sum over
    // ranks does, so gradAccumulation n in one process and n ranks of one micro-batch each agree bit for bit. Every
    // tensor but the embedding gets one add per element already; the embedding's rows of this batch's tokens get the
    // (tied) head's and the scatter's (g + h + e, not g + (h + e)), so those rows are set aside on the host and
    // zeroed, take h and e, and get the earlier sum added back once. The first backward of an update skips this.
    const bool set_aside = G(embed_) && !grads_zero_;
    std::vector<float> earlier;
    auto each_run = [&](auto&& f) {  // runs of consecutive row ids: one copy and one memset each
      for (size_t u0 = 0, u1; u0 < fwd_rows_.size(); u0 = u1) {
        for (u1 = u0 + 1; u1 < fwd_rows_.size() && fwd_rows_[u1] == fwd_rows_[u1 - 1] + 1;) ++u1;
        f(u0, u1 - u0, G(embed_) + (size_t)fwd_rows_[u0] * C);
      }
    };
    if (set_aside) {
      earlier.resize(fwd_rows_.size() * (size_t)C);
      each_run([&](size_t u0, size_t n, float* g) {
        CALL(copy_to_host, earlier.data() + u0 * C, g, n * C * sizeof(float));
        CALL(device_memset, g, 0, n * C * sizeof(float), nullptr);
      });
    }
    try {
      // head: dhid [R, C] and dW_head (added into the embedding's gradient when tied); scattered to dnormed
      CALL(device_memset, dh_.as(), 0, (size_t)T * C * es_, nullptr);
      if (R > 0) {
        CALL(copy_to_device, dlogp_.as(), dlogp.data(), (size_t)R * sizeof(float));
        CALL(logprob_hidden_backward_device, hid_.as(), W(head_), R, C, V, d_targets, 1.0f, dt_, lse_.as<float>(),
             ent_.as<float>(), dlogp_.as<float>(), nullptr, dhid_.as<float>(), G(head_));
        for (size_t s = 0, r0 = 0; s < counts_.size(); r0 += counts_[s] - 1, ++s) {
          const size_t n = (size_t)(counts_[s] - 1) * C;
          if (n == 0) continue;
          const float* src = dhid_.as<float>() + r0 * C;
          if (dt_ == RECODE_F32)
            CALL(copy_device, at(dh_, (size_t)t0_[s] * C), src, n * sizeof(float), nullptr);
          else
            CALL(cast_f32_to_bf16, n, src, at(dh_, (size_t)t0_[s] * C), nullptr);
        }
      }
      // final norm: dx = d x_L
      CALL(rmsnorm_backward, T, C, xs_[cfg.layers].as(), W(final_norm_), rstd_final_.as<float>(), dh_.as(), dx_.as(),
           G(final_norm_), norm_scratch_.as<float>(), 0, dt_, nullptr);
      for (int l = cfg.layers - 1; l >= 0; --l) {
        cancel.throw_if_requested();
        cuda_layer::Grads g;
        const cuda_layer::Weights w = layer_params(l, &g);
        // recomputing: layer l's forward again from its kept input, into the one activation set (the kernels are
        // deterministic, so these are the activations of the forward, bit for bit, and x_out is xs_[l + 1] again)
        if (recompute_)
          cuda_layer::forward(kern_, dims_, w, T, d_pos, xs_[l].as(), xs_[l + 1].as(), layer_acts(l), layer_hooks(l));
        cuda_layer::backward(kern_, dims_, w, g, T, d_pos, xs_[l].as(), layer_acts(l), batches_, layer_hooks(l),
                             scratch_.view, dx_.as());
      }
      if (G(embed_)) CALL(embedding_backward, T, C, V, d_tokens, dx_.as(), G(embed_), dt_, nullptr);
      if (set_aside) {
        // the earlier sum back, one add per element (ids_ and dhid_ are free now: U <= T rows fit both)
        const int U = (int)fwd_rows_.size();
        CALL(copy_to_device, ids_.as(), fwd_rows_.data(), (size_t)U * sizeof(int32_t));
        CALL(copy_to_device, dhid_.as(), earlier.data(), earlier.size() * sizeof(float));
        CALL(embedding_backward, U, C, V, ids_.as<int32_t>(), dhid_.as(), G(embed_), RECODE_F32, nullptr);
      }
      char err[512] = {0};  // a kernel failure surfaces here, inside the step that caused it
      check_kernel_status(kern_.device_sync(err, sizeof err), "device_sync", err);
      grads_zero_ = false;
      return loss;
    } catch (...) {
      // an interrupted backward leaves partial sums: drop them rather than apply a half gradient
      clear_grads();
      throw;
    }
  }

  std::shared_ptr<Backend> backend_;
  CudaParams P_;
  Kernels kern_;
  int dt_ = RECODE_F32;
  size_t es_ = sizeof(float);
  cuda_layer::Dims dims_;  // the decoder layer's shapes, in the compute dtype
  // A trainable tensor: `p` (its master set up) gets zeroed gradient and AdamW moments on the device.
  void add_trainable(Param&& p, const std::string& name, std::vector<int64_t> shape, bool decay) {
    MemScope trainable(MemCategory::Trainable);
    p.grad = Buf(&kern_, p.n * sizeof(float));
    MemScope optimizer(MemCategory::Optimizer);
    p.exp_avg = Buf(&kern_, p.n * sizeof(float));
    p.exp_avg_sq = Buf(&kern_, p.n * sizeof(float));
    CALL(device_memset, p.grad.as(), 0, p.n * sizeof(float), nullptr);
    CALL(device_memset, p.exp_avg.as(), 0, p.n * sizeof(float), nullptr);
    CALL(device_memset, p.exp_avg_sq.as(), 0, p.n * sizeof(float), nullptr);
    params_.push_back(std::move(p));
    TrainTensor t;
    t.name = name;
    t.shape = std::move(shape);
    t.decay = decay;
    tensors_.push_back(std::move(t));
  }
  std::vector<Param> params_;
  std::vector<TrainTensor> tensors_;
  std::vector<std::vector<float>> host_params_;
  int embed_ = -1, final_norm_ = -1, head_ = -1;
  std::vector<LayerIdx> layers_;
  std::vector<int> train_;  // params_ index of each trainable tensor (tensors_ order)
  int64_t adam_step_ = 0;
  // adapters (empty: full fine-tuning)
  AdapterSpec spec_;
  std::vector<Adapter> adapters_;
  std::vector<std::vector<int>> adapter_at_;  // [layer][projection] -> adapters_ index or -1
  bool adapters_enabled_ = true;
  int forwards_in_step_ = 0;   // training forwards since the last update (the dropout stream's counter)
  bool fwd_adapters_ = false;  // the pending forward ran with adapters on
  int fwd_index_ = 0;          // and this dropout stream
  Buf gen_u_, gen_lora_;       // generation_forward's scratch for gen_rows_ tokens
  int gen_rows_ = 0;
  Buf ba_, ad_xd_, ad_dx_, ad_lora_, ad_base_drop_, ad_gs_, ad_e_, ad_du_;
  Buf norm_acc_, sumsq_scratch_;
  // the pending forward
  bool pending_ = false;
  int T_ = 0;
  std::vector<int> counts_, t0_, row_of_;
  std::vector<cuda_layer::CausalBatch> batches_;  // its causal attention calls
  std::vector<float> lp_host_;
  // workspace (cap_ tokens)
  int cap_ = 0;
  Buf ids_;
  std::vector<Buf> xs_;                       // the residual stream entering each layer; xs_[layers] is the final one
  std::vector<Bufs<cuda_layer::Acts>> acts_;  // one set per layer, or (recomputing) one
  std::vector<Buf> adapter_acts_;             // the adapters' u and pre
  bool recompute_ = false;
  Buf normed_, rstd_final_, hid_, lp_, ent_, lse_, dlogp_, dhid_, tmp_, dx_, dh_, norm_scratch_;
  Bufs<cuda_layer::Scratch> scratch_;  // the layer backward's
  std::unique_ptr<nccl::Comm> comm_;   // data parallelism (init_nccl), null in a world of one
  bool zero_ = false;                  // ZeRO-1 (set_zero1)
  std::vector<int> owner_;             // ZeRO-1: the rank that owns each trainable tensor's moments
  bool grads_zero_ = true;             // no backward has added into the gradients since they were zeroed
  std::vector<int32_t> fwd_rows_;      // full fine-tuning: the pending forward's distinct token ids, sorted
};

#undef CALL

}  // namespace

std::shared_ptr<Trainer> make_cuda_trainer(std::shared_ptr<Backend> backend, const AdapterSpec& spec) {
  return std::make_shared<CudaTrainer>(std::move(backend), spec);
}

}  // namespace recode::model
