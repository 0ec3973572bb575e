// LoRA / DoRA pieces of the CUDA trainer (src/model/cuda_train_step.cpp), the device twins of
// src/ops/adapter_linear.cpp; the products themselves go through cuda/gemm.cu. PEFT's formulas (src/train/adapters.h):
//   u = drop(x) A^T,  lora = u B^T,  LoRA: y = x W^T + b + s lora
//   DoRA: pre = drop(x) W^T + s lora,  c = m / n (n = ||W + s B A|| per row, constant in the backward)
//         y = x W^T + b + c pre - drop(x) W^T      (= c pre + b without dropout)
// Dropout is inverted dropout with the counter-based mask of src/train/adapters.cpp (dropout_keep): element with
// counter c = offset + flat index is kept when word (c & 3) of Philox4x32-10 block (c >> 2) under key `seed`
// is >= p * 2^32, so forward, backward and the CPU trainer all see the same mask without storing it.
// Entry points are declared in cuda/recode_adapters.h.
#include "ops_util.cuh"

#include <cmath>

#include "philox.h"
#include "recode_adapters.h"

namespace {

// out[i] = keep(offset + i) ? x[i] / (1 - p) : 0
template <class T>
__global__ void dropout_kernel(size_t n, const T* x, T* out, uint64_t seed, uint64_t offset, double threshold,
                               float keep_scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = recode::philox::dropout_keep(seed, offset + i, threshold) ? store_as<T>(to_float(x[i]) * keep_scale)
                                                                       : store_as<T>(0.f);
}

// dx[i] += keep(offset + i) ? adx[i] / (1 - p) : 0
template <class T>
__global__ void dropout_add_kernel(size_t n, T* dx, const T* adx, uint64_t seed, uint64_t offset, double threshold,
                                   float keep_scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    if (recode::philox::dropout_keep(seed, offset + i, threshold))
      dx[i] = store_as<T>(to_float(dx[i]) + keep_scale * to_float(adx[i]));
}

// y = x W^T (y0) + b + s lora (LoRA), or y0 + b + c pre - base_drop with pre = base_drop + s lora (DoRA;
// base_drop = drop(x) W^T, NULL without dropout where it equals y0 and y = c pre + b). One thread per element.
template <class T>
__global__ void forward_combine_kernel(int M, int N, const T* y0, const T* base_drop, const T* lora,
                                       const float* magnitude, const float* norm, float scaling, const float* bias,
                                       T* y, float* pre) {
  const size_t n = (size_t)M * N;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const int o = (int)(i % N);
    const float base = to_float(y0[i]), sl = scaling * to_float(lora[i]);
    float out;
    if (!magnitude) {
      out = base + sl;
    } else {
      const float bd = base_drop ? to_float(base_drop[i]) : base;
      const float p = bd + sl, c = magnitude[o] / norm[o];
      if (pre) pre[i] = p;  // kept for dm's gradient; generation needs none
      out = base_drop ? base + (c * p - bd) : c * p;
    }
    if (bias) out += bias[o];
    y[i] = store_as<T>(out);
  }
}

// gs = s c dy (s dy for LoRA): the gradient of the low-rank product, pre-scaled so the GEMMs need no alpha;
// e = (c - 1) dy when e != NULL (DoRA: the base path's extra term).
template <class T>
__global__ void grad_scale_kernel(int M, int N, const T* dy, const float* magnitude, const float* norm, float scaling,
                                  T* gs, T* e) {
  const size_t n = (size_t)M * N;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const int o = (int)(i % N);
    const float c = magnitude ? magnitude[o] / norm[o] : 1.0f, g = to_float(dy[i]);
    gs[i] = store_as<T>(scaling * (c * g));
    if (e) e[i] = store_as<T>((c - 1.0f) * g);
  }
}

// dm[o] += sum_t dy[t, o] pre[t, o] / n[o]: one thread per column walking the rows in order (deterministic).
template <class T>
__global__ void magnitude_grad_kernel(int M, int N, const T* dy, const float* pre, const float* norm, float* dm) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= N) return;
  double acc = 0;
  for (int t = 0; t < M; ++t) acc += (double)to_float(dy[(size_t)t * N + o]) * pre[(size_t)t * N + o];
  dm[o] += (float)(acc / norm[o]);
}

// (W + s ba)[j] as the CPU oracle rounds it: s ba first, then the add (mul_rn keeps a GPU from fusing them).
template <class T>
__device__ __forceinline__ float adapted_weight(const T* W, const float* ba, float scaling, size_t j) {
  return to_float(W[j]) + mul_rn(scaling, ba[j]);
}

// || W[o,:] + s ba[o,:] ||, summed in double in order.
template <class T>
__device__ float adapted_row_norm(int o, int K, const T* W, const float* ba, float scaling) {
  double sq = 0;
  for (int i = 0; i < K; ++i) {
    const float v = adapted_weight(W, ba, scaling, (size_t)o * K + i);
    sq += (double)v * v;
  }
  return (float)sqrt(sq);
}

// norm[o] = || W[o,:] + s ba[o,:] || (ba = B A, fp32), one thread per row.
template <class T>
__global__ void weight_norm_kernel(int N, int K, const T* W, const float* ba, float scaling, float* norm) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= N) return;
  norm[o] = adapted_row_norm(o, K, W, ba, scaling);
}

// out[o, i] = (W + s ba)[o, i], times m[o] / ||(W + s ba)[o,:]|| for DoRA: one block per row (the norm by
// adapted_row_norm on thread 0), threads across the row.
template <class T, class O>
__device__ void merge_row(int N, int K, const T* W, const float* ba, float scaling, const float* magnitude, O* out) {
  __shared__ float row_scale;
  const int o = blockIdx.x;
  if (threadIdx.x == 0) {
    float scale = 1.0f;
    if (magnitude) scale = magnitude[o] / adapted_row_norm(o, K, W, ba, scaling);
    row_scale = scale;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < K; i += blockDim.x) {
    const float v = adapted_weight(W, ba, scaling, (size_t)o * K + i);
    out[(size_t)o * K + i] = store_as<O>(magnitude ? v * row_scale : v);
  }
}
template <class T>
__global__ void merge_f32_kernel(int N, int K, const T* W, const float* ba, float scaling, const float* magnitude,
                                 float* out) {
  merge_row<T, float>(N, K, W, ba, scaling, magnitude, out);
}
template <class T>
__global__ void merge_bf16_kernel(int N, int K, const T* W, const float* ba, float scaling, const float* magnitude,
                                  bf16* out) {
  merge_row<T, bf16>(N, K, W, ba, scaling, magnitude, out);
}

unsigned grid_for(size_t n) {
  const size_t blocks = (n + 255) / 256;
  return (unsigned)(blocks < 4096 ? (blocks ? blocks : 1) : 4096);
}

}  // namespace

RECODE_API(adapter_dropout)(size_t n, const void* x, void* out, uint64_t seed, uint64_t offset, float p, int dtype,
                            void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(dtype, "adapter_dropout");
  RECODE_REQUIRE(p >= 0.0f && p < 1.0f, "adapter_dropout", "p must be in [0, 1), got %g", (double)p);
  RECODE_REQUIRE(n == 0 || (x && out), "adapter_dropout", "NULL pointer");
  if (n == 0) return 0;
  RECODE_DISPATCH_DTYPE(
      dtype, SIMT_LAUNCH(dropout_kernel<T>, dim3(grid_for(n)), dim3(256), 0, RECODE_STREAM(stream), n, (const T*)x,
                         (T*)out, seed, offset, recode::philox::dropout_threshold(p), 1.0f / (1.0f - p)));
  RECODE_CUDA_CHECK(cudaGetLastError());
  return 0;
  RECODE_API_CATCH
}

RECODE_API(adapter_dropout_add)(size_t n, void* dx, const void* adx, uint64_t seed, uint64_t offset, float p, int dtype,
                                void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(dtype, "adapter_dropout_add");
  RECODE_REQUIRE(p >= 0.0f && p < 1.0f, "adapter_dropout_add", "p must be in [0, 1), got %g", (double)p);
  RECODE_REQUIRE(n == 0 || (dx && adx), "adapter_dropout_add", "NULL pointer");
  if (n == 0) return 0;
  RECODE_DISPATCH_DTYPE(
      dtype, SIMT_LAUNCH(dropout_add_kernel<T>, dim3(grid_for(n)), dim3(256), 0, RECODE_STREAM(stream), n, (T*)dx,
                         (const T*)adx, seed, offset, recode::philox::dropout_threshold(p), 1.0f / (1.0f - p)));
  RECODE_CUDA_CHECK(cudaGetLastError());
  return 0;
  RECODE_API_CATCH
}

RECODE_API(adapter_forward_combine)(int M, int N, const void* y0, const void* base_drop, const void* lora,
                                    const float* magnitude, const float* norm, float scaling, const float* bias,
                                    void* y, float* pre, int dtype, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(dtype, "adapter_forward_combine");
  RECODE_REQUIRE(M >= 0 && N > 0, "adapter_forward_combine", "bad sizes M=%d N=%d", M, N);
  RECODE_REQUIRE(y0 && lora && y, "adapter_forward_combine", "NULL pointer");
  RECODE_REQUIRE(!magnitude || norm, "adapter_forward_combine", "DoRA needs norm");
  if (M == 0) return 0;
  const size_t n = (size_t)M * N;
  RECODE_DISPATCH_DTYPE(dtype, SIMT_LAUNCH(forward_combine_kernel<T>, dim3(grid_for(n)), dim3(256), 0,
                                           RECODE_STREAM(stream), M, N, (const T*)y0, (const T*)base_drop,
                                           (const T*)lora, magnitude, norm, scaling, bias, (T*)y, pre));
  RECODE_CUDA_CHECK(cudaGetLastError());
  return 0;
  RECODE_API_CATCH
}

RECODE_API(adapter_grad_scale)(int M, int N, const void* dy, const float* magnitude, const float* norm, float scaling,
                               void* gs, void* e, int dtype, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(dtype, "adapter_grad_scale");
  RECODE_REQUIRE(M >= 0 && N > 0, "adapter_grad_scale", "bad sizes M=%d N=%d", M, N);
  RECODE_REQUIRE(dy && gs, "adapter_grad_scale", "NULL pointer");
  RECODE_REQUIRE(!magnitude || norm, "adapter_grad_scale", "DoRA needs norm");
  if (M == 0) return 0;
  const size_t n = (size_t)M * N;
  RECODE_DISPATCH_DTYPE(dtype, SIMT_LAUNCH(grad_scale_kernel<T>, dim3(grid_for(n)), dim3(256), 0, RECODE_STREAM(stream),
                                           M, N, (const T*)dy, magnitude, norm, scaling, (T*)gs, (T*)e));
  RECODE_CUDA_CHECK(cudaGetLastError());
  return 0;
  RECODE_API_CATCH
}

RECODE_API(dora_magnitude_grad)(int M, int N, const void* dy, const float* pre, const float* norm, float* dm, int dtype,
                                void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(dtype, "dora_magnitude_grad");
  RECODE_REQUIRE(M >= 0 && N > 0, "dora_magnitude_grad", "bad sizes M=%d N=%d", M, N);
  RECODE_REQUIRE(dy && pre && norm && dm, "dora_magnitude_grad", "NULL pointer");
  if (M == 0) return 0;
  RECODE_DISPATCH_DTYPE(dtype, SIMT_LAUNCH(magnitude_grad_kernel<T>, dim3(ceil_div((unsigned)N, 128u)), dim3(128), 0,
                                           RECODE_STREAM(stream), M, N, (const T*)dy, pre, norm, dm));
  RECODE_CUDA_CHECK(cudaGetLastError());
  return 0;
  RECODE_API_CATCH
}

RECODE_API(dora_weight_norm)(int N, int K, const void* W, const float* ba, float scaling, float* norm, int w_dtype,
                             void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(w_dtype, "dora_weight_norm");
  RECODE_REQUIRE(N > 0 && K > 0, "dora_weight_norm", "bad sizes N=%d K=%d", N, K);
  RECODE_REQUIRE(W && ba && norm, "dora_weight_norm", "NULL pointer");
  RECODE_DISPATCH_DTYPE(w_dtype, SIMT_LAUNCH(weight_norm_kernel<T>, dim3(ceil_div((unsigned)N, 128u)), dim3(128), 0,
                                             RECODE_STREAM(stream), N, K, (const T*)W, ba, scaling, norm));
  RECODE_CUDA_CHECK(cudaGetLastError());
  return 0;
  RECODE_API_CATCH
}

RECODE_API(adapter_merge)(int N, int K, const void* W, const float* ba, float scaling, const float* magnitude,
                          void* out, int w_dtype, int out_dtype, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(w_dtype, "adapter_merge");
  RECODE_REQUIRE_DTYPE(out_dtype, "adapter_merge");
  RECODE_REQUIRE(N > 0 && K > 0, "adapter_merge", "bad sizes N=%d K=%d", N, K);
  RECODE_REQUIRE(W && ba && out, "adapter_merge", "NULL pointer");
  if (out_dtype == RECODE_F32) {
    RECODE_DISPATCH_DTYPE(w_dtype, SIMT_LAUNCH(merge_f32_kernel<T>, dim3(N), dim3(128), 0, RECODE_STREAM(stream), N, K,
                                               (const T*)W, ba, scaling, magnitude, (float*)out));
  } else {
    RECODE_DISPATCH_DTYPE(w_dtype, SIMT_LAUNCH(merge_bf16_kernel<T>, dim3(N), dim3(128), 0, RECODE_STREAM(stream), N, K,
                                               (const T*)W, ba, scaling, magnitude, (bf16*)out));
  }
  RECODE_CUDA_CHECK(cudaGetLastError());
  return 0;
  RECODE_API_CATCH
}
