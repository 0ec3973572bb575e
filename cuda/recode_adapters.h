/* C ABI of the LoRA / DoRA kernels (cuda/adapters.cu), declared like cuda/recode_cuda.h: recode_cuda_<op> in
 * librecode_cuda.so, recode_emu_<op> (SIMT emulation) in the addon. Device pointers; `dtype` is the storage type
 * of activations (RECODE_F32 / RECODE_BF16); adapter arrays, norms, magnitudes, pre and ba are fp32.
 * Dropout: counter offset + i, key seed, keep when Philox word >= p * 2^32 (src/train/adapters.h dropout_keep). */
#ifndef RECODE_ADAPTERS_H
#define RECODE_ADAPTERS_H

#include "recode_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RECODE_ADAPTER_OPS(X)                                                                                          \
  /* out[n] = keep(offset + i) ? x[i] / (1 - p) : 0                                                          */        \
  X(adapter_dropout, (size_t n, const void* x, void* out, uint64_t seed, uint64_t offset, float p, int dtype,          \
                      void* stream, char* err, size_t err_len))                                                        \
  /* dx[n] += keep(offset + i) ? adx[i] / (1 - p) : 0  (p = 0: a plain add)                                  */        \
  X(adapter_dropout_add, (size_t n, void* dx, const void* adx, uint64_t seed, uint64_t offset, float p, int dtype,     \
                          void* stream, char* err, size_t err_len))                                                    \
  /* y[M,N] from y0 = x W^T, lora = u B^T (and DoRA: base_drop = drop(x) W^T or NULL, m, n; pre fp32 out,   */         \
  /* or NULL when no backward follows)                                                                       */        \
  X(adapter_forward_combine,                                                                                           \
    (int M, int N, const void* y0, const void* base_drop, const void* lora, const float* magnitude, const float* norm, \
     float scaling, const float* bias, void* y, float* pre, int dtype, void* stream, char* err, size_t err_len))       \
  /* gs = s c dy (c = m / n; 1 for LoRA: magnitude NULL); e = (c - 1) dy when e != NULL                      */        \
  X(adapter_grad_scale, (int M, int N, const void* dy, const float* magnitude, const float* norm, float scaling,       \
                         void* gs, void* e, int dtype, void* stream, char* err, size_t err_len))                       \
  /* dm[N] += sum_t dy[t, o] pre[t, o] / n[o]                                                                */        \
  X(dora_magnitude_grad, (int M, int N, const void* dy, const float* pre, const float* norm, float* dm, int dtype,     \
                          void* stream, char* err, size_t err_len))                                                    \
  /* norm[N] = row norms of W + s ba (W [N,K] in w_dtype, ba = B A fp32 [N,K])                               */        \
  X(dora_weight_norm, (int N, int K, const void* W, const float* ba, float scaling, float* norm, int w_dtype,          \
                       void* stream, char* err, size_t err_len))                                                       \
  /* out[N,K] = W + s ba, rescaled row-wise to m / ||W + s ba|| when magnitude != NULL (DoRA)                  */      \
  X(adapter_merge, (int N, int K, const void* W, const float* ba, float scaling, const float* magnitude, void* out,    \
                    int w_dtype, int out_dtype, void* stream, char* err, size_t err_len))

RECODE_ADAPTER_OPS(RECODE_ABI_DECLARE)

#ifdef __cplusplus
}
#endif

#endif /* RECODE_ADAPTERS_H */
