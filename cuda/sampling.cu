// Sampling kernel: one thread block per row of logits, block-wide reductions (warp shuffles + shared
// memory, no CUB). Implements exactly the definition in src/sampling/sampling.h with the arithmetic of
// cuda/sampling_core.h, so for the same (seed, row_id, step) it picks the same token as the CPU code:
//   pass 1  max, first argmax, first NaN / +inf (block reductions);
//   pass 2  top-k: 4-level radix select on ordered keys, 256-bucket count histogram in shared memory;
//   pass 3  total mass in 2^-43 units (+ level-0 mass histogram for top-p);
//   pass 4  top-p: radix levels 1-3 on the mass;
//   pass 5  kept mass, then the inverse-CDF pick: tiles of blockDim * kPickItems tokens, a block-wide
//           prefix sum of the kept units, stopping at the tile that crosses the target.
// Integer masses make every reduction order give the same answer.
#include "common.cuh"
#include "recode_sampling.h"
#include "sampling_core.h"

using u64 = unsigned long long;
using namespace recode::sampling;

constexpr int kPickItems = 4;

__device__ __forceinline__ float load_logit(const float* x, int i) { return x[i]; }
__device__ __forceinline__ float load_logit(const bf16* x, int i) { return to_float(x[i]); }

// Block-wide reductions. Every thread calls them (they contain __syncthreads) and gets the result.
__device__ float block_max(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = scratch[0];
  for (unsigned w = 1; w < nwarps; ++w) r = fmaxf(r, scratch[w]);
  return r;
}

__device__ int block_min_int(int v, int* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
  unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  int r = scratch[0];
  for (unsigned w = 1; w < nwarps; ++w) r = min(r, scratch[w]);
  return r;
}

__device__ u64 block_sum_u64(u64 v, u64* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  u64 r = 0;
  for (unsigned w = 0; w < nwarps; ++w) r += scratch[w];
  return r;
}

// Inclusive prefix sum over the block (thread order); *total receives the block's sum.
__device__ u64 block_inclusive_scan_u64(u64 v, u64* scratch, u64* total) {
  unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  for (int d = 1; d < 32; d <<= 1) {
    u64 up = __shfl_up_sync(0xffffffffu, v, d);
    if ((int)lane >= d) v += up;
  }
  __syncthreads();
  if (lane == 31) scratch[warp] = v;
  __syncthreads();
  u64 before = 0, all = 0;
  for (unsigned w = 0; w < nwarps; ++w) {
    if (w < warp) before += scratch[w];
    all += scratch[w];
  }
  *total = all;
  return before + v;
}

template <class T>
__device__ __forceinline__ u64 units_of(const T* x, int i, float xmax, float inv_t) {
  return (u64)weight_units(sampling_weight((load_logit(x, i) - xmax) * inv_t));
}

template <class T>
__global__ void sample_kernel(const T* logits, int vocab, const float* temperature, const int* top_k,
                              const float* top_p, const float* min_p, u64 seed, const u64* row_ids, const u64* steps,
                              int32_t* tokens, float* logprobs, float* filtered_logprobs, int32_t* row_status,
                              int32_t* bad_index) {
  __shared__ float f_scratch[32];
  __shared__ int i_scratch[32];
  __shared__ u64 u_scratch[32];
  __shared__ u64 mass_hist[256];
  __shared__ unsigned count_hist[256];
  __shared__ unsigned s_prefix;
  __shared__ int s_token;

  const int row = blockIdx.x;
  const T* x = logits + (size_t)row * vocab;
  const unsigned tid = threadIdx.x, nthreads = blockDim.x;

  // ---- pass 1: max, first argmax, first NaN / +inf ----
  float local_max = -INFINITY;
  int first_nan = vocab, first_pinf = vocab;
  for (int i = tid; i < vocab; i += nthreads) {
    float v = load_logit(x, i);
    if (v != v)
      first_nan = min(first_nan, i);
    else if (v == INFINITY)
      first_pinf = min(first_pinf, i);
    else
      local_max = fmaxf(local_max, v);
  }
  const float xmax = block_max(local_max, f_scratch);
  first_nan = block_min_int(first_nan, i_scratch);
  first_pinf = block_min_int(first_pinf, i_scratch);
  int status = first_nan < vocab    ? kRowNaN
               : first_pinf < vocab ? kRowPosInf
               : xmax == -INFINITY  ? kRowAllNegInf
                                    : kRowOk;
  if (status != kRowOk) {
    if (tid == 0) {
      row_status[row] = status;
      bad_index[row] = status == kRowNaN ? first_nan : status == kRowPosInf ? first_pinf : -1;
      tokens[row] = -1;
      logprobs[row] = NAN;
      filtered_logprobs[row] = NAN;
    }
    return;
  }
  const float temp = temperature[row];
  if (temp == 0.f) {  // greedy: the first argmax; log-probability under the untempered softmax
    int local_arg = vocab;
    for (int i = tid; i < vocab; i += nthreads)
      if (load_logit(x, i) == xmax) {
        local_arg = i;
        break;
      }
    const int argmax = block_min_int(local_arg, i_scratch);
    u64 local = 0;
    for (int i = tid; i < vocab; i += nthreads) local += units_of(x, i, xmax, 1.f);
    u64 total = block_sum_u64(local, u_scratch);
    if (tid == 0) {
      row_status[row] = kRowOk;
      bad_index[row] = -1;
      tokens[row] = argmax;
      logprobs[row] = (float)(0.0 - log_mass(total));
      filtered_logprobs[row] = 0.f;
    }
    return;
  }
  const float inv_t = 1.f / temp;
  const int k = top_k[row];
  const float p = top_p[row], mp = min_p[row];
  const bool need_k = k > 0 && k < vocab, need_p = p<1.f, need_m = mp> 0.f;

  // ---- pass 2: top-k threshold (the k-th largest key) ----
  unsigned tau = 0;
  if (need_k) {
    unsigned prefix = 0;
    long long above = 0;
    for (int level = 0; level < 4; ++level) {
      int shift = 24 - 8 * level;
      for (unsigned b = tid; b < 256; b += nthreads) count_hist[b] = 0;
      __syncthreads();
      for (int i = tid; i < vocab; i += nthreads) {
        unsigned key = order_key(load_logit(x, i));
        if (level == 0 || (key >> (shift + 8)) == (prefix >> (shift + 8)))
          atomicAdd(&count_hist[(key >> shift) & 255u], 1u);
      }
      __syncthreads();
      if (tid == 0) {
        int b = 255;
        for (; b > 0; --b) {
          if (above + (long long)count_hist[b] >= k) break;
          above += count_hist[b];
        }
        s_prefix = prefix | ((unsigned)b << shift);
      }
      __syncthreads();
      prefix = s_prefix;  // `above` is only tracked by thread 0, which does the walks
    }
    tau = prefix;
  }

  // ---- pass 3: total mass (+ level-0 mass histogram over the top-k set for top-p) ----
  if (need_p) {
    for (unsigned b = tid; b < 256; b += nthreads) mass_hist[b] = 0;
    __syncthreads();
  }
  u64 local_total = 0;
  for (int i = tid; i < vocab; i += nthreads) {
    float v = load_logit(x, i);
    u64 q = (u64)weight_units(sampling_weight((v - xmax) * inv_t));
    local_total += q;
    if (need_p) {
      unsigned key = order_key(v);
      if (key >= tau && q) atomicAdd(&mass_hist[key >> 24], q);
    }
  }
  const u64 total = block_sum_u64(local_total, u_scratch);

  // ---- pass 4: top-p threshold ----
  if (need_p) {
    __syncthreads();
    u64 topk_total = 0;
    for (int b = 0; b < 256; ++b) topk_total += mass_hist[b];
    const double target = (double)p * (double)topk_total;
    unsigned prefix = 0;
    u64 above = 0;  // meaningful on thread 0
    for (int level = 0; level < 4; ++level) {
      int shift = 24 - 8 * level;
      if (level > 0) {
        __syncthreads();
        for (unsigned b = tid; b < 256; b += nthreads) mass_hist[b] = 0;
        __syncthreads();
        for (int i = tid; i < vocab; i += nthreads) {
          unsigned key = order_key(load_logit(x, i));
          if (key < tau || (key >> (shift + 8)) != (prefix >> (shift + 8))) continue;
          u64 q = units_of(x, i, xmax, inv_t);
          if (q) atomicAdd(&mass_hist[(key >> shift) & 255u], q);
        }
        __syncthreads();
      }
      if (tid == 0) {
        int b = 255;
        for (; b > 0; --b) {
          if ((double)(above + mass_hist[b]) >= target) break;
          above += mass_hist[b];
        }
        s_prefix = prefix | ((unsigned)b << shift);
      }
      __syncthreads();
      prefix = s_prefix;
    }
    tau = prefix < tau ? tau : prefix;
  }

  // ---- pass 5: kept mass, then the pick ----
  u64 kept_total = total;
  if (need_k || need_p || need_m) {
    u64 local = 0;
    for (int i = tid; i < vocab; i += nthreads) {
      float v = load_logit(x, i);
      if (order_key(v) < tau) continue;  // cheap test first
      float w = sampling_weight((v - xmax) * inv_t);
      if (!need_m || w >= mp) local += (u64)weight_units(w);
    }
    kept_total = block_sum_u64(local, u_scratch);
  }
  const u64 target = (u64)recode::philox::scale64(recode::philox::random64(seed, row_ids[row], steps[row]), kept_total);

  if (tid == 0) s_token = -1;
  __syncthreads();
  u64 running = 0;
  const int tile = (int)nthreads * kPickItems;
  for (int base = 0; base < vocab; base += tile) {
    u64 q[kPickItems];
    u64 mine = 0;
    for (int j = 0; j < kPickItems; ++j) {
      int i = base + (int)tid * kPickItems + j;
      q[j] = 0;
      if (i < vocab) {
        float v = load_logit(x, i);
        if (order_key(v) >= tau) {
          float w = sampling_weight((v - xmax) * inv_t);
          if (!need_m || w >= mp) q[j] = (u64)weight_units(w);
        }
      }
      mine += q[j];
    }
    u64 tile_total;
    u64 incl = block_inclusive_scan_u64(mine, u_scratch, &tile_total);
    u64 cum = running + incl - mine;  // mass before this thread's items
    if (mine && cum <= target && cum + mine > target) {
      for (int j = 0; j < kPickItems; ++j) {
        cum += q[j];
        if (cum > target) {
          s_token = base + (int)tid * kPickItems + j;
          break;
        }
      }
    }
    running += tile_total;
    __syncthreads();
    if (s_token >= 0) break;
  }

  if (tid == 0) {
    int token = s_token >= 0 ? s_token : 0;  // s_token is always set: target < kept_total
    double t_tok = (double)((load_logit(x, token) - xmax) * inv_t);
    row_status[row] = kRowOk;
    bad_index[row] = -1;
    tokens[row] = token;
    logprobs[row] = (float)(t_tok - log_mass(total));
    filtered_logprobs[row] = (float)(t_tok - log_mass(kept_total));
  }
}

#if defined(__CUDACC__)
#define SAMPLE_ROWS_DEVICE recode_cuda_sample_rows_device
#else
#define SAMPLE_ROWS_DEVICE recode_emu_sample_rows_device
#endif

// Launches the kernel on device buffers (no copies): the entry point for callers whose logits already live
// on the GPU (the generation loop). All pointers are device pointers; runs on `stream`.
RECODE_API(sample_rows_device)(const void* d_logits, int is_bf16, int rows, int vocab, const float* d_temp,
                               const int* d_top_k, const float* d_top_p, const float* d_min_p, uint64_t seed,
                               const uint64_t* d_rows, const uint64_t* d_steps, int32_t* d_tokens, float* d_lp,
                               float* d_flp, int32_t* d_status, int32_t* d_bad, void* stream, char* err,
                               size_t err_len) {
  RECODE_API_TRY
  if (rows <= 0 || vocab <= 0 || vocab > kMaxVocab) {
    snprintf(err, err_len, "sample_rows_device: bad sizes rows=%d vocab=%d", rows, vocab);
    return 1;
  }
  // Enough threads that each handles ~16 tokens per pass, as a multiple of 32, at most 1024.
  unsigned threads = ceil_div((unsigned)vocab, 16u);
  threads = threads < 32 ? 32 : threads > 1024 ? 1024 : ceil_div(threads, 32u) * 32;
  cudaStream_t s = (cudaStream_t)stream;
  (void)s;  // unused by the emulation, whose launches are synchronous
  if (is_bf16)
    SIMT_LAUNCH(sample_kernel<bf16>, dim3(rows), dim3(threads), 0, s, (const bf16*)d_logits, vocab, d_temp, d_top_k,
                d_top_p, d_min_p, (u64)seed, (const u64*)d_rows, (const u64*)d_steps, d_tokens, d_lp, d_flp, d_status,
                d_bad);
  else
    SIMT_LAUNCH(sample_kernel<float>, dim3(rows), dim3(threads), 0, s, (const float*)d_logits, vocab, d_temp, d_top_k,
                d_top_p, d_min_p, (u64)seed, (const u64*)d_rows, (const u64*)d_steps, d_tokens, d_lp, d_flp, d_status,
                d_bad);
  RECODE_CUDA_CHECK(cudaGetLastError());
  return 0;
  RECODE_API_CATCH
}

// logits: rows x vocab, fp32 or bf16 (is_bf16); parameters per row; row_status / bad_index per row
// (kRowOk, or the first NaN / +inf index, or an all -inf row).
RECODE_API(sample_rows)(const void* logits, int is_bf16, int rows, int vocab, const float* temperature,
                        const int* top_k, const float* top_p, const float* min_p, uint64_t seed,
                        const uint64_t* row_ids, const uint64_t* steps, int32_t* tokens, float* logprobs,
                        float* filtered_logprobs, int32_t* row_status, int32_t* bad_index, char* err, size_t err_len) {
  RECODE_API_TRY
  if (rows <= 0 || vocab <= 0 || vocab > kMaxVocab) {
    snprintf(err, err_len, "sample_rows: bad sizes rows=%d vocab=%d", rows, vocab);
    return 1;
  }
  size_t elem = is_bf16 ? 2 : 4;
  size_t n = (size_t)rows * vocab;
  void* d_logits;
  float *d_temp, *d_top_p, *d_min_p, *d_lp, *d_flp;
  int* d_top_k;
  u64 *d_rows, *d_steps;
  int32_t *d_tokens, *d_status, *d_bad;
  RECODE_CUDA_CHECK(cudaMalloc(&d_logits, n * elem));
  RECODE_CUDA_CHECK(cudaMalloc(&d_temp, rows * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_top_p, rows * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_min_p, rows * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_lp, rows * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_flp, rows * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_top_k, rows * sizeof(int)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_rows, rows * sizeof(u64)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_steps, rows * sizeof(u64)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_tokens, rows * sizeof(int32_t)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_status, rows * sizeof(int32_t)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_bad, rows * sizeof(int32_t)));
  RECODE_CUDA_CHECK(cudaMemcpy(d_logits, logits, n * elem, cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_temp, temperature, rows * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_top_p, top_p, rows * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_min_p, min_p, rows * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_top_k, top_k, rows * sizeof(int), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_rows, row_ids, rows * sizeof(u64), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_steps, steps, rows * sizeof(u64), cudaMemcpyHostToDevice));
  {
    int rc = SAMPLE_ROWS_DEVICE(d_logits, is_bf16, rows, vocab, d_temp, d_top_k, d_top_p, d_min_p, seed,
                                (const uint64_t*)d_rows, (const uint64_t*)d_steps, d_tokens, d_lp, d_flp, d_status,
                                d_bad, nullptr, err, err_len);
    if (rc != 0) return rc;
  }
  RECODE_CUDA_CHECK(cudaGetLastError());
  RECODE_CUDA_CHECK(cudaMemcpy(tokens, d_tokens, rows * sizeof(int32_t), cudaMemcpyDeviceToHost));
  RECODE_CUDA_CHECK(cudaMemcpy(logprobs, d_lp, rows * sizeof(float), cudaMemcpyDeviceToHost));
  RECODE_CUDA_CHECK(cudaMemcpy(filtered_logprobs, d_flp, rows * sizeof(float), cudaMemcpyDeviceToHost));
  RECODE_CUDA_CHECK(cudaMemcpy(row_status, d_status, rows * sizeof(int32_t), cudaMemcpyDeviceToHost));
  RECODE_CUDA_CHECK(cudaMemcpy(bad_index, d_bad, rows * sizeof(int32_t), cudaMemcpyDeviceToHost));
  cudaFree(d_logits);
  cudaFree(d_temp);
  cudaFree(d_top_p);
  cudaFree(d_min_p);
  cudaFree(d_lp);
  cudaFree(d_flp);
  cudaFree(d_top_k);
  cudaFree(d_rows);
  cudaFree(d_steps);
  cudaFree(d_tokens);
  cudaFree(d_status);
  cudaFree(d_bad);
  return 0;
  RECODE_API_CATCH
}
