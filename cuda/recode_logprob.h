/* C ABI of the token log-probability kernels (cuda/logprob.cu); declared as cuda/recode_abi.h describes. The
 * definitions are those of src/logprob/logprob.h (cuda/logprob_core.h holds the shared log-sum-exp state).
 * The first four take host pointers and copy; the *_device variants take device pointers. */
#ifndef RECODE_LOGPROB_H
#define RECODE_LOGPROB_H

#include "recode_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RECODE_LOGPROB_OPS(X)                                                                                      \
  /* logits [T, V] fp32 -> logp, entropy, lse [T] of the targets at `temperature`                                */ \
  X(logprob_logits_forward, (const float* logits, int T, int V, const int32_t* targets, float temperature,          \
                             float* logp, float* entropy, float* lse, char* err, size_t err_len))                   \
  X(logprob_logits_backward, (const float* logits, int T, int V, const int32_t* targets, float temperature,         \
                              const float* lse, const float* entropy, const float* dlogp, const float* dentropy,    \
                              float* dlogits, char* err, size_t err_len))                                          \
  /* hidden [T, H], weight [V, H]: the logits are formed chunk by chunk and never kept whole                     */ \
  X(logprob_hidden_forward, (const float* hidden, const float* weight, int T, int H, int V, const int32_t* targets, \
                             float temperature, float* logp, float* entropy, float* lse, char* err, size_t err_len)) \
  X(logprob_hidden_backward, (const float* hidden, const float* weight, int T, int H, int V,                        \
                              const int32_t* targets, float temperature, const float* lse, const float* entropy,    \
                              const float* dlogp, const float* dentropy, float* dhidden, float* dweight, char* err, \
                              size_t err_len))                                                                     \
  /* Device-resident: hidden/weight in dtype (RECODE_F32, or RECODE_BF16 with temperature 1); dhidden fp32       */ \
  /* overwritten, dweight_accumulate fp32 ADDED to (gradient accumulation; NULL for a frozen head).               */ \
  X(logprob_hidden_forward_device, (const void* hidden, const void* weight, int T, int H, int V,                    \
                                    const int32_t* targets, float temperature, int dtype, float* logp,              \
                                    float* entropy, float* lse, char* err, size_t err_len))                        \
  X(logprob_hidden_backward_device, (const void* hidden, const void* weight, int T, int H, int V,                   \
                                     const int32_t* targets, float temperature, int dtype, const float* lse,        \
                                     const float* entropy, const float* dlogp, const float* dentropy,               \
                                     float* dhidden, float* dweight_accumulate, char* err, size_t err_len))

RECODE_LOGPROB_OPS(RECODE_ABI_DECLARE)

#ifdef __cplusplus
}
#endif

#endif /* RECODE_LOGPROB_H */
