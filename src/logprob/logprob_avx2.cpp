// AVX2 variants of the per-position passes of forward_logits / backward_logits (logprob.cpp): a max pass,
// then 8-wide exp (Cody-Waite + degree-7 polynomial, within 2 ulp of expf) with the sums widened to double.
#include <immintrin.h>

#include "core/avx2_exp.h"

#include <cmath>

#include "logprob/logprob.h"

namespace recode::logprob {

namespace {

// e^d for d <= 0; 0 below -87.3 (where expf underflows to subnormals) and for -inf.
inline __m256 exp8_neg(__m256 d) {
  const __m256 live = _mm256_cmp_ps(d, _mm256_set1_ps(-87.3f), _CMP_GE_OQ);
  d = _mm256_max_ps(d, _mm256_set1_ps(-87.3f));
  __m256 n = avx2::exp_round_n(d);
  return _mm256_and_ps(avx2::exp_from_n(d, n), live);
}

// The float value of v, materialised: stops the compiler (this file is built with -mfma) from fusing the
// product that produced it into a following subtraction, so z = x / T is rounded exactly as elsewhere.
inline float rounded(float v) {
  __asm__("" : "+x"(v));
  return v;
}

inline double hsum(__m256d v) {
  alignas(32) double t[4];
  _mm256_store_pd(t, v);
  return (t[0] + t[1]) + (t[2] + t[3]);
}

inline void add_wide(__m256d& acc, __m256 v) {
  acc = _mm256_add_pd(
      acc, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
}

}  // namespace

// Returns false (nothing written) for a row without a finite maximum; the caller then takes the scalar path.
bool forward_logits_row_avx2(const float* x, int V, int target, float inv_t, float* logp, float* entropy, float* lse) {
  __m256 vm = _mm256_set1_ps(-INFINITY);
  int i = 0;
  for (; i + 8 <= V; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vm);
  float mx = -INFINITY;
  for (float l : lanes) mx = l > mx ? l : mx;
  for (; i < V; ++i) mx = x[i] > mx ? x[i] : mx;
  if (!std::isfinite(mx)) return false;
  const float m = rounded(mx * inv_t);
  const __m256 vinv = _mm256_set1_ps(inv_t), vmz = _mm256_set1_ps(m);
  __m256d s = _mm256_setzero_pd(), a = _mm256_setzero_pd();
  i = 0;
  for (; i + 8 <= V; i += 8) {
    __m256 d = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv), vmz);
    __m256 e = exp8_neg(d);
    add_wide(s, e);
    add_wide(a,
             _mm256_and_ps(_mm256_cmp_ps(e, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_mul_ps(e, d)));  // 0 * -inf -> 0
  }
  double ss = hsum(s), aa = hsum(a);
  for (; i < V; ++i) {
    double d = (double)rounded(x[i] * inv_t) - m;
    if (d == -INFINITY) continue;
    double e = std::exp(d);
    ss += e;
    aa += e * d;
  }
  const double l = m + std::log(ss);
  *lse = (float)l;
  *logp = (float)((double)rounded(x[target] * inv_t) - l);
  *entropy = (float)(std::log(ss) - aa / ss);
  return true;
}

void backward_logits_row_avx2(const float* x, int V, int target, float inv_t, float lse, float entropy, float dlogp,
                              float dentropy, float* dx) {
  const __m256 vinv = _mm256_set1_ps(inv_t), vlse = _mm256_set1_ps(lse), vh = _mm256_set1_ps(entropy);
  const __m256 vdl = _mm256_set1_ps(dlogp), vde = _mm256_set1_ps(dentropy), zero = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= V; i += 8) {
    __m256 lp = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv), vlse);  // log p_v
    __m256 p = exp8_neg(_mm256_min_ps(lp, zero));
    __m256 g = _mm256_sub_ps(zero, _mm256_mul_ps(vdl, p));
    __m256 ent_term = _mm256_mul_ps(_mm256_mul_ps(vde, p), _mm256_add_ps(lp, vh));
    g = _mm256_sub_ps(g, _mm256_and_ps(_mm256_cmp_ps(p, zero, _CMP_GT_OQ), ent_term));  // p = 0: no entropy term
    _mm256_storeu_ps(dx + i, _mm256_mul_ps(g, vinv));
  }
  // Scalar entries: z is rounded to float before the subtraction, as in the forward pass.
  for (; i < V; ++i) {
    float lp = (float)((double)rounded(x[i] * inv_t) - (double)lse);
    float p = std::exp(lp);
    float g = -dlogp * p;
    if (dentropy != 0.f && p > 0.f) g -= dentropy * p * (lp + entropy);
    dx[i] = g * inv_t;
  }
  {  // the target entry with its one-hot term, in the scalar form dlogp (1 - p): no cancellation
    float lp = (float)((double)rounded(x[target] * inv_t) - (double)lse);
    float p = std::exp(lp);
    float g = dlogp * (1.f - p);
    if (dentropy != 0.f && p > 0.f) g -= dentropy * p * (lp + entropy);
    dx[target] = g * inv_t;
  }
}

}  // namespace recode::logprob
