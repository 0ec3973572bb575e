// Full fine-tuning of a loaded CPU model: one training step (forward keeping every layer's activations,
// next-token log-probabilities through the fused hidden-state log-prob, backward through the final norm,
// every decoder layer and the embedding) accumulating float32 gradients of every parameter, and an AdamW
// update (global-norm clipping, then torch.optim.AdamW) of the model's float32 master weights in place.
//
// The loss is caller-weighted: loss = -sum_t w_t * logp_t, so w_t is minus the gradient with respect to the
// target token's log-probability (SFT: w_t = 1/N on the target tokens; the RL losses supply their own).
// Tokens and weights are aligned: entry i of a sequence is token i predicted from tokens 0..i-1; entry 0 of
// each sequence has no prediction (its logp is reported as 0 and its weight must be 0).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"

namespace recode::model {

struct TrainTensor {
  std::string name;  // Hugging Face tensor name
  std::vector<int64_t> shape;
  std::vector<float>* param;  // the master weights (owned by the backend)
  std::vector<float> grad, exp_avg, exp_avg_sq;
  bool decay;  // weight decay on matrices only (not on norms and biases)
};

struct AdamWOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  double max_grad_norm = 0.0;  // <= 0 or infinite: no clipping (the norm is still computed)
};

// What a trainer trains: every parameter (full fine-tuning), or LoRA / DoRA adapters (src/train/adapters.h, PEFT's
// formulas) on the chosen projections of every decoder layer with the base frozen.
struct AdapterSpec {
  enum class Kind { None, LoRA, DoRA };
  Kind kind = Kind::None;
  int rank = 8;
  double alpha = 16;                 // scaling = alpha / rank
  double dropout = 0;                // on the adapter's input path, training forwards only
  uint64_t seed = 0;                 // A's initialisation and the dropout stream
  std::vector<std::string> targets;  // q_proj k_proj v_proj o_proj gate_proj up_proj down_proj
};

// The adapter dropout stream, the same for every trainer so they draw the same masks: a function of (seed, updates
// taken, forward within the update, module), so a forward and its backward, and a resumed run replaying the step,
// see the same mask. Philox key, and the counter base of module `module` of `modules`.
inline uint64_t adapter_dropout_key(uint64_t seed, int64_t updates_taken) {
  uint64_t key = seed + 0x9E3779B97F4A7C15ull * (uint64_t)(updates_taken + 1);
  return (key ^ (key >> 31)) * 0xBF58476D1CE4E5B9ull;
}
inline uint64_t adapter_dropout_offset(int forward_index, size_t modules, size_t module) {
  return ((uint64_t)forward_index * modules + module) << 32;
}

// The training interface every backend's trainer implements (CPU: FullTrainer below; CUDA: cuda_train_step.cpp).
class Trainer {
 public:
  virtual ~Trainer() = default;
  // One forward + backward over sequences of `counts[i]` tokens (concatenated in `tokens`), adding into the
  // gradients. Writes logp[sum counts] and returns the loss. Checks `cancel` between layers: an abort in the
  // forward leaves the gradients as they were, one in the backward zeroes them (no half gradients).
  virtual double step(const std::vector<int>& counts, const int32_t* tokens, const float* weights, float* logp,
                      const CancelFlag& cancel) = 0;
  // The same step in two calls, for losses whose weights depend on the current logp (PPO-style ratios):
  // forward() writes logp and keeps the activations (replacing any pending forward); backward() consumes
  // them with the weights and returns the loss. apply_adamw() drops a pending forward (its weights changed).
  virtual void forward(const std::vector<int>& counts, const int32_t* tokens, float* logp,
                       const CancelFlag& cancel) = 0;
  virtual double backward(const float* weights, size_t count, const CancelFlag& cancel) = 0;  // one per pending token
  // Clip, AdamW, re-pack, zero the gradients. Returns the gradient norm before clipping; a non-finite norm
  // skips the update (gradients are still zeroed).
  virtual double apply_adamw(const AdamWOptions& o) = 0;
  virtual void zero_grad() = 0;
  // Replaces master weights and/or AdamW moments (nullptr: keep) of tensor `index`, then re-packs the inference
  // weights; drops a pending forward. Used to resume from a checkpoint and to swap weights (reference policy).
  struct TensorUpdate {
    size_t index;
    const float *param, *exp_avg, *exp_avg_sq;
  };
  virtual void set_tensors(const std::vector<TensorUpdate>& updates, int64_t steps_taken /* < 0: keep */) = 0;
  // The trainable tensors with host copies of their arrays (a device trainer copies them down first).
  virtual const std::vector<TrainTensor>& tensors() = 0;
  virtual int64_t steps_taken() const = 0;
  // Adapters off: forwards (and generation) compute the frozen base model, the reference policy of the KL
  // term. Drops a pending forward. No effect on full fine-tuning.
  virtual void set_adapters_enabled(bool enabled) = 0;
  // Adapters: the number of adapted modules, and module i's merged weight [out, in] as PEFT's merge computes it
  // (LoRA W + s B A; DoRA (m / n) (W + s B A) row-wise), under its Hugging Face name (…q_proj.weight).
  // Activation recomputation: forwards keep only each layer's input, and the backward recomputes one layer's
  // activations at a time (memory of one layer instead of all, for about one more forward of compute).
  virtual void set_activation_recomputation(bool on) {
    if (on) throw Error("ERR_UNSUPPORTED", "this trainer does not implement activation recomputation");
  }
  // Data parallelism: hands every gradient, packed into one float32 buffer, to `sum` (which sums it over ranks in
  // place) and unpacks the result.
  virtual void reduce_gradients(const std::function<void(float*, int64_t)>& sum) {
    (void)sum;
    throw Error("ERR_UNSUPPORTED",
                "this trainer cannot sum gradients over ranks (multi-rank training runs on the cpu device)");
  }
  // Data parallelism: the next training forward draws dropout stream `index` of this update (a rank whose first
  // micro-batch is the update's k-th must draw what the k-th forward of one process would).
  virtual void set_forward_index(int index) {
    (void)index;
    throw Error("ERR_UNSUPPORTED",
                "this trainer cannot set its dropout stream (multi-rank training runs on the cpu device)");
  }
  // ZeRO-1 over the MPI ranks: each rank keeps the AdamW moments of its shard of the parameters (whole optimizer
  // chunks, in order); apply_adamw reduce-scatters the gradients, updates its shard and all-gathers the parameters,
  // with the same bits as every rank updating everything. Every rank must make the same calls.
  virtual void set_zero1(bool on) {
    if (on) throw Error("ERR_UNSUPPORTED", "this trainer has no ZeRO-1 (multi-rank training runs on the cpu device)");
  }
  // Data parallelism on the device (the CUDA trainer): joins an NCCL communicator of `size` ranks from rank 0's
  // 128-byte unique id (every rank calls it; it blocks until all have); reduce_gradients then sums the device
  // gradients through it with ncclAllReduce on the trainer's stream and ignores `sum`.
  virtual void init_nccl(const void* unique_id, int rank, int size) {
    (void)unique_id;
    (void)rank;
    (void)size;
    throw Error("ERR_UNSUPPORTED", "this trainer sums gradients over MPI on the host, not through NCCL");
  }
  // With ZeRO-1, tensors()' moments are empty until gathered (a collective: every rank calls it) and released.
  virtual void gather_moments() {}
  virtual void release_moments() {}
  virtual size_t adapted_modules() const { return 0; }
  virtual std::string merged_weight(size_t i, std::vector<float>& out, std::vector<int64_t>& shape) {
    (void)i;
    (void)out;
    (void)shape;
    throw Error("ERR_INVALID_ARG", "this trainer has no adapters to merge");
  }
};

// The trainer for a backend: the CPU trainer for the cpu backend, the CUDA trainer for cuda / emulated.
std::shared_ptr<Trainer> make_trainer(std::shared_ptr<Backend> backend, const AdapterSpec& spec);

// The CPU trainer: float32 master weights (the backend's own) or adapters, gradients and AdamW moments on the host.
class FullTrainer final : public Trainer {
 public:
  // Throws ERR_UNSUPPORTED for a backend without training access.
  FullTrainer(std::shared_ptr<Backend> backend, const AdapterSpec& spec);

  double step(const std::vector<int>& counts, const int32_t* tokens, const float* weights, float* logp,
              const CancelFlag& cancel) override;
  void forward(const std::vector<int>& counts, const int32_t* tokens, float* logp, const CancelFlag& cancel) override;
  double backward(const float* weights, size_t count, const CancelFlag& cancel) override;
  double apply_adamw(const AdamWOptions& o) override;
  void zero_grad() override;
  void set_tensors(const std::vector<TensorUpdate>& updates, int64_t steps_taken) override;
  const std::vector<TrainTensor>& tensors() override { return tensors_; }
  int64_t steps_taken() const override { return adam_step_; }
  void set_adapters_enabled(bool enabled) override;
  void set_activation_recomputation(bool on) override;
  size_t adapted_modules() const override { return adapters_.size(); }
  std::string merged_weight(size_t i, std::vector<float>& out, std::vector<int64_t>& shape) override;
  void reduce_gradients(const std::function<void(float*, int64_t)>& sum) override;
  void set_forward_index(int index) override;
  void set_zero1(bool on) override;
  void gather_moments() override;
  void release_moments() override;

 private:
  // What the backward needs from a forward: every layer's activations, the final residual stream and norm
  // statistics, and the log-prob rows.
  struct Pending {
    int T = 0;
    std::vector<int32_t> tokens, pos, targets;
    std::vector<ops::AttnSeq> seqs;
    std::vector<ops::LayerActs> acts;              // every layer's activations, or (recomputing) none
    std::vector<std::vector<float>> layer_inputs;  // recomputing: each layer's input
    std::vector<float> x, rstd, hid, lp, ent, lse;
    std::vector<int> row_of;  // token index predicted by each log-prob row
    bool adapters = false;    // the forward ran with adapters on
    int forward_index = 0;    // its dropout stream
  };
  std::unique_ptr<Pending> pending_;
  std::vector<ops::LayerWeights> layer_views(bool with_adapters) const;
  void forward_locked(const std::vector<int>& counts, const int32_t* tokens, float* logp, const CancelFlag& cancel);
  double backward_locked(const float* weights, const CancelFlag& cancel);
  double backward_into_grads(const float* weights, const CancelFlag& cancel);  // adds into the gradients
  void clear_grads();                                                          // with the lock held
  // One adapted projection of one decoder layer: the frozen base weight (the backend's master array) and the
  // adapter's own arrays; `view` is what the layer ops read (gradient pointers into tensors_).
  struct AdapterSlot {
    int layer = 0, proj = 0;  // proj: index into kProjections
    std::vector<float>* base = nullptr;
    int N = 0, K = 0;
    std::vector<float> a, b, magnitude, norm;
    ops::LinearAdapter view;
  };
  void init_adapters(const AdapterSpec& spec);
  void refresh_adapters(bool repack);  // DoRA norms, and the merged inference weights when repack
  void set_dropout_stream(int forward_index);
  AdapterSpec spec_;
  std::vector<std::unique_ptr<AdapterSlot>> adapters_;
  bool adapters_enabled_ = true;
  int forwards_in_step_ = 0;  // training forwards since the last update (the dropout stream's counter)
  bool recompute_ = false;
  // ZeRO-1: the optimizer chunks of the whole model, which of them are this rank's, and its shard's moments.
  struct Zero1 {
    struct Chunk {
      size_t tensor;
      int64_t begin, end;
    };
    std::vector<Chunk> chunks;
    std::vector<int64_t> elems, nchunks;  // per rank
    size_t first = 0, last = 0;           // this rank's chunks
    int64_t total = 0;
    std::vector<float> m, v, g;  // this rank's shard, its chunks one after another
  };
  std::unique_ptr<Zero1> zero_;
  double apply_adamw_zero1(const AdamWOptions& o);  // with the lock held
  bool has_grads_ = false;                          // a backward added into the gradients since they were last cleared
  std::vector<float> accum_;  // the earlier micro-batches' gradient while a later one is computed; reduce scratch
  std::shared_ptr<Backend> backend_;
  TrainParams* p_;
  std::vector<TrainTensor> tensors_;
  int64_t adam_step_ = 0;
  // gradient arrays by role, pointing into tensors_
  float *g_embed_ = nullptr, *g_final_norm_ = nullptr, *g_lm_head_ = nullptr;
  std::vector<ops::LayerGrads> g_layers_;
};

}  // namespace recode::model
