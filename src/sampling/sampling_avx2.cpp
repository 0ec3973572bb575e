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

// order_key(x) ^ 0x80000000 as int32 for eight lanes: keys compare as signed integers.
inline __m256i signed_keys8(__m256 x) {
  __m256i bits = _mm256_castps_si256(_mm256_add_ps(x, _mm256_setzero_ps()));  // -0 becomes +0
  return _mm256_castps_si256(_mm256_blendv_ps(
      _mm256_castsi256_ps(bits), _mm256_castsi256_ps(_mm256_xor_si256(bits, _mm256_set1_epi32(0x7fffffff))),
      _mm256_castsi256_ps(bits)));
}

// Lanes with order_key(x) >= tau.
inline __m256 key_keep8(__m256 x, __m256i tau_signed) {
  return _mm256_castsi256_ps(_mm256_xor_si256(_mm256_cmpgt_epi32(tau_signed, signed_keys8(x)), _mm256_set1_epi32(-1)));
}

// Kept lanes: order_key(x) >= tau (key_keep, computed by the caller) and w >= min_p when min_p > 0.
inline Units8 kept_units8(__m256 x, __m256 keep, __m256 xmax, __m256 inv_t, float min_p) {
  __m256 w = weights8(x, xmax, inv_t);
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
                         uint64_t* topk_total, float* w) {
  const __m256 vmax = _mm256_set1_ps(xmax), vinv = _mm256_set1_ps(inv_t);
  const __m256i floor_s = _mm256_set1_epi32((int32_t)(floor_key ^ 0x80000000u));
  uint64_t total = 0, topk = 0;
  __m256i acc = _mm256_setzero_si256();
  alignas(32) uint64_t q[8];
  alignas(32) uint32_t top[8];
  // Four histograms, by lane: neighbouring tokens mostly share a bucket, and one histogram would chain every
  // update on the previous one's store.
  uint64_t sub[4][256] = {};
  int i = 0;
  for (; i + 8 <= vocab; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    __m256 wv = weights8(v, vmax, vinv);
    _mm256_storeu_ps(w + i, wv);
    Units8 u = to_units8(wv);
    acc = _mm256_add_epi64(acc, _mm256_add_epi64(u.lo, u.hi));
    __m256i k = signed_keys8(v);
    int in = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(floor_s, k))) ^ 0xff;  // key >= floor_key
    if (in == 0) continue;  // top-k: most blocks hold no token of the top-k set
    _mm256_store_si256((__m256i*)q, u.lo);
    _mm256_store_si256((__m256i*)(q + 4), u.hi);
    _mm256_store_si256((__m256i*)top, _mm256_srli_epi32(_mm256_xor_si256(k, _mm256_set1_epi32(INT32_MIN)), 24));
    for (; in != 0; in &= in - 1) {  // the histogram scatter stays scalar
      int j = __builtin_ctz(in);
      sub[j & 3][top[j]] += q[j];
      topk += q[j];
    }
  }
  total = hsum64(acc);
  for (int b = 0; b < 256; ++b) hist0[b] += (sub[0][b] + sub[1][b]) + (sub[2][b] + sub[3][b]);
  for (; i < vocab; ++i) {
    w[i] = sampling_weight((x[i] - xmax) * inv_t);
    uint64_t qi = weight_units(w[i]);
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
    __m256 v = _mm256_loadu_ps(x + i);
    __m256 keep = key_keep8(v, tau_s);
    if (_mm256_testz_ps(keep, keep)) continue;  // no lane at or above the threshold: nothing to add (top-k)
    Units8 u = kept_units8(v, keep, vmax, vinv, min_p);
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
    __m256 v = _mm256_loadu_ps(x + i);
    __m256 keep = key_keep8(v, tau_s);
    if (_mm256_testz_ps(keep, keep)) continue;
    Units8 u = kept_units8(v, keep, vmax, vinv, min_p);
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

// The k-th largest key (k <= 1024), as select_top_k_heap: a min-heap of the k largest keys so far, where
// blocks of eight with no key above the heap's minimum are skipped with one comparison. The k-th largest key
// does not depend on the order keys are offered in, so the result is the portable one.
uint32_t top_k_heap_avx2(const float* x, int vocab, int k) {
  std::vector<uint32_t> heap;
  heap.reserve(k);
  auto offer = [&](uint32_t key) {
    if ((int)heap.size() < k) {
      heap.push_back(key);
      std::push_heap(heap.begin(), heap.end(), std::greater<uint32_t>());
    } else if (key > heap.front()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<uint32_t>());
      heap.back() = key;
      std::push_heap(heap.begin(), heap.end(), std::greater<uint32_t>());
    }
  };
  int i = 0;
  for (; i < vocab && (int)heap.size() < k; ++i) offer(order_key(x[i]));
  __m256i floor_s = _mm256_set1_epi32((int32_t)(heap.front() ^ 0x80000000u));
  for (; i + 8 <= vocab; i += 8) {
    int above =
        _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(signed_keys8(_mm256_loadu_ps(x + i)), floor_s)));
    if (above == 0) continue;
    for (int j = 0; j < 8; ++j)
      if (above >> j & 1) offer(order_key(x[i + j]));
    floor_s = _mm256_set1_epi32((int32_t)(heap.front() ^ 0x80000000u));
  }
  for (; i < vocab; ++i) offer(order_key(x[i]));
  return heap.front();
}

// gather_portable for fp32: keys eight at a time, the matching lanes appended in index order.
int gather_avx2(const float* x, const float* w, int vocab, uint32_t floor_key, uint32_t bucket, Candidate* out) {
  const __m256i floor_s = _mm256_set1_epi32((int32_t)(floor_key ^ 0x80000000u));
  const __m256i bucket_s = _mm256_set1_epi32((int32_t)((bucket ^ 0x80u) << 24) >> 24);  // top byte of a signed key
  int i = 0, n = 0;
  for (; i + 8 <= vocab; i += 8) {
    __m256i k = signed_keys8(_mm256_loadu_ps(x + i));
    __m256i in =
        _mm256_andnot_si256(_mm256_cmpgt_epi32(floor_s, k), _mm256_cmpeq_epi32(_mm256_srai_epi32(k, 24), bucket_s));
    int mask = _mm256_movemask_ps(_mm256_castsi256_ps(in));
    if (mask == 0) continue;
    Units8 u = to_units8(_mm256_loadu_ps(w + i));
    alignas(32) uint64_t q[8];
    alignas(32) int32_t keys[8];
    _mm256_store_si256((__m256i*)q, u.lo);
    _mm256_store_si256((__m256i*)(q + 4), u.hi);
    _mm256_store_si256((__m256i*)keys, k);
    for (int j = 0; j < 8; ++j) {  // branch-free compaction: every lane is written, the matching ones kept
      out[n] = {(uint32_t)keys[j] ^ 0x80000000u, q[j]};
      n += mask >> j & 1;
    }
  }
  for (; i < vocab; ++i) {
    uint32_t key = order_key(x[i]);
    if (key >= floor_key && (key >> 24) == bucket) out[n++] = {key, weight_units(w[i])};
  }
  return n;
}

// pick_stored_portable for fp32.
int pick_stored_avx2(const float* x, const float* w, int vocab, uint32_t tau, uint64_t target) {
  const __m256i tau_s = _mm256_set1_epi32((int32_t)(tau ^ 0x80000000u));
  uint64_t cum = 0;
  int i = 0;
  for (; i + 8 <= vocab; i += 8) {
    __m256 keep = key_keep8(_mm256_loadu_ps(x + i), tau_s);
    if (_mm256_testz_ps(keep, keep)) continue;
    Units8 u = to_units8(_mm256_and_ps(_mm256_loadu_ps(w + i), keep));
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
    if (order_key(x[i]) < tau) continue;
    cum += weight_units(w[i]);
    if (cum > target) return i;
  }
  return -1;
}

struct Avx2Passes {
  static uint32_t top_k(const float* x, int vocab, int64_t k) {
    return k <= 1024 ? top_k_heap_avx2(x, vocab, (int)k) : select_top_k(x, vocab, k);
  }
  static uint32_t top_k(const bf16* x, int vocab, int64_t k) { return select_top_k(x, vocab, k); }
  static int gather(const float* x, const float* w, int vocab, uint32_t floor_key, uint32_t bucket, Candidate* out) {
    return gather_avx2(x, w, vocab, floor_key, bucket, out);
  }
  static int gather(const bf16* x, const float* w, int vocab, uint32_t floor_key, uint32_t bucket, Candidate* out) {
    return gather_portable(x, w, vocab, floor_key, bucket, out);
  }
  static int pick_stored(const float* x, const float* w, int vocab, uint32_t tau, uint64_t target) {
    return pick_stored_avx2(x, w, vocab, tau, target);
  }
  static int pick_stored(const bf16* x, const float* w, int vocab, uint32_t tau, uint64_t target) {
    return pick_stored_portable(x, w, vocab, tau, target);
  }
  static MaxScan max(const float* x, int vocab) { return row_max_avx2(x, vocab); }
  static MaxScan max(const bf16* x, int vocab) { return row_max(x, vocab); }
  static uint64_t units(const float* x, int vocab, float xmax, float inv_t) {
    return row_units_avx2(x, vocab, xmax, inv_t);
  }
  static uint64_t units(const bf16* x, int vocab, float xmax, float inv_t) { return row_units(x, vocab, xmax, inv_t); }
  static uint64_t units_hist(const float* x, int vocab, float xmax, float inv_t, uint32_t floor_key, uint64_t* hist0,
                             uint64_t* topk_total, float* w) {
    return units_hist_avx2(x, vocab, xmax, inv_t, floor_key, hist0, topk_total, w);
  }
  static uint64_t units_hist(const bf16* x, int vocab, float xmax, float inv_t, uint32_t floor_key, uint64_t* hist0,
                             uint64_t* topk_total, float* w) {
    return units_hist_portable(x, vocab, xmax, inv_t, floor_key, hist0, topk_total, w);
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
