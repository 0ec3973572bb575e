// AVX2 variants of the sampler's full-row passes (fp32). Each lane performs the same correctly rounded
// operations as sampling_weight / weight_units in sampling_core.h, so results are bit-identical to the
// portable loop; only the order of integer additions differs, which integers do not notice.
#include <immintrin.h>

#include <cmath>

#include "sampling_core.h"
#include "sampling_cpu.h"

namespace recode::sampling::cpu {

namespace {

// Eight weights in units, as two vectors of four int64.
struct Units8 {
  __m256i lo, hi;
};

inline Units8 units8(__m256 x, __m256 xmax, __m256 inv_t) {
  __m256 t = _mm256_mul_ps(_mm256_sub_ps(x, xmax), inv_t);
  __m256 live = _mm256_cmp_ps(t, _mm256_set1_ps(-32.f), _CMP_GE_OQ);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  n = _mm256_and_ps(n, live);  // dead lanes: n = 0 keeps the exponent arithmetic harmless
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693145751953125f), t);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-1.42860682030941723212e-6f), r);
  __m256 p = _mm256_set1_ps(1.98412698e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.38888889e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.33333333e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.16666667e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.66666667e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 w = _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), live);
  __m256 v = _mm256_round_ps(_mm256_mul_ps(w, _mm256_set1_ps(kUnitsPerWeight)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // Integral doubles below 2^52 become int64 by adding 2^52 and subtracting its bit pattern.
  const __m256d magic = _mm256_set1_pd(4503599627370496.0);
  __m256d dlo = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), magic);
  __m256d dhi = _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), magic);
  return {_mm256_sub_epi64(_mm256_castpd_si256(dlo), _mm256_castpd_si256(magic)),
          _mm256_sub_epi64(_mm256_castpd_si256(dhi), _mm256_castpd_si256(magic))};
}

inline uint64_t hsum64(__m256i v) {
  alignas(32) uint64_t t[4];
  _mm256_store_si256((__m256i*)t, v);
  return t[0] + t[1] + t[2] + t[3];
}

inline uint64_t scalar_units(float x, float xmax, float inv_t) {
  return weight_units(sampling_weight((x - xmax) * inv_t));
}

}  // namespace

MaxScan row_max_avx2(const float* x, int vocab) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  __m256 bad = _mm256_setzero_ps();  // lanes that saw NaN or +inf
  const __m256 pinf = _mm256_set1_ps(INFINITY);
  int i = 0;
  for (; i + 8 <= vocab; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, pinf, _CMP_EQ_UQ));  // unordered: NaN, or equal to +inf
    m = _mm256_max_ps(m, v);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float mx = -INFINITY;
  for (float l : lanes) mx = l > mx ? l : mx;
  for (int j = i; j < vocab; ++j) {
    if (std::isnan(x[j]) || x[j] == INFINITY) bad = _mm256_set1_ps(1.f);
    mx = x[j] > mx ? x[j] : mx;
  }
  MaxScan s{mx, 0, kRowOk, -1};
  if (_mm256_movemask_ps(bad) != 0 || std::isnan(mx)) {  // locate the first offender exactly
    for (int j = 0; j < vocab; ++j) {
      if (std::isnan(x[j])) return {mx, 0, kRowNaN, j};
      if (x[j] == INFINITY) return {mx, 0, kRowPosInf, j};
    }
  }
  if (mx == -INFINITY) return {mx, 0, kRowAllNegInf, -1};
  for (int j = 0; j < vocab; ++j)
    if (x[j] == mx) {
      s.argmax = j;
      break;
    }
  return s;
}

uint64_t row_units_avx2(const float* x, int vocab, float xmax, float inv_t) {
  const __m256 vmax = _mm256_set1_ps(xmax), vinv = _mm256_set1_ps(inv_t);
  __m256i acc = _mm256_setzero_si256();
  int i = 0;
  for (; i + 8 <= vocab; i += 8) {
    Units8 u = units8(_mm256_loadu_ps(x + i), vmax, vinv);
    acc = _mm256_add_epi64(acc, _mm256_add_epi64(u.lo, u.hi));
  }
  uint64_t total = hsum64(acc);
  for (; i < vocab; ++i) total += scalar_units(x[i], xmax, inv_t);
  return total;
}

int row_pick_avx2(const float* x, int vocab, float xmax, float inv_t, uint64_t target) {
  const __m256 vmax = _mm256_set1_ps(xmax), vinv = _mm256_set1_ps(inv_t);
  uint64_t cum = 0;
  int i = 0;
  for (; i + 8 <= vocab; i += 8) {
    Units8 u = units8(_mm256_loadu_ps(x + i), vmax, vinv);
    uint64_t block = hsum64(_mm256_add_epi64(u.lo, u.hi));
    if (cum + block > target) {  // the pick lies in these eight: walk them in order
      alignas(32) uint64_t q[8];
      _mm256_store_si256((__m256i*)q, u.lo);
      _mm256_store_si256((__m256i*)(q + 4), u.hi);
      for (int j = 0; j < 8; ++j) {
        cum += q[j];
        if (cum > target) return i + j;
      }
    }
    cum += block;
  }
  int last = -1;
  for (; i < vocab; ++i) {
    uint64_t q = scalar_units(x[i], xmax, inv_t);
    if (q == 0) continue;
    cum += q;
    last = i;
    if (cum > target) return i;
  }
  return last;  // only reached if target >= total, which the caller rules out
}

}  // namespace recode::sampling::cpu
