// Optimizer for training: AdamW with fp32 master weights and fp32 moments (decoupled weight decay and bias
// correction exactly as torch.optim.AdamW), and the global gradient norm / clipping of
// torch.nn.utils.clip_grad_norm_, each over many parameter tensors in one multi-threaded call.
#pragma once

#include <cstdint>
#include <vector>

namespace recode {

struct AdamWHyper {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t step = 1;  // 1-based index of this update (after incrementing), as torch's state['step']
};

// One parameter tensor: master weights, gradient, moments, and an optional bf16 copy of the updated weights
// (the compute weights of a bf16 model).
// The grain of adamw_step and grad_norm_sq: each tensor is cut into chunks of this many values, and the norm is the
// sum, in order, of one double partial per chunk. ZeRO-1 shards whole chunks, so it sums the same partials.
constexpr int64_t kOptimChunk = 1 << 14;

struct ParamSlot {
  float* param = nullptr;
  const float* grad = nullptr;
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  int64_t count = 0;
  bool decay = true;             // apply weight decay to this tensor (norm weights and biases usually not)
  uint16_t* bf16_out = nullptr;  // optional
};

// Plain, single-threaded AdamW on one tensor: the reference the fast path is tested against.
// grad_scale multiplies the gradient before use (clipping / accumulation averaging fused in).
void adamw_step_reference(const AdamWHyper& h, const ParamSlot& p, float grad_scale);

// AdamW over all slots, split into chunks across the thread pool. Same arithmetic as the reference.
void adamw_step(const AdamWHyper& h, const std::vector<ParamSlot>& slots, float grad_scale);

// Sum of squares of all gradients, accumulated in double in a fixed order (deterministic across thread counts).
double grad_norm_sq(const std::vector<const float*>& grads, const std::vector<int64_t>& counts);

// torch.nn.utils.clip_grad_norm_: norm = sqrt(sum of squares); coef = max_norm / (norm + 1e-6); when coef < 1
// every gradient is multiplied by coef. A non-finite norm leaves the gradients untouched (the caller skips
// the step, as verl does). Returns the norm before clipping.
double clip_grad_norm(const std::vector<float*>& grads, const std::vector<int64_t>& counts, double max_norm);

namespace optim_detail {
// The per-tensor scalars of one AdamW update (computed in double, applied as float like torch).
struct AdamWScalars {
  float decay_factor, beta1, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size;
};
// AVX2 body of the update over [begin, end) (src/train/optim_avx2.cpp); same operations in the same order as the
// scalar loop, no fused multiply-add, so results are bit-identical to the reference.
void adamw_range_avx2(const AdamWScalars& s, float* param, const float* grad, float* m, float* v, int64_t begin,
                      int64_t end, float grad_scale);
}  // namespace optim_detail

}  // namespace recode
