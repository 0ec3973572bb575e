// Token log-probabilities: fused log-softmax + gather of the target token, and the entropy, per position,
// with their backward passes. Two inputs:
//   - logits [T, V] (one pass per row with an online log-sum-exp over vocabulary chunks);
//   - hidden states [T, H] and the output projection W [V, H] (logits = hidden W^T / temperature, computed
//     a vocabulary chunk at a time by a GEMM and folded into the online log-sum-exp: the [T, V] logits and
//     probabilities are never materialised beyond one chunk).
// With z = logits / temperature, lse = log sum_v exp(z_v), p = exp(z - lse):
//   logp = z_target - lse,  entropy H = -sum_v p_v log p_v = lse - sum_v p_v z_v,
//   d logp / d z_v = [v == target] - p_v,  d H / d z_v = -p_v (log p_v + H),
//   d/dlogits = d/dz / temperature;  d/dhidden = dlogits W,  d/dW = dlogits^T hidden.
// Targets must lie in [0, V). CPU code in src/logprob/logprob.cpp, CUDA in cuda/logprob.cu; the *_on
// functions (logprob_device.cpp) run either on a chosen backend.
#pragma once

#include <cstdint>

namespace recode {
enum class Device;  // device/kernels.h
}

namespace recode::logprob {

// lse[T] is saved for the backward pass (with entropy).
void forward_logits(const float* logits, int T, int V, const int32_t* targets, float temperature, float* logp,
                    float* entropy, float* lse);
// dentropy may be null (no entropy term). dlogits [T, V].
void backward_logits(const float* logits, int T, int V, const int32_t* targets, float temperature, const float* lse,
                     const float* entropy, const float* dlogp, const float* dentropy, float* dlogits);

void forward_hidden(const float* hidden, const float* weight, int T, int H, int V, const int32_t* targets,
                    float temperature, float* logp, float* entropy, float* lse);
// dhidden [T, H] and dweight [V, H] are overwritten; dweight may be null (a frozen head: not computed).
void backward_hidden(const float* hidden, const float* weight, int T, int H, int V, const int32_t* targets,
                     float temperature, const float* lse, const float* entropy, const float* dlogp,
                     const float* dentropy, float* dhidden, float* dweight);

// The four passes above on `device`: the CPU code, or the CUDA kernels (on a GPU or emulated).
void forward_logits_on(Device device, const float* logits, int T, int V, const int32_t* targets, float temperature,
                       float* logp, float* entropy, float* lse);
void backward_logits_on(Device device, const float* logits, int T, int V, const int32_t* targets, float temperature,
                        const float* lse, const float* entropy, const float* dlogp, const float* dentropy,
                        float* dlogits);
void forward_hidden_on(Device device, const float* hidden, const float* weight, int T, int H, int V,
                       const int32_t* targets, float temperature, float* logp, float* entropy, float* lse);
void backward_hidden_on(Device device, const float* hidden, const float* weight, int T, int H, int V,
                        const int32_t* targets, float temperature, const float* lse, const float* entropy,
                        const float* dlogp, const float* dentropy, float* dhidden, float* dweight);

// AVX2 rows (logprob_avx2.cpp), used when the CPU has AVX2 + FMA. The forward returns false for a row with no
// finite maximum (the scalar path then handles it).
bool forward_logits_row_avx2(const float* x, int V, int target, float inv_t, float* logp, float* entropy, float* lse);
void backward_logits_row_avx2(const float* x, int V, int target, float inv_t, float lse, float entropy, float dlogp,
                              float dentropy, float* dx);

}  // namespace recode::logprob
