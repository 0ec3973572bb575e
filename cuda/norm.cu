// RMSNorm and rotary position embedding (RoPE), forward and backward.
//
// RMSNorm (Llama/Qwen): y = x * rstd * w with rstd = 1/sqrt(mean(x^2) + eps), computed in fp32 and rounded
// once to the storage type. One warp per row; rows are independent, so a block holds 8 rows (8 warps).
// Backward: with g = w * dy,  dx = rstd * g - x * rstd^3 * mean(g * x);  dw = sum over rows of dy * x * rstd.
// dw is a deterministic two-stage reduction: stage 1 gives each of P row-chunks a partial column sum (threads
// across columns, so loads are coalesced), stage 2 adds the P partials in order. No atomics anywhere.
//
// RoPE, rotate-half convention (HF Llama/Qwen): for pair (i, i + D/2) with angle a = position * inv_freq[i]
// (fp32, as HF computes it):  y_i = x_i cos a - x_{i+D/2} sin a,  y_{i+D/2} = x_{i+D/2} cos a + x_i sin a.
// The backward is the rotation by -a. inv_freq comes from the caller, so rope scaling (llama3) is theirs.
#include "ops_util.cuh"
#include "recode_cuda.h"

#include <cmath>

namespace {

constexpr int kNormRowsPerBlock = 8;  // one warp per row

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class T>
__global__ void rmsnorm_forward_kernel(int rows, int dim, const T* x, const T* weight, float eps, T* y,
                                       float* rstd_out) {
  int row = blockIdx.x * kNormRowsPerBlock + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warp leaves together
  const T* xr = x + (size_t)row * dim;
  float ss = 0.0f;
  for (int c = lane; c < dim; c += 32) {
    float v = to_float(xr[c]);
    ss += v * v;
  }
  ss = warp_sum(ss);
  float rstd = rsqrtf(ss / (float)dim + eps);
  T* yr = y + (size_t)row * dim;
  for (int c = lane; c < dim; c += 32) yr[c] = store_as<T>(to_float(xr[c]) * rstd * to_float(weight[c]));
  if (rstd_out && lane == 0) rstd_out[row] = rstd;
}

template <class T>
__global__ void rmsnorm_backward_dx_kernel(int rows, int dim, const T* x, const T* weight, const float* rstd_in,
                                           const T* dy, T* dx, int accumulate) {
  int row = blockIdx.x * kNormRowsPerBlock + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const T* xr = x + (size_t)row * dim;
  const T* dyr = dy + (size_t)row * dim;
  float rstd = rstd_in[row];
  float dot = 0.0f;  // sum of (w * dy) * x
  for (int c = lane; c < dim; c += 32) dot += to_float(weight[c]) * to_float(dyr[c]) * to_float(xr[c]);
  dot = warp_sum(dot);
  float coef = dot * rstd * rstd * rstd / (float)dim;
  T* dxr = dx + (size_t)row * dim;
  for (int c = lane; c < dim; c += 32) {
    float g = to_float(weight[c]) * to_float(dyr[c]);
    float d = rstd * g - to_float(xr[c]) * coef;
    if (accumulate) d += to_float(dxr[c]);
    dxr[c] = store_as<T>(d);
  }
}

// Stage 1: blockIdx.y = row chunk p of `parts`; threads across columns. out[p * dim + c] = chunk's column sum,
// or (parts == 1) dweight[c] += column sum directly.
template <class T>
__global__ void rmsnorm_backward_dw_partial_kernel(int rows, int dim, const T* x, const float* rstd_in, const T* dy,
                                                   float* out, int parts) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= dim) return;
  int p = blockIdx.y;
  int chunk = (rows + parts - 1) / parts;
  int r0 = p * chunk, r1 = min(rows, r0 + chunk);
  float s = 0.0f;
  for (int r = r0; r < r1; ++r) s += to_float(dy[(size_t)r * dim + c]) * to_float(x[(size_t)r * dim + c]) * rstd_in[r];
  if (parts == 1)
    out[c] += s;
  else
    out[(size_t)p * dim + c] = s;
}

__global__ void reduce_partials_kernel(int dim, int parts, const float* partials, float* dweight) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= dim) return;
  float s = 0.0f;
  for (int p = 0; p < parts; ++p) s += partials[(size_t)p * dim + c];
  dweight[c] += s;
}

}  // namespace

RECODE_API(rmsnorm_forward)(int rows, int dim, const void* x, const void* weight, float eps, void* y, float* rstd,
                            int dtype, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(dtype, "rmsnorm_forward");
  RECODE_REQUIRE(rows >= 0 && dim > 0 && eps >= 0.0f, "rmsnorm_forward", "bad sizes rows=%d dim=%d eps=%g", rows, dim,
                 (double)eps);
  RECODE_REQUIRE(rows == 0 || (x && weight && y), "rmsnorm_forward", "NULL pointer");
  if (rows == 0) return 0;
  dim3 grid(ceil_div((unsigned)rows, (unsigned)kNormRowsPerBlock));
  RECODE_DISPATCH_DTYPE(
      dtype, SIMT_LAUNCH(rmsnorm_forward_kernel<T>, grid, dim3(32 * kNormRowsPerBlock), 0, RECODE_STREAM(stream), rows,
                         dim, (const T*)x, (const T*)weight, eps, (T*)y, rstd));
  RECODE_LAUNCH_CHECK();
  return 0;
  RECODE_API_CATCH
}

RECODE_API(rmsnorm_backward)(int rows, int dim, const void* x, const void* weight, const float* rstd, const void* dy,
                             void* dx, float* dweight, float* scratch, int accumulate, int dtype, void* stream,
                             char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(dtype, "rmsnorm_backward");
  RECODE_REQUIRE(rows >= 0 && dim > 0, "rmsnorm_backward", "bad sizes rows=%d dim=%d", rows, dim);
  RECODE_REQUIRE(rows == 0 || (x && weight && rstd && dy && dx), "rmsnorm_backward", "NULL pointer");
  if (rows == 0) return 0;
  cudaStream_t s = RECODE_STREAM(stream);
  RECODE_UNUSED(s);
  dim3 grid(ceil_div((unsigned)rows, (unsigned)kNormRowsPerBlock));
  RECODE_DISPATCH_DTYPE(dtype,
                        SIMT_LAUNCH(rmsnorm_backward_dx_kernel<T>, grid, dim3(32 * kNormRowsPerBlock), 0, s, rows, dim,
                                    (const T*)x, (const T*)weight, rstd, (const T*)dy, (T*)dx, accumulate));
  RECODE_LAUNCH_CHECK();
  if (dweight) {
    int parts = scratch ? (rows < RECODE_REDUCE_PARTS ? rows : RECODE_REDUCE_PARTS) : 1;
    dim3 g1(ceil_div((unsigned)dim, 128u), (unsigned)parts);
    float* out = parts == 1 ? dweight : scratch;
    RECODE_DISPATCH_DTYPE(dtype, SIMT_LAUNCH(rmsnorm_backward_dw_partial_kernel<T>, g1, dim3(128), 0, s, rows, dim,
                                             (const T*)x, rstd, (const T*)dy, out, parts));
    RECODE_LAUNCH_CHECK();
    if (parts > 1) {
      SIMT_LAUNCH(reduce_partials_kernel, dim3(ceil_div((unsigned)dim, 128u)), dim3(128), 0, s, dim, parts, scratch,
                  dweight);
      RECODE_LAUNCH_CHECK();
    }
  }
  return 0;
  RECODE_API_CATCH
}

// ---- RoPE ---------------------------------------------------------------------------------------------------

namespace {

// One thread per (token, head, pair i < D/2). sign = +1 forward, -1 backward (rotation by -angle).
template <class T>
__global__ void rope_kernel(int tokens, int heads, int D, const T* in, T* out, const int* positions,
                            const float* inv_freq, float sign) {
  int half = D / 2;
  size_t total = (size_t)tokens * heads * half;
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
    int i = (int)(idx % half);
    size_t th = idx / half;  // token * heads + head
    int t = (int)(th / heads);
    float angle = (float)positions[t] * inv_freq[i];
    float c = cosf(angle), s = sign * sinf(angle);
    const T* xr = in + th * D;
    T* yr = out + th * D;
    float a = to_float(xr[i]), b = to_float(xr[i + half]);
    yr[i] = store_as<T>(a * c - b * s);
    yr[i + half] = store_as<T>(b * c + a * s);
  }
}

static int rope_launch(const char* op, int tokens, int heads, int D, const void* x, void* y, const int* positions,
                       const float* inv_freq, int dtype, void* stream, float sign, char* err, size_t err_len) {
  RECODE_REQUIRE_DTYPE(dtype, op);
  RECODE_REQUIRE(tokens >= 0 && heads > 0 && D > 0 && D % 2 == 0, op, "bad sizes tokens=%d heads=%d D=%d (D even)",
                 tokens, heads, D);
  RECODE_REQUIRE(tokens == 0 || (x && y && positions && inv_freq), op, "NULL pointer");
  if (tokens == 0) return 0;
  size_t total = (size_t)tokens * heads * (D / 2);
  RECODE_DISPATCH_DTYPE(
      dtype, SIMT_LAUNCH(rope_kernel<T>, dim3(grid_for(total, 256, 8192)), dim3(256), 0, RECODE_STREAM(stream), tokens,
                         heads, D, (const T*)x, (T*)y, positions, inv_freq, sign));
  RECODE_LAUNCH_CHECK();
  return 0;
}

}  // namespace

RECODE_API(rope_forward)(int tokens, int heads, int D, const void* x, void* y, const int* positions,
                         const float* inv_freq, int dtype, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  return rope_launch("rope_forward", tokens, heads, D, x, y, positions, inv_freq, dtype, stream, 1.0f, err, err_len);
  RECODE_API_CATCH
}

RECODE_API(rope_backward)(int tokens, int heads, int D, const void* dy, void* dx, const int* positions,
                          const float* inv_freq, int dtype, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  return rope_launch("rope_backward", tokens, heads, D, dy, dx, positions, inv_freq, dtype, stream, -1.0f, err,
                     err_len);
  RECODE_API_CATCH
}
