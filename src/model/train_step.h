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
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"

namespace recode::model {

struct TrainTensor {
  std::string name;              // Hugging Face tensor name
  std::vector<int64_t> shape;
  std::vector<float>* param;     // the master weights (owned by the backend)
  std::vector<float> grad, exp_avg, exp_avg_sq;
  bool decay;                    // weight decay on matrices only (not on norms and biases)
};

struct AdamWOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  double max_grad_norm = 0.0;  // <= 0 or infinite: no clipping (the norm is still computed)
};

class FullTrainer {
 public:
  // Throws ERR_UNSUPPORTED for a backend without training access or a model with o_proj / MLP biases.
  explicit FullTrainer(std::shared_ptr<Backend> backend);

  // One forward + backward over sequences of `counts[i]` tokens (concatenated in `tokens`), adding into the
  // gradients. Writes logp[sum counts] and returns the loss. Checks `cancel` between layers: an abort in the
  // forward leaves the gradients as they were, one in the backward zeroes them (no half gradients).
  double step(const std::vector<int>& counts, const int32_t* tokens, const float* weights, float* logp,
              const CancelFlag& cancel);
  // The same step in two calls, for losses whose weights depend on the current logp (PPO-style ratios):
  // forward() writes logp and keeps the activations (replacing any pending forward); backward() consumes
  // them with the weights and returns the loss. apply_adamw() drops a pending forward (its weights changed).
  void forward(const std::vector<int>& counts, const int32_t* tokens, float* logp, const CancelFlag& cancel);
  double backward(const float* weights, size_t count, const CancelFlag& cancel);  // count: one per pending token
  // Clip, AdamW, re-pack, zero the gradients. Returns the gradient norm before clipping; a non-finite norm
  // skips the update (gradients are still zeroed).
  double apply_adamw(const AdamWOptions& o);
  void zero_grad();
  // Replaces master weights and/or AdamW moments (nullptr: keep) of tensor `index`, then re-packs the inference
  // weights; drops a pending forward. Used to resume from a checkpoint and to swap weights (adapters, reference).
  struct TensorUpdate {
    size_t index;
    const float *param, *exp_avg, *exp_avg_sq;
  };
  void set_tensors(const std::vector<TensorUpdate>& updates, int64_t steps_taken /* < 0: keep */);

  const std::vector<TrainTensor>& tensors() const { return tensors_; }
  int64_t steps_taken() const { return adam_step_; }

 private:
  // What the backward needs from a forward: every layer's activations, the final residual stream and norm
  // statistics, and the log-prob rows.
  struct Pending {
    int T = 0;
    std::vector<int32_t> tokens, pos, targets;
    std::vector<ops::AttnSeq> seqs;
    std::vector<ops::LayerActs> acts;
    std::vector<float> x, rstd, hid, lp, ent, lse;
    std::vector<int> row_of;  // token index predicted by each log-prob row
  };
  std::unique_ptr<Pending> pending_;
  std::vector<ops::LayerWeights> layer_views() const;
  void forward_locked(const std::vector<int>& counts, const int32_t* tokens, float* logp, const CancelFlag& cancel);
  double backward_locked(const float* weights, const CancelFlag& cancel);
  void clear_grads();  // with the lock held
  std::shared_ptr<Backend> backend_;
  TrainParams* p_;
  std::vector<TrainTensor> tensors_;
  int64_t adam_step_ = 0;
  // gradient arrays by role, pointing into tensors_
  float *g_embed_ = nullptr, *g_final_norm_ = nullptr, *g_lm_head_ = nullptr;
  std::vector<ops::LayerGrads> g_layers_;
};

}  // namespace recode::model
