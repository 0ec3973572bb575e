// The GEMM micro-kernel contract shared by gemm.cpp (driver + portable kernel) and gemm_avx2.cpp:
// C[0..mr, 0..nr) (+)= sum_k a[k*kMR + r] * b[k*kPanel + j] over kc steps; a is a packed A panel of kMR
// rows, b a packed panel of kPanel columns; C is row-major with leading dimension ldc.
#pragma once

#include <cstdint>

namespace recode::ops {

constexpr int kMR = 6;  // rows per micro-tile: 6 x 16 fp32 = 12 AVX2 accumulators

using GemmKernel = void (*)(int mr, int nr, int kc, const float* a, const float* b, float* c, int64_t ldc,
                            bool accumulate);
void gemm_kernel_avx2(int mr, int nr, int kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate);
// The same with B panels of bfloat16 bits.
using GemmKernelBf16 = void (*)(int mr, int nr, int kc, const float* a, const uint16_t* b, float* c, int64_t ldc,
                                bool accumulate);
void gemm_kernel_bf16_avx2(int mr, int nr, int kc, const float* a, const uint16_t* b, float* c, int64_t ldc,
                           bool accumulate);

}  // namespace recode::ops
