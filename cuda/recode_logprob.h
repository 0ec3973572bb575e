/* C ABI of the token log-probability kernels (cuda/logprob.cu); declared as cuda/recode_abi.h describes. The
 * definitions are those of src/logprob/logprob.h (cuda/logprob_core.h holds the shared log-sum-exp state).
 * The first four take host pointers and copy; the *_device variants take device pointers. */
#ifndef RECODE_LOGPROB_H
#define RECODE_LOGPROB_H

#include "recode_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Columns of the vocabulary the hidden-state passes handle per chunk: about 16 MB of fp32 logits. */
static inline int recode_logprob_chunk_width(int T, int V) {
  int w = (1 << 22) / (T > 0 ? T : 1);
  w = w < 256 ? 256 : w;
  return w > V ? V : w;
}
static inline size_t recode_align256(size_t n) { return (n + 255) & ~(size_t)255; }
/* The one workspace block logprob_hidden_{forward,backward}_device take through device_alloc for T rows and
 * free before returning: the fp32 logits chunk plus the forward's four running-state rows, or the backward's
 * bf16 copy of d/dlogits (dtype 1 = RECODE_BF16). The counting device of `recode plan` charges the same. */
static inline size_t recode_logprob_workspace_bytes(int T, int V, int dtype, int backward) {
  const size_t z = (size_t)T * recode_logprob_chunk_width(T, V);
  if (backward) return recode_align256(z * 4) + (dtype == 1 ? recode_align256(z * 2) : 0);
  return recode_align256(z * 4) + 4 * recode_align256((size_t)T * 4);
}

#define RECODE_LOGPROB_OPS(X)                                                                                        \
  /* logits [T, V] fp32 -> logp, entropy, lse [T] of the targets at `temperature`                                */  \
  X(logprob_logits_forward, (const float* logits, int T, int V, const int32_t* targets, float temperature,           \
                             float* logp, float* entropy, float* lse, char* err, size_t err_len))                    \
  X(logprob_logits_backward,                                                                                         \
    (const float* logits, int T, int V, const int32_t* targets, float temperature, const float* lse,                 \
     const float* entropy, const float* dlogp, const float* dentropy, float* dlogits, char* err, size_t err_len))    \
  /* hidden [T, H], weight [V, H]: the logits are formed chunk by chunk and never kept whole                     */  \
  X(logprob_hidden_forward, (const float* hidden, const float* weight, int T, int H, int V, const int32_t* targets,  \
                             float temperature, float* logp, float* entropy, float* lse, char* err, size_t err_len)) \
  X(logprob_hidden_backward, (const float* hidden, const float* weight, int T, int H, int V, const int32_t* targets, \
                              float temperature, const float* lse, const float* entropy, const float* dlogp,         \
                              const float* dentropy, float* dhidden, float* dweight, char* err, size_t err_len))     \
  /* Device-resident: hidden/weight in dtype (RECODE_F32, or RECODE_BF16 with temperature 1); dhidden fp32       */  \
  /* overwritten, dweight_accumulate fp32 ADDED to (gradient accumulation; NULL for a frozen head).               */ \
  X(logprob_hidden_forward_device,                                                                                   \
    (const void* hidden, const void* weight, int T, int H, int V, const int32_t* targets, float temperature,         \
     int dtype, float* logp, float* entropy, float* lse, char* err, size_t err_len))                                 \
  X(logprob_hidden_backward_device,                                                                                  \
    (const void* hidden, const void* weight, int T, int H, int V, const int32_t* targets, float temperature,         \
     int dtype, const float* lse, const float* entropy, const float* dlogp, const float* dentropy, float* dhidden,   \
     float* dweight_accumulate, char* err, size_t err_len))

RECODE_LOGPROB_OPS(RECODE_ABI_DECLARE)

#ifdef __cplusplus
}
#endif

#endif /* RECODE_LOGPROB_H */
