/* C ABI of the transformer kernels (cuda/gemm.cu, attention.cu, norm.cu, pointwise.cu).
 *
 * Plain C/C++ header: usable from the addon without nvcc. Every function exists twice (cuda/recode_abi.h):
 *   recode_cuda_<op>  in librecode_cuda.so (real GPU),
 *   recode_emu_<op>   in the addon (the same kernels run by the SIMT emulation, host memory as "device").
 * Callers reach either through the kernel table of src/device/kernels.h.
 *
 * Conventions
 *   - Tensor arguments are DEVICE pointers (for the emulation: host memory obtained from device_alloc).
 *     Models keep tensors resident; use device_alloc / copy_to_device / copy_to_host to move data.
 *   - `dtype` selects the storage type of activations and weights: RECODE_F32 or RECODE_BF16. Arithmetic is
 *     always fp32 (accumulators, softmax state); saved statistics (rstd, lse) and weight gradients are fp32.
 *   - `stream` is a cudaStream_t (NULL: the default stream). Kernels are asynchronous on a GPU; call
 *     device_sync (or copy_to_host, which synchronises) before reading results. The emulation is synchronous.
 *   - Every function returns 0 on success, or a non-zero code with a message written into err[0..err_len).
 *     Entry points check their scalar arguments (sizes, dtypes, null pointers); they cannot check the contents
 *     of device memory (e.g. token ids), which callers validate before copying.
 *   - `accumulate` (0/1): 1 adds into the output (gradients), 0 overwrites it.
 *   - All reductions are deterministic (fixed order, no floating-point atomics), so a run is reproducible.
 *   - Tensor cores (wmma, bf16 in / fp32 accumulate): GEMM with in_dtype RECODE_BF16, attention forward and
 *     backward with dtype RECODE_BF16. fp32 inputs use SIMT kernels (fp32 FMA), useful as exact references.
 *   - Requirements: compute capability 8.0+ (bf16 wmma). Attention with D = 128 in bf16 uses ~113 KB (forward)
 *     and ~121 KB (backward) of shared memory per block: fine on A100/H100, beyond the 99 KB of sm_86/sm_89,
 *     where those calls return an error instead of running.
 */
#ifndef RECODE_CUDA_H
#define RECODE_CUDA_H

#include "recode_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { RECODE_F32 = 0, RECODE_BF16 = 1 };

/* Partial sums used by the deterministic two-stage reductions: scratch buffers hold RECODE_REDUCE_PARTS
 * partials (times the row width where stated). */
#define RECODE_REDUCE_PARTS 64

/* Decode over a KV cache: how many splits of the context to use (1 = no split, no scratch needed). Aims at
 * >= ~2 blocks per SM on a 132-SM H100 while keeping each split >= 256 keys. */
static inline int recode_decode_num_splits(int batch, int kv_heads, int max_context) {
  int blocks = batch * kv_heads;
  int splits = 1;
  while (blocks * splits < 264 && max_context / (splits * 2) >= 256 && splits < 64) splits *= 2;
  return splits;
}

#define RECODE_CUDA_OPS(X)                                                                                             \
  /* ---- memory (pointwise.cu) ---------------------------------------------------------------------------- */        \
  X(device_alloc, (size_t bytes, void** out, char* err, size_t err_len))                                               \
  X(device_free, (void* ptr, char* err, size_t err_len))                                                               \
  X(copy_to_device, (void* dst, const void* src, size_t bytes, char* err, size_t err_len))                             \
  X(copy_to_host, (void* dst, const void* src, size_t bytes, char* err, size_t err_len))                               \
  X(copy_device, (void* dst, const void* src, size_t bytes, void* stream, char* err, size_t err_len))                  \
  X(device_memset, (void* ptr, int value, size_t bytes, void* stream, char* err, size_t err_len))                      \
  X(device_sync, (char* err, size_t err_len))                                                                          \
  /* Bytes held through device_alloc now and at most since the last reset (reset_peak 1 restarts the peak at   */      \
  /* the current figure; 2 at zero, so the next allocation sets it: what a phase allocates after freeing what */       \
  /* the previous one left). Every kernel's own workspace is taken through device_alloc too, so this is the   */       \
  /* library's whole footprint; `recode plan` compares it with its counting allocator.                        */       \
  X(device_memory_stats, (size_t * current, size_t * peak, int reset_peak, char* err, size_t err_len))                 \
  /* ---- GEMM (gemm.cu): A, B, dC in in_dtype; C/dA/dB in out_dtype; bias/dbias fp32 [N] ------------------ */        \
  /* C[M,N] (+)= A[M,K] . B[N,K]^T + bias                                                                    */        \
  X(gemm_forward, (int M, int N, int K, const void* A, const void* B, const float* bias, void* C, int in_dtype,        \
                   int out_dtype, int accumulate, void* stream, char* err, size_t err_len))                            \
  /* dA[M,K] (+)= dC[M,N] . B[N,K]                                                                           */        \
  X(gemm_backward_input, (int M, int N, int K, const void* dC, const void* B, void* dA, int in_dtype, int out_dtype,   \
                          int accumulate, void* stream, char* err, size_t err_len))                                    \
  /* dB[N,K] (+)= dC[M,N]^T . A[M,K];  dbias[N] += column sums of dC (when dbias != NULL)                    */        \
  X(gemm_backward_weight, (int M, int N, int K, const void* dC, const void* A, void* dB, float* dbias, int in_dtype,   \
                           int out_dtype, int accumulate, void* stream, char* err, size_t err_len))                    \
  /* ---- attention (attention.cu): q [B,T,Hq,D], k/v [B,T,Hkv,D], o like q, lse fp32 [B,Hq,T] ------------ */         \
  /* scale: softmax scale (usually 1/sqrt(D)); causal: query t sees keys <= t; D in {16,32,64,128}          */         \
  X(attention_forward, (int B, int T, int Hq, int Hkv, int D, const void* q, const void* k, const void* v, void* o,    \
                        float* lse, float scale, int causal, int dtype, void* stream, char* err, size_t err_len))      \
  /* dq/dk/dv (like q/k/v, overwritten); scratch fp32 [B,Hq,T] (holds D = rowsum(dO*O))                      */        \
  X(attention_backward, (int B, int T, int Hq, int Hkv, int D, const void* q, const void* k, const void* v,            \
                         const void* o, const float* lse, const void* dout, void* dq, void* dk, void* dv,              \
                         float* scratch, float scale, int causal, int dtype, void* stream, char* err, size_t err_len)) \
  /* KV cache layout: k_cache/v_cache [B, Hkv, capacity, D] (head-major, so decode reads contiguous rows).   */        \
  /* Writes k/v [B, T, Hkv, D] at cache positions start[b] + t (start: int32 device array [B]).               */       \
  X(kv_cache_write, (int B, int T, int Hkv, int D, int capacity, const void* k, const void* v, const int* start,       \
                     void* k_cache, void* v_cache, int dtype, void* stream, char* err, size_t err_len))                \
  /* One query per sequence: q/o [B, Hq, D]; context_lens int32 [B] (device; each in 1..capacity).           */        \
  /* num_splits >= 1 (see recode_decode_num_splits); scratch fp32 [B*Hq*num_splits*(D+2)] when num_splits>1. */        \
  X(attention_decode, (int B, int Hq, int Hkv, int D, int capacity, const void* q, const void* k_cache,                \
                       const void* v_cache, const int* context_lens, void* o, float scale, int num_splits,             \
                       float* scratch, int dtype, void* stream, char* err, size_t err_len))                            \
  /* ---- norm (norm.cu) ----------------------------------------------------------------------------------- */        \
  /* y[rows,dim] = x * rstd * weight, rstd[rows] fp32 saved (may be NULL)                                    */        \
  X(rmsnorm_forward, (int rows, int dim, const void* x, const void* weight, float eps, void* y, float* rstd,           \
                      int dtype, void* stream, char* err, size_t err_len))                                             \
  /* dx[rows,dim] (+)= ...; dweight fp32 [dim] += ... (deterministic two-stage: scratch fp32                  */       \
  /* [RECODE_REDUCE_PARTS*dim], or NULL for a single pass); dweight may be NULL                              */        \
  X(rmsnorm_backward,                                                                                                  \
    (int rows, int dim, const void* x, const void* weight, const float* rstd, const void* dy, void* dx,                \
     float* dweight, float* scratch, int accumulate, int dtype, void* stream, char* err, size_t err_len))              \
  /* x/y [tokens, heads, D] (y may equal x); positions int32 [tokens]; inv_freq fp32 [D/2]; rotate-half       */       \
  X(rope_forward, (int tokens, int heads, int D, const void* x, void* y, const int* positions, const float* inv_freq,  \
                   int dtype, void* stream, char* err, size_t err_len))                                                \
  X(rope_backward, (int tokens, int heads, int D, const void* dy, void* dx, const int* positions,                      \
                    const float* inv_freq, int dtype, void* stream, char* err, size_t err_len))                        \
  /* ---- pointwise (pointwise.cu) -------------------------------------------------------------------------- */       \
  /* out[n] = silu(gate) * up                                                                                */        \
  X(swiglu_forward,                                                                                                    \
    (size_t n, const void* gate, const void* up, void* out, int dtype, void* stream, char* err, size_t err_len))       \
  X(swiglu_backward, (size_t n, const void* gate, const void* up, const void* dout, void* dgate, void* dup, int dtype, \
                      void* stream, char* err, size_t err_len))                                                        \
  /* out[tokens,dim] = table[ids[t]]; ids outside [0,vocab) give zero rows (callers validate ids)             */       \
  X(embedding_forward, (int tokens, int dim, int vocab, const int* ids, const void* table, void* out, int dtype,       \
                        void* stream, char* err, size_t err_len))                                                      \
  /* dtable fp32 [vocab,dim] += scatter of dout by ids (deterministic: each thread owns a column and walks   */        \
  /* the tokens in order; no atomics)                                                                        */        \
  X(embedding_backward, (int tokens, int dim, int vocab, const int* ids, const void* dout, float* dtable, int dtype,   \
                         void* stream, char* err, size_t err_len))                                                     \
  /* out[n] = a + b                                                                                          */        \
  X(residual_add,                                                                                                      \
    (size_t n, const void* a, const void* b, void* out, int dtype, void* stream, char* err, size_t err_len))           \
  X(cast_f32_to_bf16, (size_t n, const float* in, void* out, void* stream, char* err, size_t err_len))                 \
  X(cast_bf16_to_f32, (size_t n, const void* in, float* out, void* stream, char* err, size_t err_len))                 \
  /* out[0] += sum(g[i]^2) over n fp32 values (deterministic; scratch fp32 [RECODE_REDUCE_PARTS])             */       \
  X(sum_squares, (size_t n, const float* g, float* out, float* scratch, void* stream, char* err, size_t err_len))      \
  /* AdamW (PyTorch semantics) on fp32 master weights; grad scaled by grad_scale first (clipping);            */       \
  /* step >= 1 for bias correction; param_bf16 (may be NULL) receives the rounded copy                        */       \
  X(adamw_update,                                                                                                      \
    (size_t n, float* param, const float* grad, float* m, float* v, void* param_bf16, float lr, float beta1,           \
     float beta2, float eps, float weight_decay, int step, float grad_scale, void* stream, char* err, size_t err_len))

RECODE_CUDA_OPS(RECODE_ABI_DECLARE)

#ifdef __cplusplus
}
#endif

#endif /* RECODE_CUDA_H */
