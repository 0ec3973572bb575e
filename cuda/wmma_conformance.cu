// Conformance kernel for the wmma emulation (src/simt/simt_wmma.h): one warp per layout combination computes
// D = alpha * (A B + C) with A, B bf16 and C, D fp32 in every combination of row/col-major A, B, C (load) and D
// (store), scaling D elementwise through the fragment (the one kind of element access portable code may use).
// The test suite compares the results with host arithmetic, emulated and, when a GPU is lent, on hardware, so
// the emulation is held to the tensor cores' behaviour.
#include "ops_util.cuh"
#include "recode_conformance.h"

#if defined(__CUDACC__)
#include <mma.h>
#else
#include "simt/simt_wmma.h"
#endif

namespace {

template <class LA, class LB>
__device__ void wmma_conformance_case(const bf16* a, const bf16* b, const float* c, float* d, int c_col, int d_col,
                                      float alpha) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, LA> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, LB> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::load_matrix_sync(fc, c, 16, c_col ? wmma::mem_col_major : wmma::mem_row_major);
  wmma::mma_sync(fc, fa, fb, fc);
  for (int i = 0; i < fc.num_elements; ++i) fc.x[i] *= alpha;
  wmma::store_matrix_sync(d, fc, 16, d_col ? wmma::mem_col_major : wmma::mem_row_major);
}

// blockIdx.x = variant: bit 0 A col-major, bit 1 B col-major, bit 2 C col-major, bit 3 D col-major.
__global__ void wmma_conformance_kernel(const bf16* a, const bf16* b, const float* c, float* out, float alpha) {
  using namespace nvcuda;
  int variant = blockIdx.x;
  float* d = out + variant * 256;
  int c_col = (variant >> 2) & 1, d_col = (variant >> 3) & 1;
  switch (variant & 3) {
    case 0:
      wmma_conformance_case<wmma::row_major, wmma::row_major>(a, b, c, d, c_col, d_col, alpha);
      break;
    case 1:
      wmma_conformance_case<wmma::col_major, wmma::row_major>(a, b, c, d, c_col, d_col, alpha);
      break;
    case 2:
      wmma_conformance_case<wmma::row_major, wmma::col_major>(a, b, c, d, c_col, d_col, alpha);
      break;
    default:
      wmma_conformance_case<wmma::col_major, wmma::col_major>(a, b, c, d, c_col, d_col, alpha);
      break;
  }
}

}  // namespace

// a, b: 256 bf16 each; c: 256 floats; out: 16 x 256 floats (one tile per variant). Host pointers.
RECODE_API(wmma_conformance)(const void* a, const void* b, const float* c, float* out, float alpha, char* err,
                             size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE(a && b && c && out, "wmma_conformance", "NULL pointer");
  bf16 *d_a, *d_b;
  float *d_c, *d_out;
  RECODE_CUDA_CHECK(cudaMalloc(&d_a, 256 * sizeof(bf16)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_b, 256 * sizeof(bf16)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_c, 256 * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_out, 16 * 256 * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMemcpy(d_a, a, 256 * sizeof(bf16), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_b, b, 256 * sizeof(bf16), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_c, c, 256 * sizeof(float), cudaMemcpyHostToDevice));
  SIMT_LAUNCH(wmma_conformance_kernel, dim3(16), dim3(32), 0, 0, d_a, d_b, d_c, d_out, alpha);
  RECODE_LAUNCH_CHECK();
  RECODE_CUDA_CHECK(cudaMemcpy(out, d_out, 16 * 256 * sizeof(float), cudaMemcpyDeviceToHost));
  cudaFree(d_a);
  cudaFree(d_b);
  cudaFree(d_c);
  cudaFree(d_out);
  return 0;
  RECODE_API_CATCH
}
