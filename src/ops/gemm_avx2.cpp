// AVX2+FMA GEMM micro-kernel (compiled with -mavx2 -mfma; entered only after the run-time check in gemm.cpp).
// A 6 x 16 tile of C lives in 12 ymm accumulators; each k step broadcasts 6 values of A and loads two
// vectors of B: 12 FMAs per 2 loads + 6 broadcasts, enough to keep both FMA pipes busy.
#include <immintrin.h>

#include <algorithm>

#include "ops/gemm_kernel.h"
#include "ops/ops.h"

namespace recode::ops {

// Accumulators are named variables (not arrays) so the compiler keeps all 12 in registers; rows beyond MR
// are compiled out.
// 16 B values of one k step as two float32 vectors: loaded directly, or widened from bfloat16 bits.
static inline void load_b(const float* b, __m256& b0, __m256& b1) {
  b0 = _mm256_loadu_ps(b);
  b1 = _mm256_loadu_ps(b + 8);
}
static inline void load_b(const uint16_t* b, __m256& b0, __m256& b1) {
  __m256i raw = _mm256_loadu_si256((const __m256i*)b);
  b0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(raw)), 16));
  b1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(raw, 1)), 16));
}

template <int MR, class BT>
static void tile(int nr, int kc, const float* a, const BT* b, float* c, int64_t ldc, bool accumulate) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int k = 0; k < kc; ++k) {
    __m256 b0, b1, av;
    load_b(b, b0, b1);
#define RECODE_ROW(r)                             \
  do {                                            \
    if constexpr (MR > r) {                       \
      av = _mm256_broadcast_ss(a + r);            \
      c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0); \
      c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1); \
    }                                             \
  } while (0)
    RECODE_ROW(0);
    RECODE_ROW(1);
    RECODE_ROW(2);
    RECODE_ROW(3);
    RECODE_ROW(4);
    RECODE_ROW(5);
#undef RECODE_ROW
    a += kMR;
    b += kPanel;
  }
  __m256 rows[kMR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (nr == kPanel) {
    for (int r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
      __m256 lo = rows[r][0], hi = rows[r][1];
      if (accumulate) {
        lo = _mm256_add_ps(lo, _mm256_loadu_ps(cr));
        hi = _mm256_add_ps(hi, _mm256_loadu_ps(cr + 8));
      }
      _mm256_storeu_ps(cr, lo);
      _mm256_storeu_ps(cr + 8, hi);
    }
  } else {  // right edge: spill the tile and copy the valid columns
    alignas(32) float buf[kPanel];
    for (int r = 0; r < MR; ++r) {
      _mm256_store_ps(buf, rows[r][0]);
      _mm256_store_ps(buf + 8, rows[r][1]);
      float* cr = c + r * ldc;
      for (int j = 0; j < nr; ++j) cr[j] = accumulate ? cr[j] + buf[j] : buf[j];
    }
  }
}

template <class BT>
static void dispatch(int mr, int nr, int kc, const float* a, const BT* b, float* c, int64_t ldc, bool accumulate) {
  switch (mr) {
    case 6:
      tile<6>(nr, kc, a, b, c, ldc, accumulate);
      break;
    case 5:
      tile<5>(nr, kc, a, b, c, ldc, accumulate);
      break;
    case 4:
      tile<4>(nr, kc, a, b, c, ldc, accumulate);
      break;
    case 3:
      tile<3>(nr, kc, a, b, c, ldc, accumulate);
      break;
    case 2:
      tile<2>(nr, kc, a, b, c, ldc, accumulate);
      break;
    default:
      tile<1>(nr, kc, a, b, c, ldc, accumulate);
      break;
  }
}

void gemm_kernel_avx2(int mr, int nr, int kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate) {
  dispatch(mr, nr, kc, a, b, c, ldc, accumulate);
}

void gemm_kernel_bf16_avx2(int mr, int nr, int kc, const float* a, const uint16_t* b, float* c, int64_t ldc,
                           bool accumulate) {
  dispatch(mr, nr, kc, a, b, c, ldc, accumulate);
}

}  // namespace recode::ops

namespace recode::ops {

// Peak probe for the benchmark: 12 independent FMA chains (enough to cover 2 pipes x 4-5 cycles latency),
// no memory traffic. Returns the flops executed (2 x 8 lanes per FMA); the caller times it.
double fma_peak_probe_avx2(int64_t iterations) {
  __m256 a0 = _mm256_set1_ps(1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0,
         a10 = a0, a11 = a0;
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iterations; ++i) {
    a0 = _mm256_fmadd_ps(a0, m, c);
    a1 = _mm256_fmadd_ps(a1, m, c);
    a2 = _mm256_fmadd_ps(a2, m, c);
    a3 = _mm256_fmadd_ps(a3, m, c);
    a4 = _mm256_fmadd_ps(a4, m, c);
    a5 = _mm256_fmadd_ps(a5, m, c);
    a6 = _mm256_fmadd_ps(a6, m, c);
    a7 = _mm256_fmadd_ps(a7, m, c);
    a8 = _mm256_fmadd_ps(a8, m, c);
    a9 = _mm256_fmadd_ps(a9, m, c);
    a10 = _mm256_fmadd_ps(a10, m, c);
    a11 = _mm256_fmadd_ps(a11, m, c);
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                           _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
  s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  volatile float sink = out[0];  // keeps the chains alive
  (void)sink;
  return (double)iterations * 12 * 16;
}

}  // namespace recode::ops
