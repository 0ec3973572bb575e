// AVX2 variants of the sampler's full-row passes (fp32). Each lane performs the same correctly rounded
// operations as sampling_weight / weight_units in sampling_core.h, so results are bit-identical to the
// portable loop; only the order of integer additions differs, which integers do not notice.
#include <immintrin.h>

#include "core/avx2_exp.h"

#include <cmath>

#include "sampling_core.h"
#include "sampling/sampling_cpu.h"
#include "sampling/sampling_row.h"

namespace recode::sampling::cpu {

namespace {

// Eight weights in units, as two vectors of four int64.
struct Units8 {
  __m256i lo, hi;
};

inline __m256 weights8(__m256 x, __m256 xmax, __m256 inv_t) {
  __m256 t = _mm256_mul_ps(_mm256_sub_ps(x, xmax), inv_t);
  __m256 live = _mm256_cmp_ps(t, _mm256_set1_ps(-32.f), _CMP_GE_OQ);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  n = _mm256_and_ps(n, live);  // dead lanes: n = 0 keeps the exponent arithmetic harmless
  return _mm256_and_ps(avx2::exp_from_n(t, n), live);
}

inline Units8 to_units8(__m256 w) {
  __m256 v =
      _mm256_round_ps(_mm256_mul_ps(w, _mm256_set1_ps(kUnitsPerWeight)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // Integral doubles below 2^52 become int64 by adding 2^52 and subtracting its bit pattern.
  const __m256d magic = _mm256_set1_pd(4503599627370496.0);
  __m256d dlo = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), magic);
  __m256d dhi = _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), magic);
  return {_mm256_sub_epi64(_mm256_castpd_si256(dlo), _mm256_castpd_si256(magic)),
          _mm256_sub_epi64(_mm256_castpd_si256(dhi), _mm256_castpd_si256(magic))};
}

inline Units8 units8(__m256 x, __m256 xmax, __m256 inv_t) { return to_units8(weights8(x, xmax, inv_t)); }

// Kept lanes: order_key(x) >= tau (as a signed comparison of the sign-folded bits) and w >= min_p when min_p > 0.
inline Units8 kept_units8(__m256 x, __m256 xmax, __m256 inv_t, __m256i tau_signed, float min_p) {
  __m256 w = weights8(x, xmax, inv_t);
  __m256i bits = _mm256_castps_si256(_mm256_add_ps(x, _mm256_setzero_ps()));  // -0 becomes +0
  __m256i folded = _mm256_castps_si256(_mm256_blendv_ps(
      _mm256_castsi256_ps(bits), _mm256_castsi256_ps(_mm256_xor_si256(bits, _mm256_set1_epi32(0x7fffffff))),
      _mm256_castsi256_ps(bits)));
  __m256 keep = _mm256_castsi256_ps(_mm256_xor_si256(_mm256_cmpgt_epi32(tau_signed, folded), _mm256_set1_epi32(-1)));
  if (min_p > 0.f) keep = _mm256_and_ps(keep, _mm256_cmp_ps(w, _mm256_set1_ps(min_p), _CMP_GE_OQ));
  return to_units8(_mm256_and_ps(w, keep));
}

inline uint64_t hsum64(__m256i v) {
  alignas(32) uint64_t t[4];
  _mm256_store_si256((__m256i*)t, v);
  return t[0] + t[1] + t[2] + t[3];
}

inline uint64_t scalar_units(float x, float xmax, float inv_t) {
  return weight_units(sampling_weight((x - xmax) * inv_t));
}

inline bool kept_scalar(float v, float w, uint32_t tau, float min_p) {
  return order_key(v) >= tau && (min_p == 0.f || w >= min_p);
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
  bool tail_bad = false;
  for (int j = i; j < vocab; ++j) {
    tail_bad = tail_bad || std::isnan(x[j]) || x[j] == INFINITY;
    mx = x[j] > mx ? x[j] : mx;
  }
  MaxScan s{mx, 0, kRowOk, -1};
  if (_mm256_movemask_ps(bad) != 0 || tail_bad || std::isnan(mx)) {  // locate the first offender exactly
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

uint64_t units_hist_avx2(const float* x, int vocab, float xmax, float inv_t, uint32_t floor_key, uint64_t* hist0,
                         uint64_t* topk_total) {
  const __m256 vmax = _mm256_set1_ps(xmax), vinv = _mm256_set1_ps(inv_t);
  uint64_t total = 0, topk = 0;
  alignas(32) uint64_t q[8];
  int i = 0;
  for (; i + 8 <= vocab; i += 8) {
    Units8 u = units8(_mm256_loadu_ps(x + i), vmax, vinv);
    _mm256_store_si256((__m256i*)q, u.lo);
    _mm256_store_si256((__m256i*)(q + 4), u.hi);
    for (int j = 0; j < 8; ++j) {  // the histogram scatter stays scalar
      total += q[j];
      uint32_t key = order_key(x[i + j]);
      if (key >= floor_key) {
        hist0[key >> 24] += q[j];
        topk += q[j];
      }
    }
  }
  for (; i < vocab; ++i) {
    uint64_t qi = scalar_units(x[i], xmax, inv_t);
    total += qi;
    uint32_t key = order_key(x[i]);
    if (key >= floor_key) {
      hist0[key >> 24] += qi;
      topk += qi;
    }
  }
  *topk_total = topk;
  return total;
}

uint64_t kept_units_avx2(const float* x, int vocab, float xmax, float inv_t, uint32_t tau, float min_p) {
  const __m256 vmax = _mm256_set1_ps(xmax), vinv = _mm256_set1_ps(inv_t);
  const __m256i tau_s = _mm256_set1_epi32((int32_t)(tau ^ 0x80000000u));
  __m256i acc = _mm256_setzero_si256();
  int i = 0;
  for (; i + 8 <= vocab; i += 8) {
    Units8 u = kept_units8(_mm256_loadu_ps(x + i), vmax, vinv, tau_s, min_p);
    acc = _mm256_add_epi64(acc, _mm256_add_epi64(u.lo, u.hi));
  }
  uint64_t total = hsum64(acc);
  for (; i < vocab; ++i) {
    float w = sampling_weight((x[i] - xmax) * inv_t);
    if (kept_scalar(x[i], w, tau, min_p)) total += weight_units(w);
  }
  return total;
}

int pick_kept_avx2(const float* x, int vocab, float xmax, float inv_t, uint32_t tau, float min_p, uint64_t target) {
  const __m256 vmax = _mm256_set1_ps(xmax), vinv = _mm256_set1_ps(inv_t);
  const __m256i tau_s = _mm256_set1_epi32((int32_t)(tau ^ 0x80000000u));
  uint64_t cum = 0;
  int i = 0;
  for (; i + 8 <= vocab; i += 8) {
    Units8 u = kept_units8(_mm256_loadu_ps(x + i), vmax, vinv, tau_s, min_p);
    uint64_t block = hsum64(_mm256_add_epi64(u.lo, u.hi));
    if (cum + block > target) {
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
  for (; i < vocab; ++i) {
    float w = sampling_weight((x[i] - xmax) * inv_t);
    if (!kept_scalar(x[i], w, tau, min_p)) continue;
    cum += weight_units(w);
    if (cum > target) return i;
  }
  return -1;
}

namespace {
struct Avx2Passes {
  static MaxScan max(const float* x, int vocab) { return row_max_avx2(x, vocab); }
  static MaxScan max(const bf16* x, int vocab) { return row_max(x, vocab); }
  static uint64_t units(const float* x, int vocab, float xmax, float inv_t) {
    return row_units_avx2(x, vocab, xmax, inv_t);
  }
  static uint64_t units(const bf16* x, int vocab, float xmax, float inv_t) { return row_units(x, vocab, xmax, inv_t); }
  static uint64_t units_hist(const float* x, int vocab, float xmax, float inv_t, uint32_t floor_key, uint64_t* hist0,
                             uint64_t* topk_total) {
    return units_hist_avx2(x, vocab, xmax, inv_t, floor_key, hist0, topk_total);
  }
  static uint64_t units_hist(const bf16* x, int vocab, float xmax, float inv_t, uint32_t floor_key, uint64_t* hist0,
                             uint64_t* topk_total) {
    return units_hist_portable(x, vocab, xmax, inv_t, floor_key, hist0, topk_total);
  }
  static uint64_t kept_units(const float* x, int vocab, float xmax, float inv_t, uint32_t tau, float min_p) {
    return kept_units_avx2(x, vocab, xmax, inv_t, tau, min_p);
  }
  static uint64_t kept_units(const bf16* x, int vocab, float xmax, float inv_t, uint32_t tau, float min_p) {
    return kept_units_portable(x, vocab, xmax, inv_t, tau, min_p);
  }
  static int pick(const float* x, int vocab, float xmax, float inv_t, uint32_t tau, float min_p, uint64_t target) {
    return pick_kept_avx2(x, vocab, xmax, inv_t, tau, min_p, target);
  }
  static int pick(const bf16* x, int vocab, float xmax, float inv_t, uint32_t tau, float min_p, uint64_t target) {
    return pick_portable(x, vocab, xmax, inv_t, tau, min_p, target);
  }
};
}  // namespace

Result sample_one_avx2(const float* x, int vocab, const Params& p, uint64_t seed, uint64_t row_id, uint64_t step,
                       int row) {
  return sample_one<Avx2Passes>(x, vocab, p, seed, row_id, step, row);
}
Result sample_one_avx2(const bf16* x, int vocab, const Params& p, uint64_t seed, uint64_t row_id, uint64_t step,
                       int row) {
  return sample_one<Avx2Passes>(x, vocab, p, seed, row_id, step, row);
}

}  // namespace recode::sampling::cpu
