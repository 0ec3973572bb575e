// A loaded transformer (Llama / Qwen2 / Qwen3 families) behind a small backend interface: the CPU backend
// (cpu_backend.cpp, built on src/ops) implements it here; a CUDA backend implements the same interface with
// device memory and its own kernels. The interface is one call per batched step, so a backend can keep
// weights, KV cache and activations wherever it likes.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/cancel.h"
#include "ops/ops.h"

namespace recode::model {

// What config.json says, after the TypeScript side validated it (lib/model/config.ts).
struct ModelConfig {
  std::string arch;  // "qwen2" | "llama" | "qwen3"
  int vocab = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, intermediate = 0;
  double eps = 1e-6, rope_theta = 10000;
  ops::RopeScaling rope_scaling;
  bool tie_embeddings = false;
  bool qkv_bias = false, o_bias = false, mlp_bias = false, qk_norm = false;
};

// The Hugging Face tensor names of decoder layer `l`, shared by every backend. `vec(name, shape)` and
// `linear(prefix, out, in, bias)` are the backend's own loaders; Layer has the members assigned below.
template <class Layer, class Vec, class Linear>
void load_decoder_layer(Layer& L, const ModelConfig& cfg, int l, Vec&& vec, Linear&& linear) {
  const int64_t C = cfg.hidden, H = cfg.heads, Hkv = cfg.kv_heads, D = cfg.head_dim, F = cfg.intermediate;
  const std::string p = "model.layers." + std::to_string(l) + ".";
  L.input_norm = vec(p + "input_layernorm.weight", {C});
  L.post_attention_norm = vec(p + "post_attention_layernorm.weight", {C});
  L.q = linear(p + "self_attn.q_proj", H * D, C, cfg.qkv_bias);
  L.k = linear(p + "self_attn.k_proj", Hkv * D, C, cfg.qkv_bias);
  L.v = linear(p + "self_attn.v_proj", Hkv * D, C, cfg.qkv_bias);
  L.o = linear(p + "self_attn.o_proj", C, H * D, cfg.o_bias);
  if (cfg.qk_norm) {
    L.q_norm = vec(p + "self_attn.q_norm.weight", {D});
    L.k_norm = vec(p + "self_attn.k_norm.weight", {D});
  }
  L.gate = linear(p + "mlp.gate_proj", F, C, cfg.mlp_bias);
  L.up = linear(p + "mlp.up_proj", F, C, cfg.mlp_bias);
  L.down = linear(p + "mlp.down_proj", C, F, cfg.mlp_bias);
}

// The tensors of a model folder: one or several safetensors shards, memory-mapped.
class WeightStore {
 public:
  explicit WeightStore(const std::vector<std::string>& files);
  ~WeightStore();
  bool has(const std::string& name) const;
  // The tensor converted to float32, after checking its shape; with round_bf16 each value is rounded to
  // bfloat16 first (so a CPU run matches a bf16 model).
  std::vector<float> load(const std::string& name, const std::vector<int64_t>& shape, bool round_bf16) const;
  const std::vector<std::string>& files() const { return paths_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<std::string> paths_;
};

// One sequence of a batched step: `n` new tokens appended to the KV cache slot `slot`.
struct StepSeq {
  int slot = 0, n = 0;
};

// Checks one step's sequences against the KV slots (slot in range, at least one token, within the context, no
// slot twice) and every token id against the vocabulary (the embedding kernels do not), the same for every
// backend. `lengths` holds the tokens each slot already caches. Returns the step's token count.
inline int check_step(const std::vector<StepSeq>& seqs, const int32_t* tokens, const std::vector<int>& lengths,
                      int context, int vocab) {
  const int slots = (int)lengths.size();
  int T = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const StepSeq& s = seqs[i];
    if (s.slot < 0 || s.slot >= slots)
      throw Error("ERR_INVALID_ARG", "model step: slot " + std::to_string(s.slot) + " out of range");
    if (s.n <= 0) throw Error("ERR_INVALID_ARG", "model step: every sequence needs at least one token");
    if (lengths[s.slot] + s.n > context)
      throw Error("ERR_INVALID_ARG", "model step: slot " + std::to_string(s.slot) + " would hold " +
                                         std::to_string(lengths[s.slot] + s.n) + " tokens, over the context of " +
                                         std::to_string(context));
    for (size_t j = 0; j < i; ++j)
      if (s.slot == seqs[j].slot)
        throw Error("ERR_INVALID_ARG", "model step: slot " + std::to_string(s.slot) + " appears twice");
    T += s.n;
  }
  for (int i = 0; i < T; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      throw Error("ERR_INVALID_ARG", "model step: token id " + std::to_string(tokens[i]) +
                                         " outside the vocabulary [0, " + std::to_string(vocab) + ")");
  return T;
}

// Full fine-tuning access to a backend's parameters (train_step.cpp). Every parameter as a plain float32
// array (Hugging Face layout: linear weights [out, in]); `lm_head` is null when tied to `embed`. The arrays
// are the master weights: after changing them call `sync()`, which re-packs whatever the inference GEMM packs.
// Training and inference share the backend's lock `mu`.
struct TrainLayerParams {
  std::vector<float>*input_norm = nullptr, *post_attention_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr;
  std::vector<float>*q_w = nullptr, *k_w = nullptr, *v_w = nullptr, *o_w = nullptr, *gate_w = nullptr, *up_w = nullptr,
  *down_w = nullptr;
  std::vector<float>*q_b = nullptr, *k_b = nullptr, *v_b = nullptr, *o_b = nullptr, *gate_b = nullptr, *up_b = nullptr,
  *down_b = nullptr;  // empty vectors when the model has none
};
struct TrainParams {
  ops::LayerDims dims;
  const double* inv_freq = nullptr;
  std::vector<float>*embed = nullptr, *final_norm = nullptr, *lm_head = nullptr;
  std::vector<TrainLayerParams> layers;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* device() const = 0;
  // Runs the tokens (concatenated per sequence) through the model, appending them to each slot's cache, and
  // writes float32 logits: for every token ([sum n, V]) when all_logits, else for each sequence's last
  // token ([seqs, V]). Stops between layers when `cancel` is raised (the caches stay consistent: a slot's
  // length only advances when the step completes).
  virtual void forward(const std::vector<StepSeq>& seqs, const int32_t* tokens, bool all_logits, float* logits,
                       const CancelFlag& cancel) = 0;
  virtual void reset_slot(int slot) = 0;
  virtual int slot_length(int slot) const = 0;
  virtual int slots() const = 0;
  virtual int context() const = 0;
  virtual size_t weight_bytes() const = 0;
  virtual size_t kv_cache_bytes() const = 0;
  const ModelConfig& config() const { return config_; }
  // Training access (CPU backend; others return null). The first call makes float32 master copies of the
  // packed weights (exact: the packed values are the loaded ones). Caller holds train_mutex() while using them.
  virtual TrainParams* train_params() { return nullptr; }
  virtual void sync_train_params() {}
  virtual std::mutex* train_mutex() { return nullptr; }
  // Re-packs the inference weight whose master array is `master` from `values` instead, leaving the master as
  // it is (adapters: generation runs the merged weight while training keeps the frozen base). Lock held.
  virtual void repack_linear(const std::vector<float>* master, const float* values) {
    (void)master;
    (void)values;
    throw Error("ERR_UNSUPPORTED", std::string("adapter training is not supported on the '") + device() + "' backend");
  }

 protected:
  ModelConfig config_;
};

// CPU backend: weights converted to float32 (packed for the GEMM), a slotted KV cache of `slots` sequences
// x `context` positions allocated up front (its size is the bound reported to the caller).
std::unique_ptr<Backend> make_cpu_backend(const ModelConfig& cfg, const WeightStore& weights, int slots, int context,
                                          bool round_bf16);

// CUDA backend (cuda_backend.cpp): the kernels of cuda/recode_cuda.h on device memory, either on a GPU
// (librecode_cuda.so; throws ERR_CUDA_UNAVAILABLE with the reason when none is usable) or, with `emulated`,
// through the SIMT emulation on the CPU (slow; for tests without a GPU).
std::unique_ptr<Backend> make_cuda_backend(bool emulated, const ModelConfig& cfg, const WeightStore& weights, int slots,
                                           int context, bool round_bf16);

// The CUDA backend on the counting device (src/device/memory_count.h), from the shapes alone: every weight, the
// KV cache and each step's buffers allocated as on a GPU, nothing loaded or computed. `recode plan` runs on it.
std::unique_ptr<Backend> make_counting_backend(const ModelConfig& cfg, int slots, int context, bool bf16);

// The backend for a device name: "cpu", "cuda" or "emulated". Other names throw ERR_INVALID_ARG.
std::unique_ptr<Backend> make_backend(const std::string& device, const ModelConfig& cfg, const WeightStore& weights,
                                      int slots, int context, bool round_bf16);

}  // namespace recode::model
