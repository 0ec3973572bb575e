// Conformance kernels for the SIMT emulation: each exercises one mechanism kernels rely on (shared memory
// with __syncthreads, warp shuffles, ballots, atomics, dynamic shared memory, multi-dimensional indices).
// The test suite runs them emulated and, when a GPU is lent, on the GPU, and checks both against plain
// host arithmetic, so the emulation is held to the hardware's behaviour.
#include "common.cuh"
#include "recode_conformance.h"

// out[block] = sum of in[block * blockDim.x .. +blockDim.x) via shared-memory tree + warp shuffle.
__global__ void block_sum_kernel(const int* in, int n, int* block_sums) {
  __shared__ int warp_totals[32];
  unsigned tid = threadIdx.x;
  unsigned i = blockIdx.x * blockDim.x + tid;
  int v = i < (unsigned)n ? in[i] : 0;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (tid % 32 == 0) warp_totals[tid / 32] = v;
  __syncthreads();
  if (tid < 32) {
    unsigned nwarps = (blockDim.x + 31) / 32;
    int w = tid < nwarps ? warp_totals[tid] : 0;
    for (int offset = 16; offset > 0; offset >>= 1) w += __shfl_xor_sync(0xffffffffu, w, offset);
    if (tid == 0) block_sums[blockIdx.x] = w;
  }
}

// Inclusive scan within each warp (shfl_up), ballot of odd values, and a global histogram by atomics.
__global__ void warp_ops_kernel(const int* in, int n, int* scan, unsigned* ballots, int* histogram, int bins) {
  unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  int v = i < (unsigned)n ? in[i] : 0;
  unsigned lane = threadIdx.x % 32;
  int s = v;
  for (int d = 1; d < 32; d <<= 1) {
    int up = __shfl_up_sync(0xffffffffu, s, d);
    if ((int)lane >= d) s += up;
  }
  unsigned odd = __ballot_sync(0xffffffffu, v & 1);
  if (i < (unsigned)n) {
    scan[i] = s;
    atomicAdd(&histogram[((v % bins) + bins) % bins], 1);
  }
  if (lane == 0) ballots[i / 32] = odd;
}

// Reverses each block's slice through dynamic shared memory; 2-D block indices.
__global__ void reverse_kernel(const float* in, float* out, int n) {
  SIMT_DYNAMIC_SHARED(float, tile);
  unsigned t = threadIdx.y * blockDim.x + threadIdx.x;
  unsigned per_block = blockDim.x * blockDim.y;
  unsigned base = blockIdx.x * per_block;
  if (base + t < (unsigned)n) tile[t] = in[base + t];
  __syncthreads();
  unsigned count = min(per_block, (unsigned)n - base);
  if (t < count) out[base + t] = tile[count - 1 - t];
}

RECODE_API(simt_conformance)(const int* in, int n, int block, int* block_sums, int* scan, unsigned* ballots,
                             int* histogram, int bins, const float* fin, float* fout, char* err, size_t err_len) {
  RECODE_API_TRY
  if (n <= 0 || block <= 0 || block > 1024 || block % 32 != 0 || bins <= 0) {
    snprintf(err, err_len, "simt_conformance: bad arguments");
    return 1;
  }
  int *d_in, *d_sums, *d_scan, *d_hist;
  unsigned* d_ballots;
  float *d_fin, *d_fout;
  unsigned grid = ceil_div((unsigned)n, (unsigned)block);
  RECODE_CUDA_CHECK(cudaMalloc(&d_in, n * sizeof(int)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_sums, grid * sizeof(int)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_scan, n * sizeof(int)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_ballots, ceil_div((unsigned)n, 32u) * 32 * sizeof(unsigned)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_hist, bins * sizeof(int)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_fin, n * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_fout, n * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMemcpy(d_in, in, n * sizeof(int), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_fin, fin, n * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemset(d_hist, 0, bins * sizeof(int)));
  SIMT_LAUNCH(block_sum_kernel, dim3(grid), dim3(block), 0, 0, d_in, n, d_sums);
  RECODE_CUDA_CHECK(cudaGetLastError());
  SIMT_LAUNCH(warp_ops_kernel, dim3(grid), dim3(block), 0, 0, d_in, n, d_scan, d_ballots, d_hist, bins);
  RECODE_CUDA_CHECK(cudaGetLastError());
  // 2-D blocks of (block/4) x 4 threads.
  SIMT_LAUNCH(reverse_kernel, dim3(grid), dim3(block / 4, 4), block * sizeof(float), 0, d_fin, d_fout, n);
  RECODE_CUDA_CHECK(cudaGetLastError());
  RECODE_CUDA_CHECK(cudaMemcpy(block_sums, d_sums, grid * sizeof(int), cudaMemcpyDeviceToHost));
  RECODE_CUDA_CHECK(cudaMemcpy(scan, d_scan, n * sizeof(int), cudaMemcpyDeviceToHost));
  RECODE_CUDA_CHECK(
      cudaMemcpy(ballots, d_ballots, ceil_div((unsigned)n, 32u) * sizeof(unsigned), cudaMemcpyDeviceToHost));
  RECODE_CUDA_CHECK(cudaMemcpy(histogram, d_hist, bins * sizeof(int), cudaMemcpyDeviceToHost));
  RECODE_CUDA_CHECK(cudaMemcpy(fout, d_fout, n * sizeof(float), cudaMemcpyDeviceToHost));
  cudaFree(d_in);
  cudaFree(d_sums);
  cudaFree(d_scan);
  cudaFree(d_ballots);
  cudaFree(d_hist);
  cudaFree(d_fin);
  cudaFree(d_fout);
  return 0;
  RECODE_API_CATCH
}
