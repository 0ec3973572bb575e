// Pointwise and memory kernels of the transformer: device memory helpers, SwiGLU, token embedding,
// residual add, dtype casts, and the optimizer pieces (sum of squares for global-norm clipping, AdamW).
// Elementwise kernels use grid-stride loops (each thread handles i, i + stride, ...), so any n works with
// a bounded grid, and consecutive threads touch consecutive elements (coalesced).
#include "ops_util.cuh"
#include "recode_cuda.h"

#include <cmath>
#include <mutex>
#include <unordered_map>

// ---- memory helpers ------------------------------------------------------------------------------------

namespace {
// What device_alloc handed out, so device_memory_stats can report the footprint and its peak (the requested
// sizes: the same figures the counting device of `recode plan` adds up).
struct AllocTracker {
  std::mutex mu;
  std::unordered_map<void*, size_t> sizes;
  size_t current = 0, peak = 0;
};
AllocTracker& tracker() {
  static AllocTracker* t = new AllocTracker;  // never destroyed: frees may come from static destructors
  return *t;
}
}  // namespace

RECODE_API(device_alloc)(size_t bytes, void** out, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE(out != nullptr, "device_alloc", "out is NULL");
  *out = nullptr;
  RECODE_CUDA_CHECK(cudaMalloc(out, bytes ? bytes : 1));
  AllocTracker& t = tracker();
  std::lock_guard<std::mutex> lk(t.mu);
  t.sizes[*out] = bytes;
  t.current += bytes;
  if (t.current > t.peak) t.peak = t.current;
  return 0;
  RECODE_API_CATCH
}

RECODE_API(device_free)(void* ptr, char* err, size_t err_len) {
  RECODE_API_TRY
  if (ptr) {
    RECODE_CUDA_CHECK(cudaFree(ptr));
    AllocTracker& t = tracker();
    std::lock_guard<std::mutex> lk(t.mu);
    auto it = t.sizes.find(ptr);
    if (it != t.sizes.end()) {
      t.current -= it->second;
      t.sizes.erase(it);
    }
  }
  return 0;
  RECODE_API_CATCH
}

RECODE_API(device_memory_stats)(size_t* current, size_t* peak, int reset_peak, char* err, size_t err_len) {
  RECODE_API_TRY
  AllocTracker& t = tracker();
  std::lock_guard<std::mutex> lk(t.mu);
  if (reset_peak) t.peak = reset_peak == 2 ? 0 : t.current;
  if (current) *current = t.current;
  if (peak) *peak = t.peak;
  return 0;
  RECODE_API_CATCH
}

RECODE_API(copy_to_device)(void* dst, const void* src, size_t bytes, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE(bytes == 0 || (dst && src), "copy_to_device", "NULL pointer");
  RECODE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  return 0;
  RECODE_API_CATCH
}

RECODE_API(copy_to_host)(void* dst, const void* src, size_t bytes, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE(bytes == 0 || (dst && src), "copy_to_host", "NULL pointer");
  RECODE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  return 0;
  RECODE_API_CATCH
}

RECODE_API(copy_device)(void* dst, const void* src, size_t bytes, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE(bytes == 0 || (dst && src), "copy_device", "NULL pointer");
  RECODE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, RECODE_STREAM(stream)));
  return 0;
  RECODE_API_CATCH
}

RECODE_API(device_memset)(void* ptr, int value, size_t bytes, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE(bytes == 0 || ptr, "device_memset", "NULL pointer");
  RECODE_CUDA_CHECK(cudaMemsetAsync(ptr, value, bytes, RECODE_STREAM(stream)));
  return 0;
  RECODE_API_CATCH
}

RECODE_API(device_sync)(char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_CUDA_CHECK(cudaDeviceSynchronize());
  return 0;
  RECODE_API_CATCH
}

// ---- SwiGLU: out = silu(gate) * up -------------------------------------------------------------------------

namespace {

__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

template <class T>
__global__ void swiglu_forward_kernel(size_t n, const T* gate, const T* up, T* out) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    float g = to_float(gate[i]);
    out[i] = store_as<T>(g * sigmoid_f(g) * to_float(up[i]));
  }
}

// d/dg [g * s(g)] = s + g * s * (1 - s)
template <class T>
__global__ void swiglu_backward_kernel(size_t n, const T* gate, const T* up, const T* dout, T* dgate, T* dup) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    float g = to_float(gate[i]), u = to_float(up[i]), d = to_float(dout[i]);
    float s = sigmoid_f(g);
    dgate[i] = store_as<T>(d * u * s * (1.0f + g * (1.0f - s)));
    dup[i] = store_as<T>(d * g * s);
  }
}

}  // namespace

RECODE_API(swiglu_forward)(size_t n, const void* gate, const void* up, void* out, int dtype, void* stream, char* err,
                           size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(dtype, "swiglu_forward");
  RECODE_REQUIRE(n == 0 || (gate && up && out), "swiglu_forward", "NULL pointer");
  if (n == 0) return 0;
  RECODE_DISPATCH_DTYPE(dtype, SIMT_LAUNCH(swiglu_forward_kernel<T>, dim3(grid_for(n, 256, 8192)), dim3(256), 0,
                                           RECODE_STREAM(stream), n, (const T*)gate, (const T*)up, (T*)out));
  RECODE_LAUNCH_CHECK();
  return 0;
  RECODE_API_CATCH
}

RECODE_API(swiglu_backward)(size_t n, const void* gate, const void* up, const void* dout, void* dgate, void* dup,
                            int dtype, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(dtype, "swiglu_backward");
  RECODE_REQUIRE(n == 0 || (gate && up && dout && dgate && dup), "swiglu_backward", "NULL pointer");
  if (n == 0) return 0;
  RECODE_DISPATCH_DTYPE(
      dtype, SIMT_LAUNCH(swiglu_backward_kernel<T>, dim3(grid_for(n, 256, 8192)), dim3(256), 0, RECODE_STREAM(stream),
                         n, (const T*)gate, (const T*)up, (const T*)dout, (T*)dgate, (T*)dup));
  RECODE_LAUNCH_CHECK();
  return 0;
  RECODE_API_CATCH
}

// ---- token embedding ------------------------------------------------------------------------------------------

namespace {

// One block row per token (blockIdx.y), threads across the embedding dimension.
template <class T>
__global__ void embedding_forward_kernel(int tokens, int dim, int vocab, const int* ids, const T* table, T* out) {
  int t = blockIdx.y;
  int id = ids[t];
  bool valid = id >= 0 && id < vocab;
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += gridDim.x * blockDim.x)
    out[(size_t)t * dim + c] = valid ? table[(size_t)id * dim + c] : store_as<T>(0.0f);
}

// Deterministic scatter-add without atomics or sorting: thread c owns column c of the table and walks the
// tokens in order, so every dtable element is summed in the same order on every run. Reads of dout are
// coalesced across the threads of a warp; parallelism is `dim` threads, ample for dim >= 1024.
template <class T>
__global__ void embedding_backward_kernel(int tokens, int dim, int vocab, const int* ids, const T* dout,
                                          float* dtable) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= dim) return;
  for (int t = 0; t < tokens; ++t) {
    int id = ids[t];
    if (id < 0 || id >= vocab) continue;
    dtable[(size_t)id * dim + c] += to_float(dout[(size_t)t * dim + c]);
  }
}

}  // namespace

RECODE_API(embedding_forward)(int tokens, int dim, int vocab, const int* ids, const void* table, void* out, int dtype,
                              void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(dtype, "embedding_forward");
  RECODE_REQUIRE(tokens >= 0 && tokens <= 65535 * 64 && dim > 0 && vocab > 0, "embedding_forward",
                 "bad sizes tokens=%d dim=%d vocab=%d", tokens, dim, vocab);
  RECODE_REQUIRE(tokens == 0 || (ids && table && out), "embedding_forward", "NULL pointer");
  if (tokens == 0) return 0;
  // Tokens beyond 65535 (grid.y limit) are handled by launching in chunks.
  for (int t0 = 0; t0 < tokens; t0 += 65535) {
    int chunk = tokens - t0 < 65535 ? tokens - t0 : 65535;
    dim3 grid(ceil_div((unsigned)dim, 256u) < 8u ? ceil_div((unsigned)dim, 256u) : 8u, (unsigned)chunk);
    RECODE_DISPATCH_DTYPE(dtype, SIMT_LAUNCH(embedding_forward_kernel<T>, grid, dim3(256), 0, RECODE_STREAM(stream),
                                             chunk, dim, vocab, ids + t0, (const T*)table, (T*)out + (size_t)t0 * dim));
    RECODE_LAUNCH_CHECK();
  }
  return 0;
  RECODE_API_CATCH
}

RECODE_API(embedding_backward)(int tokens, int dim, int vocab, const int* ids, const void* dout, float* dtable,
                               int dtype, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(dtype, "embedding_backward");
  RECODE_REQUIRE(tokens >= 0 && dim > 0 && vocab > 0, "embedding_backward", "bad sizes tokens=%d dim=%d vocab=%d",
                 tokens, dim, vocab);
  RECODE_REQUIRE(tokens == 0 || (ids && dout && dtable), "embedding_backward", "NULL pointer");
  if (tokens == 0) return 0;
  RECODE_DISPATCH_DTYPE(dtype, SIMT_LAUNCH(embedding_backward_kernel<T>, dim3(ceil_div((unsigned)dim, 128u)), dim3(128),
                                           0, RECODE_STREAM(stream), tokens, dim, vocab, ids, (const T*)dout, dtable));
  RECODE_LAUNCH_CHECK();
  return 0;
  RECODE_API_CATCH
}

// ---- residual add and casts ---------------------------------------------------------------------------------

namespace {

template <class T>
__global__ void residual_add_kernel(size_t n, const T* a, const T* b, T* out) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = store_as<T>(to_float(a[i]) + to_float(b[i]));
}

__global__ void cast_f32_to_bf16_kernel(size_t n, const float* in, bf16* out) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = to_bf16(in[i]);
}

__global__ void cast_bf16_to_f32_kernel(size_t n, const bf16* in, float* out) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = to_float(in[i]);
}

}  // namespace

RECODE_API(residual_add)(size_t n, const void* a, const void* b, void* out, int dtype, void* stream, char* err,
                         size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(dtype, "residual_add");
  RECODE_REQUIRE(n == 0 || (a && b && out), "residual_add", "NULL pointer");
  if (n == 0) return 0;
  RECODE_DISPATCH_DTYPE(dtype, SIMT_LAUNCH(residual_add_kernel<T>, dim3(grid_for(n, 256, 8192)), dim3(256), 0,
                                           RECODE_STREAM(stream), n, (const T*)a, (const T*)b, (T*)out));
  RECODE_LAUNCH_CHECK();
  return 0;
  RECODE_API_CATCH
}

RECODE_API(cast_f32_to_bf16)(size_t n, const float* in, void* out, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE(n == 0 || (in && out), "cast_f32_to_bf16", "NULL pointer");
  if (n == 0) return 0;
  SIMT_LAUNCH(cast_f32_to_bf16_kernel, dim3(grid_for(n, 256, 8192)), dim3(256), 0, RECODE_STREAM(stream), n, in,
              (bf16*)out);
  RECODE_LAUNCH_CHECK();
  return 0;
  RECODE_API_CATCH
}

RECODE_API(cast_bf16_to_f32)(size_t n, const void* in, float* out, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE(n == 0 || (in && out), "cast_bf16_to_f32", "NULL pointer");
  if (n == 0) return 0;
  SIMT_LAUNCH(cast_bf16_to_f32_kernel, dim3(grid_for(n, 256, 8192)), dim3(256), 0, RECODE_STREAM(stream), n,
              (const bf16*)in, out);
  RECODE_LAUNCH_CHECK();
  return 0;
  RECODE_API_CATCH
}

// ---- optimizer: global gradient norm and AdamW ------------------------------------------------------------

namespace {

// Block-wide sum of one float per thread (blockDim.x a multiple of 32, <= 1024); result valid in thread 0.
__device__ float block_sum(float v) {
  __shared__ float warp_sums[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  float total = 0.0f;
  if (warp == 0) {
    total = lane < blockDim.x / 32 ? warp_sums[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
  }
  __syncthreads();  // warp_sums may be reused by a following call
  return total;
}

// Stage 1: block p sums squares over a grid-stride slice and writes partials[p] (fixed order per block).
__global__ void sum_squares_partial_kernel(size_t n, const float* g, float* partials) {
  float s = 0.0f;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    s += g[i] * g[i];
  s = block_sum(s);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// Stage 2: one warp adds the partials in a fixed order into out[0].
__global__ void sum_squares_final_kernel(int parts, const float* partials, float* out) {
  float s = 0.0f;
  for (int p = threadIdx.x; p < parts; p += 32) s += partials[p];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (threadIdx.x == 0) out[0] += s;
}

}  // namespace

RECODE_API(sum_squares)(size_t n, const float* g, float* out, float* scratch, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE(out && scratch && (n == 0 || g), "sum_squares", "NULL pointer");
  if (n == 0) return 0;
  unsigned parts = grid_for(n, 256, RECODE_REDUCE_PARTS);
  SIMT_LAUNCH(sum_squares_partial_kernel, dim3(parts), dim3(256), 0, RECODE_STREAM(stream), n, g, scratch);
  RECODE_LAUNCH_CHECK();
  SIMT_LAUNCH(sum_squares_final_kernel, dim3(1), dim3(32), 0, RECODE_STREAM(stream), (int)parts, scratch, out);
  RECODE_LAUNCH_CHECK();
  return 0;
  RECODE_API_CATCH
}

namespace {

// AdamW as torch.optim.AdamW: decoupled decay p -= lr*wd*p, then the bias-corrected Adam step.
__global__ void adamw_kernel(size_t n, float* param, const float* grad, float* m, float* v, bf16* param_bf16, float lr,
                             float beta1, float beta2, float eps, float weight_decay, float bias1, float bias2,
                             float grad_scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    float g = grad[i] * grad_scale;
    float mi = beta1 * m[i] + (1.0f - beta1) * g;
    float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float p = param[i] * (1.0f - lr * weight_decay);
    p -= lr * (mi / bias1) / (sqrtf(vi / bias2) + eps);
    param[i] = p;
    if (param_bf16) param_bf16[i] = to_bf16(p);
  }
}

}  // namespace

RECODE_API(adamw_update)(size_t n, float* param, const float* grad, float* m, float* v, void* param_bf16, float lr,
                         float beta1, float beta2, float eps, float weight_decay, int step, float grad_scale,
                         void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE(n == 0 || (param && grad && m && v), "adamw_update", "NULL pointer");
  RECODE_REQUIRE(step >= 1, "adamw_update", "step must be >= 1, got %d", step);
  RECODE_REQUIRE(beta1 >= 0.0f && beta1 < 1.0f && beta2 >= 0.0f && beta2 < 1.0f && eps > 0.0f, "adamw_update",
                 "betas must be in [0,1) and eps > 0");
  if (n == 0) return 0;
  float bias1 = 1.0f - (float)std::pow((double)beta1, (double)step);
  float bias2 = 1.0f - (float)std::pow((double)beta2, (double)step);
  if (beta1 == 0.0f) bias1 = 1.0f;
  if (beta2 == 0.0f) bias2 = 1.0f;
  SIMT_LAUNCH(adamw_kernel, dim3(grid_for(n, 256, 8192)), dim3(256), 0, RECODE_STREAM(stream), n, param, grad, m, v,
              (bf16*)param_bf16, lr, beta1, beta2, eps, weight_decay, bias1, bias2, grad_scale);
  RECODE_LAUNCH_CHECK();
  return 0;
  RECODE_API_CATCH
}
