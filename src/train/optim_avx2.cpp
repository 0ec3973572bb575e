// AVX2 lanes of the AdamW update (entered only when the CPU has AVX2; see cpu_features.h). Multiplies and adds
// stay separate instructions (fp-contract off): an FMA would round once instead of twice and break the
// bit-for-bit agreement with the scalar reference.
#pragma GCC optimize("fp-contract=off")
#include <immintrin.h>

#include "train/optim.h"

namespace recode {
namespace optim_detail {

void adamw_range_avx2(const AdamWScalars& s, float* param, const float* grad, float* m, float* v, int64_t begin,
                      int64_t end, float grad_scale) {
  const __m256 gs = _mm256_set1_ps(grad_scale), df = _mm256_set1_ps(s.decay_factor), b1 = _mm256_set1_ps(s.beta1),
               omb1 = _mm256_set1_ps(s.one_minus_beta1), b2 = _mm256_set1_ps(s.beta2),
               omb2 = _mm256_set1_ps(s.one_minus_beta2), bc2 = _mm256_set1_ps(s.bc2_sqrt), eps = _mm256_set1_ps(s.eps),
               nss = _mm256_set1_ps(s.neg_step_size);
  for (int64_t i = begin; i + 8 <= end; i += 8) {
    __m256 g = _mm256_mul_ps(_mm256_loadu_ps(grad + i), gs);
    __m256 p = _mm256_mul_ps(_mm256_loadu_ps(param + i), df);
    __m256 mi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(m + i), b1), _mm256_mul_ps(omb1, g));
    __m256 vi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), b2), _mm256_mul_ps(omb2, _mm256_mul_ps(g, g)));
    __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
    p = _mm256_add_ps(p, _mm256_mul_ps(nss, _mm256_div_ps(mi, denom)));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    _mm256_storeu_ps(param + i, p);
  }
}

}  // namespace optim_detail
}  // namespace recode
