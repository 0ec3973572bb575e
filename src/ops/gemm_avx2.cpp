// AVX2+FMA GEMM micro-kernel (compiled with -mavx2 -mfma; entered only after the run-time check in gemm.cpp).
// A 6 x 16 tile of C lives in 12 ymm accumulators; each k step broadcasts 6 values of A and loads two
// vectors of B: 12 FMAs per 2 loads + 6 broadcasts, enough to keep both FMA pipes busy.
#include <immintrin.h>

#include <algorithm>

#include "ops/gemm_kernel.h"
#include "ops/ops.h"

namespace recode::ops {

template <int MR>
static void tile(int nr, int kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate) {
  __m256 lo[MR], hi[MR];
  for (int r = 0; r < MR; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    for (int r = 0; r < MR; ++r) {
      __m256 av = _mm256_broadcast_ss(a + r);
      lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
      hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
    }
    a += kMR;
    b += kPanel;
  }
  if (nr == kPanel) {
    for (int r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
      if (accumulate) {
        lo[r] = _mm256_add_ps(lo[r], _mm256_loadu_ps(cr));
        hi[r] = _mm256_add_ps(hi[r], _mm256_loadu_ps(cr + 8));
      }
      _mm256_storeu_ps(cr, lo[r]);
      _mm256_storeu_ps(cr + 8, hi[r]);
    }
  } else {  // right edge: spill the tile and copy the valid columns
    alignas(32) float buf[kPanel];
    for (int r = 0; r < MR; ++r) {
      _mm256_store_ps(buf, lo[r]);
      _mm256_store_ps(buf + 8, hi[r]);
      float* cr = c + r * ldc;
      for (int j = 0; j < nr; ++j) cr[j] = accumulate ? cr[j] + buf[j] : buf[j];
    }
  }
}

void gemm_kernel_avx2(int mr, int nr, int kc, const float* a, const float* b, float* c, int64_t ldc,
                      bool accumulate) {
  switch (mr) {
    case 6: tile<6>(nr, kc, a, b, c, ldc, accumulate); break;
    case 5: tile<5>(nr, kc, a, b, c, ldc, accumulate); break;
    case 4: tile<4>(nr, kc, a, b, c, ldc, accumulate); break;
    case 3: tile<3>(nr, kc, a, b, c, ldc, accumulate); break;
    case 2: tile<2>(nr, kc, a, b, c, ldc, accumulate); break;
    default: tile<1>(nr, kc, a, b, c, ldc, accumulate); break;
  }
}

}  // namespace recode::ops
