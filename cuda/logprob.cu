// Token log-probabilities on the GPU (definitions in src/logprob/logprob.h).
//   From logits: one block per position; each thread folds its strided share of the vocabulary into an
//   online log-sum-exp state, the block merges the states (shuffles + shared memory); the backward pass is
//   elementwise given the saved lse and entropy.
//   From hidden states: the host walks the vocabulary in chunks; per chunk a tiled GEMM computes the
//   [T, chunk] logits, a block per position folds them into its running state. The backward pass recomputes
//   the chunk's logits, turns them into d/dlogits in place, and two GEMMs accumulate dhidden += dz W_chunk
//   and write dW_chunk = dz^T hidden. Only one [T, chunk] buffer ever exists.
#include "common.cuh"
#include "recode_cuda.h"
#include "recode_logprob.h"
#include "logprob_core.h"

// The chunk GEMMs of the hidden-state passes use gemm.cu's tiled kernels (same library) when no temperature
// scale has to be folded in; launch_gemm below is the plain fallback.
#if defined(__CUDACC__)
#define RECODE_SAME_LIBRARY(name) recode_cuda_##name
#else
#define RECODE_SAME_LIBRARY(name) recode_emu_##name
#endif

using namespace recode::logprob;
using LseF = Lse<float>;

constexpr int kGemmTile = 16;

__device__ LseF block_merge_lse(LseF st, LseF* scratch) {
  for (int o = 16; o > 0; o >>= 1) {
    LseF other{__shfl_xor_sync(0xffffffffu, st.m, o), __shfl_xor_sync(0xffffffffu, st.s, o),
               __shfl_xor_sync(0xffffffffu, st.a, o)};
    st = lse_merge<float>(st, other);
  }
  unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = st;
  __syncthreads();
  LseF r = scratch[0];
  for (unsigned w = 1; w < nwarps; ++w) r = lse_merge<float>(r, scratch[w]);
  return r;
}

__global__ void logits_forward_kernel(const float* logits, int V, const int32_t* targets, float inv_t, float* logp,
                                      float* entropy, float* lse) {
  __shared__ LseF scratch[32];
  const int t = blockIdx.x;
  const float* x = logits + (size_t)t * V;
  LseF st = lse_empty<float>();
  for (int v = threadIdx.x; v < V; v += blockDim.x) st = lse_add<float>(st, x[v] * inv_t);
  st = block_merge_lse(st, scratch);
  if (threadIdx.x == 0) {
    float l = lse_value(st);
    lse[t] = l;
    logp[t] = x[targets[t]] * inv_t - l;
    entropy[t] = lse_entropy(st);
  }
}

__global__ void logits_backward_kernel(const float* logits, int V, const int32_t* targets, float inv_t,
                                       const float* lse, const float* entropy, const float* dlogp,
                                       const float* dentropy, float* dlogits) {
  const int t = blockIdx.x;
  const float* x = logits + (size_t)t * V;
  float* dx = dlogits + (size_t)t * V;
  const float l = lse[t], h = entropy[t], dl = dlogp[t], de = dentropy ? dentropy[t] : 0.f;
  const int target = targets[t];
  for (int v = threadIdx.x; v < V; v += blockDim.x) dx[v] = dz_of(x[v] * inv_t, l, h, v == target, dl, de) * inv_t;
}

// C[M, N] = alpha * op(A)[M, K] op(B)[K, N] + beta * C, row-major; op transposes when asked. 16x16 tiles
// through shared memory, one output per thread.
__global__ void gemm_kernel(int M, int N, int K, const float* A, int lda, int trans_a, const float* B, int ldb,
                            int trans_b, float* C, int ldc, float alpha, float beta) {
  __shared__ float a_tile[kGemmTile][kGemmTile + 1];
  __shared__ float b_tile[kGemmTile][kGemmTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * kGemmTile + ty, col = blockIdx.x * kGemmTile + tx;
  float acc = 0.f;
  for (int k0 = 0; k0 < K; k0 += kGemmTile) {
    int ka = k0 + tx, kb = k0 + ty;
    a_tile[ty][tx] = (row < M && ka < K) ? (trans_a ? A[(size_t)ka * lda + row] : A[(size_t)row * lda + ka]) : 0.f;
    b_tile[ty][tx] = (kb < K && col < N) ? (trans_b ? B[(size_t)col * ldb + kb] : B[(size_t)kb * ldb + col]) : 0.f;
    __syncthreads();
    for (int k = 0; k < kGemmTile; ++k) acc += a_tile[ty][k] * b_tile[k][tx];
    __syncthreads();
  }
  if (row < M && col < N) {
    float* c = C + (size_t)row * ldc + col;
    *c = alpha * acc + (beta != 0.f ? beta * *c : 0.f);
  }
}

// Folds row t's chunk of logits z[t, 0..width) (vocabulary v0..v0+width) into its running state.
__global__ void chunk_fold_kernel(const float* z, int width, int v0, const int32_t* targets, float* state_m,
                                  float* state_s, float* state_a, float* target_z) {
  __shared__ LseF scratch[32];
  const int t = blockIdx.x;
  const float* row = z + (size_t)t * width;
  LseF st = lse_empty<float>();
  for (int j = threadIdx.x; j < width; j += blockDim.x) st = lse_add<float>(st, row[j]);
  st = block_merge_lse(st, scratch);
  if (threadIdx.x == 0) {
    LseF run{state_m[t], state_s[t], state_a[t]};
    run = lse_merge<float>(run, st);
    state_m[t] = run.m;
    state_s[t] = run.s;
    state_a[t] = run.a;
    int target = targets[t];
    if (target >= v0 && target < v0 + width) target_z[t] = row[target - v0];
  }
}

__global__ void finish_kernel(int T, const float* state_m, const float* state_s, const float* state_a,
                              const float* target_z, float* logp, float* entropy, float* lse) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= T) return;
  LseF st{state_m[t], state_s[t], state_a[t]};
  float l = lse_value(st);
  lse[t] = l;
  logp[t] = target_z[t] - l;
  entropy[t] = lse_entropy(st);
}

__global__ void init_state_kernel(int T, float* state_m, float* state_s, float* state_a) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= T) return;
  state_m[t] = -INFINITY;
  state_s[t] = 0.f;
  state_a[t] = 0.f;
}

// z[t, j] (scaled logits of vocabulary v0 + j) becomes d loss / d raw logit.
__global__ void chunk_dz_kernel(float* z, int T, int width, int v0, const int32_t* targets, float inv_t,
                                const float* lse, const float* entropy, const float* dlogp, const float* dentropy) {
  size_t n = (size_t)T * width;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    int t = (int)(i / width), j = (int)(i % width);
    z[i] = dz_of(z[i], lse[t], entropy[t], v0 + j == targets[t], dlogp[t], dentropy ? dentropy[t] : 0.f) * inv_t;
  }
}

static void launch_gemm(int M, int N, int K, const float* A, int lda, int trans_a, const float* B, int ldb, int trans_b,
                        float* C, int ldc, float alpha, float beta) {
  dim3 grid(ceil_div((unsigned)N, kGemmTile), ceil_div((unsigned)M, kGemmTile));
  SIMT_LAUNCH(gemm_kernel, grid, dim3(kGemmTile, kGemmTile), 0, 0, M, N, K, A, lda, trans_a, B, ldb, trans_b, C, ldc,
              alpha, beta);
}

static unsigned row_threads(int width) { return width <= 256 ? 32 : width <= 4096 ? 128 : 256; }
static int chunk_width(int T, int V) { return recode_logprob_chunk_width(T, V); }

// The hidden-state passes' workspace: one device_alloc block of recode_logprob_workspace_bytes (so the
// allocator's statistics and the counting device of `recode plan` see it), freed on every way out.
struct HeadWorkspace {
  char* base = nullptr;
  size_t used = 0;
  int take(size_t bytes, char* err, size_t err_len) {
    void* p = nullptr;
    int rc = RECODE_SAME_LIBRARY(device_alloc)(bytes, &p, err, err_len);
    base = (char*)p;
    return rc;
  }
  template <class T>
  T* carve(size_t bytes) {
    T* p = (T*)(base + used);
    used += recode_align256(bytes);
    return p;
  }
  ~HeadWorkspace() {
    char e[256];
    if (base) RECODE_SAME_LIBRARY(device_free)(base, e, sizeof e);
  }
};

RECODE_API(logprob_logits_forward)(const float* logits, int T, int V, const int32_t* targets, float temperature,
                                   float* logp, float* entropy, float* lse, char* err, size_t err_len) {
  RECODE_API_TRY
  size_t n = (size_t)T * V;
  float *d_x, *d_lp, *d_ent, *d_lse;
  int32_t* d_tg;
  RECODE_CUDA_CHECK(cudaMalloc(&d_x, n * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_tg, T * sizeof(int32_t)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_lp, T * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_ent, T * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_lse, T * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMemcpy(d_x, logits, n * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_tg, targets, T * sizeof(int32_t), cudaMemcpyHostToDevice));
  SIMT_LAUNCH(logits_forward_kernel, dim3(T), dim3(row_threads(V)), 0, 0, d_x, V, d_tg, 1.f / temperature, d_lp, d_ent,
              d_lse);
  RECODE_CUDA_CHECK(cudaGetLastError());
  RECODE_CUDA_CHECK(cudaMemcpy(logp, d_lp, T * sizeof(float), cudaMemcpyDeviceToHost));
  RECODE_CUDA_CHECK(cudaMemcpy(entropy, d_ent, T * sizeof(float), cudaMemcpyDeviceToHost));
  RECODE_CUDA_CHECK(cudaMemcpy(lse, d_lse, T * sizeof(float), cudaMemcpyDeviceToHost));
  cudaFree(d_x);
  cudaFree(d_tg);
  cudaFree(d_lp);
  cudaFree(d_ent);
  cudaFree(d_lse);
  return 0;
  RECODE_API_CATCH
}

RECODE_API(logprob_logits_backward)(const float* logits, int T, int V, const int32_t* targets, float temperature,
                                    const float* lse, const float* entropy, const float* dlogp, const float* dentropy,
                                    float* dlogits, char* err, size_t err_len) {
  RECODE_API_TRY
  size_t n = (size_t)T * V;
  float *d_x, *d_dx, *d_lse, *d_ent, *d_dl, *d_de = nullptr;
  int32_t* d_tg;
  RECODE_CUDA_CHECK(cudaMalloc(&d_x, n * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_dx, n * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_tg, T * sizeof(int32_t)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_lse, T * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_ent, T * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_dl, T * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMemcpy(d_x, logits, n * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_tg, targets, T * sizeof(int32_t), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_lse, lse, T * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_ent, entropy, T * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_dl, dlogp, T * sizeof(float), cudaMemcpyHostToDevice));
  if (dentropy) {
    RECODE_CUDA_CHECK(cudaMalloc(&d_de, T * sizeof(float)));
    RECODE_CUDA_CHECK(cudaMemcpy(d_de, dentropy, T * sizeof(float), cudaMemcpyHostToDevice));
  }
  SIMT_LAUNCH(logits_backward_kernel, dim3(T), dim3(row_threads(V)), 0, 0, d_x, V, d_tg, 1.f / temperature, d_lse,
              d_ent, d_dl, d_de, d_dx);
  RECODE_CUDA_CHECK(cudaGetLastError());
  RECODE_CUDA_CHECK(cudaMemcpy(dlogits, d_dx, n * sizeof(float), cudaMemcpyDeviceToHost));
  cudaFree(d_x);
  cudaFree(d_dx);
  cudaFree(d_tg);
  cudaFree(d_lse);
  cudaFree(d_ent);
  cudaFree(d_dl);
  if (d_de) cudaFree(d_de);
  return 0;
  RECODE_API_CATCH
}

// The hidden-state passes on device-resident arrays (shared by the host-pointer entry points below and the
// device entry points the trainer calls). hidden and weight are fp32, or bf16 (dtype RECODE_BF16: tensor-core
// chunk GEMMs with fp32 logits; the backward rounds d/dlogits to bf16 for its two GEMMs; temperature 1 only).
// dhidden is fp32 and overwritten; dweight fp32 gets dW (beta_dw 0) or dW added (beta_dw 1).
static int check_head_dtype(int dtype, float temperature, char* err, size_t err_len) {
  if (dtype == RECODE_F32 || (dtype == RECODE_BF16 && temperature == 1.f)) return 0;
  if (err && err_len)
    snprintf(err, err_len, "logprob_hidden: dtype %d (must be RECODE_F32, or RECODE_BF16 with temperature 1)", dtype);
  return 1;
}

static int hidden_forward_on_device(const void* d_h, const void* d_w, int T, int H, int V, const int32_t* d_tg,
                                    float temperature, int dtype, float* d_lp, float* d_ent, float* d_lse, char* err,
                                    size_t err_len) {
  if (check_head_dtype(dtype, temperature, err, err_len)) return 1;
  const size_t es = dtype == RECODE_BF16 ? 2 : 4;
  const int width = chunk_width(T, V);
  HeadWorkspace ws;
  if (int rc = ws.take(recode_logprob_workspace_bytes(T, V, dtype, 0), err, err_len)) return rc;
  float* d_z = ws.carve<float>((size_t)T * width * sizeof(float));
  float* d_m = ws.carve<float>(T * sizeof(float));
  float* d_s = ws.carve<float>(T * sizeof(float));
  float* d_a = ws.carve<float>(T * sizeof(float));
  float* d_tz = ws.carve<float>(T * sizeof(float));
  SIMT_LAUNCH(init_state_kernel, dim3(ceil_div((unsigned)T, 256u)), dim3(256), 0, 0, T, d_m, d_s, d_a);
  const float inv_t = 1.f / temperature;
  for (int v0 = 0; v0 < V; v0 += width) {
    int w = V - v0 < width ? V - v0 : width;
    const void* wc = (const char*)d_w + (size_t)v0 * H * es;
    if (inv_t == 1.f) {  // z = hidden W_chunk^T
      int rc = RECODE_SAME_LIBRARY(gemm_forward)(T, w, H, d_h, wc, nullptr, d_z, dtype, RECODE_F32, 0, nullptr, err,
                                                 err_len);
      if (rc) return rc;
    } else {
      launch_gemm(T, w, H, (const float*)d_h, H, 0, (const float*)wc, H, 1, d_z, w, inv_t, 0.f);
    }
    SIMT_LAUNCH(chunk_fold_kernel, dim3(T), dim3(row_threads(w)), 0, 0, d_z, w, v0, d_tg, d_m, d_s, d_a, d_tz);
  }
  SIMT_LAUNCH(finish_kernel, dim3(ceil_div((unsigned)T, 256u)), dim3(256), 0, 0, T, d_m, d_s, d_a, d_tz, d_lp, d_ent,
              d_lse);
  RECODE_CUDA_CHECK(cudaGetLastError());
  return 0;
}

static int hidden_backward_on_device(const void* d_h, const void* d_w, int T, int H, int V, const int32_t* d_tg,
                                     float temperature, int dtype, const float* d_lse, const float* d_ent,
                                     const float* d_dl, const float* d_de, float* d_dh, float* d_dw, float beta_dw,
                                     char* err, size_t err_len) {
  if (check_head_dtype(dtype, temperature, err, err_len)) return 1;
  const size_t es = dtype == RECODE_BF16 ? 2 : 4;
  const int width = chunk_width(T, V);
  HeadWorkspace ws;
  if (int rc = ws.take(recode_logprob_workspace_bytes(T, V, dtype, 1), err, err_len)) return rc;
  float* d_z = ws.carve<float>((size_t)T * width * sizeof(float));
  void* d_zb = dtype == RECODE_BF16 ? ws.carve<void>((size_t)T * width * 2)
                                    : nullptr;  // bf16: d/dlogits rounded for the tensor-core GEMMs
  RECODE_CUDA_CHECK(cudaMemset(d_dh, 0, (size_t)T * H * sizeof(float)));
  const float inv_t = 1.f / temperature;
  for (int v0 = 0; v0 < V; v0 += width) {
    int w = V - v0 < width ? V - v0 : width;
    const void* wc = (const char*)d_w + (size_t)v0 * H * es;
    if (inv_t == 1.f) {  // z = hidden W_chunk^T
      int rc = RECODE_SAME_LIBRARY(gemm_forward)(T, w, H, d_h, wc, nullptr, d_z, dtype, RECODE_F32, 0, nullptr, err,
                                                 err_len);
      if (rc) return rc;
    } else {  // z = hidden W_chunk^T / temperature
      launch_gemm(T, w, H, (const float*)d_h, H, 0, (const float*)wc, H, 1, d_z, w, inv_t, 0.f);
    }
    size_t n = (size_t)T * w;
    unsigned blocks = (unsigned)((n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096);
    SIMT_LAUNCH(chunk_dz_kernel, dim3(blocks), dim3(256), 0, 0, d_z, T, w, v0, d_tg, inv_t, d_lse, d_ent, d_dl, d_de);
    const void* dz = d_z;
    int rc = 0;
    if (dtype == RECODE_BF16) {
      rc = RECODE_SAME_LIBRARY(cast_f32_to_bf16)(n, d_z, d_zb, nullptr, err, err_len);
      if (rc) return rc;
      dz = d_zb;
    }
    // dhidden += dz W_chunk;  dW_chunk (+)= dz^T hidden
    rc = RECODE_SAME_LIBRARY(gemm_backward_input)(T, w, H, dz, wc, d_dh, dtype, RECODE_F32, 1, nullptr, err, err_len);
    if (rc) return rc;
    if (d_dw) {  // NULL: a frozen head (adapter training) takes no weight gradient
      rc = RECODE_SAME_LIBRARY(gemm_backward_weight)(T, w, H, dz, d_h, d_dw + (size_t)v0 * H, nullptr, dtype,
                                                     RECODE_F32, beta_dw != 0.f, nullptr, err, err_len);
      if (rc) return rc;
    }
  }
  RECODE_CUDA_CHECK(cudaGetLastError());
  return 0;
}

RECODE_API(logprob_hidden_forward)(const float* hidden, const float* weight, int T, int H, int V,
                                   const int32_t* targets, float temperature, float* logp, float* entropy, float* lse,
                                   char* err, size_t err_len) {
  RECODE_API_TRY
  float *d_h, *d_w, *d_lp, *d_ent, *d_lse;
  int32_t* d_tg;
  RECODE_CUDA_CHECK(cudaMalloc(&d_h, (size_t)T * H * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_w, (size_t)V * H * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_lp, T * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_ent, T * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_lse, T * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_tg, T * sizeof(int32_t)));
  RECODE_CUDA_CHECK(cudaMemcpy(d_h, hidden, (size_t)T * H * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_w, weight, (size_t)V * H * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_tg, targets, T * sizeof(int32_t), cudaMemcpyHostToDevice));
  int rc = hidden_forward_on_device(d_h, d_w, T, H, V, d_tg, temperature, RECODE_F32, d_lp, d_ent, d_lse, err, err_len);
  if (rc) return rc;
  RECODE_CUDA_CHECK(cudaMemcpy(logp, d_lp, T * sizeof(float), cudaMemcpyDeviceToHost));
  RECODE_CUDA_CHECK(cudaMemcpy(entropy, d_ent, T * sizeof(float), cudaMemcpyDeviceToHost));
  RECODE_CUDA_CHECK(cudaMemcpy(lse, d_lse, T * sizeof(float), cudaMemcpyDeviceToHost));
  cudaFree(d_h);
  cudaFree(d_w);
  cudaFree(d_lp);
  cudaFree(d_ent);
  cudaFree(d_lse);
  cudaFree(d_tg);
  return 0;
  RECODE_API_CATCH
}

RECODE_API(logprob_hidden_backward)(const float* hidden, const float* weight, int T, int H, int V,
                                    const int32_t* targets, float temperature, const float* lse, const float* entropy,
                                    const float* dlogp, const float* dentropy, float* dhidden, float* dweight,
                                    char* err, size_t err_len) {
  RECODE_API_TRY
  float *d_h, *d_w, *d_dh, *d_dw, *d_lse, *d_ent, *d_dl, *d_de = nullptr;
  int32_t* d_tg;
  RECODE_CUDA_CHECK(cudaMalloc(&d_h, (size_t)T * H * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_w, (size_t)V * H * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_dh, (size_t)T * H * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_dw, (size_t)V * H * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_lse, T * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_ent, T * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_dl, T * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_tg, T * sizeof(int32_t)));
  RECODE_CUDA_CHECK(cudaMemcpy(d_h, hidden, (size_t)T * H * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_w, weight, (size_t)V * H * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_lse, lse, T * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_ent, entropy, T * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_dl, dlogp, T * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_tg, targets, T * sizeof(int32_t), cudaMemcpyHostToDevice));
  if (dentropy) {
    RECODE_CUDA_CHECK(cudaMalloc(&d_de, T * sizeof(float)));
    RECODE_CUDA_CHECK(cudaMemcpy(d_de, dentropy, T * sizeof(float), cudaMemcpyHostToDevice));
  }
  int rc = hidden_backward_on_device(d_h, d_w, T, H, V, d_tg, temperature, RECODE_F32, d_lse, d_ent, d_dl, d_de, d_dh,
                                     d_dw, 0.f, err, err_len);
  if (rc) return rc;
  RECODE_CUDA_CHECK(cudaMemcpy(dhidden, d_dh, (size_t)T * H * sizeof(float), cudaMemcpyDeviceToHost));
  RECODE_CUDA_CHECK(cudaMemcpy(dweight, d_dw, (size_t)V * H * sizeof(float), cudaMemcpyDeviceToHost));
  cudaFree(d_h);
  cudaFree(d_w);
  cudaFree(d_dh);
  cudaFree(d_dw);
  cudaFree(d_lse);
  cudaFree(d_ent);
  cudaFree(d_dl);
  cudaFree(d_tg);
  if (d_de) cudaFree(d_de);
  return 0;
  RECODE_API_CATCH
}

// Device-resident variants (every pointer is device memory, e.g. the trainer's activations and weights): the
// same results without host copies. hidden [T, H] and weight [V, H] in `dtype` (RECODE_F32, or RECODE_BF16 with
// temperature 1); dhidden fp32 overwritten, dweight fp32 ADDED to (gradient accumulation).
RECODE_API(logprob_hidden_forward_device)(const void* hidden, const void* weight, int T, int H, int V,
                                          const int32_t* targets, float temperature, int dtype, float* logp,
                                          float* entropy, float* lse, char* err, size_t err_len) {
  RECODE_API_TRY
  if (T <= 0) return 0;
  return hidden_forward_on_device(hidden, weight, T, H, V, targets, temperature, dtype, logp, entropy, lse, err,
                                  err_len);
  RECODE_API_CATCH
}

RECODE_API(logprob_hidden_backward_device)(const void* hidden, const void* weight, int T, int H, int V,
                                           const int32_t* targets, float temperature, int dtype, const float* lse,
                                           const float* entropy, const float* dlogp, const float* dentropy,
                                           float* dhidden, float* dweight_accumulate, char* err, size_t err_len) {
  RECODE_API_TRY
  if (T <= 0) return 0;
  return hidden_backward_on_device(hidden, weight, T, H, V, targets, temperature, dtype, lse, entropy, dlogp, dentropy,
                                   dhidden, dweight_accumulate, 1.f, err, err_len);
  RECODE_API_CATCH
}
