// AVX2 block rows for the Hyyro multi-word Levenshtein kernel (entered only when simd_level() == AVX2).
// The stripes of blocks_within() in editdist.cpp, with the four words of a stripe in the four 64-bit lanes
// of one 256-bit register: one vector step advances four words, each on its own text column. Lanes are
// staggered by two columns (lane r on column t - 2r at step t), so the horizontal delta lane r-1 hands to
// lane r (a cross-lane permute, several cycles) has a whole step to arrive, and the critical path is
// only the word's own recurrence. HP is carried inverted (~HP), which saves an operation on that path.
// Steps where some lane has no column (the first and last six) run lane by lane in scalar code.
#include <immintrin.h>

#include <algorithm>

#include "editdist.h"

namespace recode::editdist {

constexpr int kLanes = kStripeWords;
constexpr int kStagger = 2;

namespace {

// Stripe state in scalar form, for the masked steps at both ends. out[p][r] is the delta lane r produced
// at the last step of parity p (bit 0: +1, bit 1: -1); lane r+1 reads it two steps later.
struct StripeState {
  alignas(32) uint64_t vp[kLanes];
  alignas(32) uint64_t vn[kLanes];
  alignas(32) uint64_t out[2][kLanes];
};

// Advances lane r over one column (scalar, same arithmetic as the vector loop).
inline uint64_t advance_lane(StripeState& st, int r, uint64_t in, uint64_t match, int shift) {
  uint64_t hp_in = in & 1, hn_in = in >> 1;
  uint64_t x = match | hn_in;
  uint64_t vp = st.vp[r], vn = st.vn[r];
  uint64_t d0 = (((x & vp) + vp) ^ vp) | x | vn;
  uint64_t hp = vn | ~(d0 | vp);
  uint64_t hn = d0 & vp;
  uint64_t out = ((hp >> shift) & 1) | (((hn >> shift) & 1) << 1);
  hp = (hp << 1) | hp_in;
  hn = (hn << 1) | hn_in;
  st.vp[r] = hn | ~(d0 | hp);
  st.vn[r] = hp & d0;
  return out;
}

// The vector steps t in [first, last): every lane has a column. kTail: the stripe holding the pattern's
// last word (fewer lanes may be real, the last one reads its delta below bit 63).
template <bool kTail>
void vector_steps(StripeState& st, const uint64_t* peq, const uint32_t* text, int64_t first, int64_t last,
                  uint8_t* carry, const int* out_shift, int out_lane) {
  const __m256i one = _mm256_set1_epi64x(1);
  const __m256i two = _mm256_set1_epi64x(2);
  const __m256i shift = _mm256_setr_epi64x(out_shift[0], out_shift[1], out_shift[2], out_shift[3]);
  __m256i vp = _mm256_load_si256((const __m256i*)st.vp);
  __m256i vn = _mm256_load_si256((const __m256i*)st.vn);
  __m256i out_even = _mm256_load_si256((const __m256i*)st.out[0]);
  __m256i out_odd = _mm256_load_si256((const __m256i*)st.out[1]);
  alignas(32) uint64_t out_lanes[kLanes];

  auto step = [&](int64_t t, __m256i& out_same_parity) __attribute__((always_inline)) {
    // Deltas in: lane 0 from the stripe above, lane r from lane r-1 two steps ago (same column).
    __m256i in = _mm256_permute4x64_epi64(out_same_parity, _MM_SHUFFLE(2, 1, 0, 0));
    in = _mm256_blend_epi32(in, _mm256_castsi128_si256(_mm_cvtsi32_si128(carry[t])), 0x03);
    __m256i not_hp_in = _mm256_andnot_si256(in, one);
    __m256i hn_in = _mm256_srli_epi64(in, 1);
    __m128i lo = _mm_insert_epi64(_mm_cvtsi64_si128((long long)peq[(int64_t)text[t] * kLanes]),
                                  (long long)peq[(int64_t)text[t - 2] * kLanes + 1], 1);
    __m128i hi = _mm_insert_epi64(_mm_cvtsi64_si128((long long)peq[(int64_t)text[t - 4] * kLanes + 2]),
                                  (long long)peq[(int64_t)text[t - 6] * kLanes + 3], 1);
    __m256i x = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
    x = _mm256_or_si256(x, hn_in);
    __m256i d0 = _mm256_or_si256(_mm256_xor_si256(_mm256_add_epi64(_mm256_and_si256(x, vp), vp), vp),
                                 _mm256_or_si256(x, vn));
    __m256i not_hp = _mm256_andnot_si256(vn, _mm256_or_si256(d0, vp));  // ~(vn | ~(d0 | vp))
    __m256i hn = _mm256_and_si256(d0, vp);
    __m256i out;
    if (kTail) {
      out = _mm256_or_si256(_mm256_xor_si256(_mm256_and_si256(_mm256_srlv_epi64(not_hp, shift), one), one),
                            _mm256_slli_epi64(_mm256_and_si256(_mm256_srlv_epi64(hn, shift), one), 1));
    } else {
      out = _mm256_or_si256(_mm256_xor_si256(_mm256_srli_epi64(not_hp, 63), one),
                            _mm256_and_si256(_mm256_srli_epi64(hn, 62), two));
    }
    __m256i not_hp_shifted = _mm256_or_si256(_mm256_slli_epi64(not_hp, 1), not_hp_in);
    __m256i hn_shifted = _mm256_or_si256(_mm256_slli_epi64(hn, 1), hn_in);
    vp = _mm256_or_si256(hn_shifted, _mm256_andnot_si256(d0, not_hp_shifted));
    vn = _mm256_andnot_si256(not_hp_shifted, d0);
    out_same_parity = out;
    if (kTail) {
      _mm256_store_si256((__m256i*)out_lanes, out);
      carry[t - kStagger * out_lane] = (uint8_t)out_lanes[out_lane];
    } else {
      carry[t - kStagger * (kLanes - 1)] = (uint8_t)_mm256_extract_epi64(out, 3);
    }
  };

  int64_t t = first;
  if (t < last && (t & 1)) step(t++, out_odd);
  for (; t + 1 < last; t += 2) {
    step(t, out_even);
    step(t + 1, out_odd);
  }
  if (t < last) step(t++, out_even);
  _mm256_store_si256((__m256i*)st.vp, vp);
  _mm256_store_si256((__m256i*)st.vn, vn);
  _mm256_store_si256((__m256i*)st.out[0], out_even);
  _mm256_store_si256((__m256i*)st.out[1], out_odd);
}

}  // namespace

// One stripe of `lanes` (1..4) real words; lanes above them compute unused values. peq[id * 4 + r].
void stripe_avx2(const uint64_t* peq, const uint32_t* text, int64_t n, uint8_t* carry, const int* out_shift,
                 int lanes) {
  StripeState st;
  for (int r = 0; r < kLanes; ++r) st.vp[r] = ~uint64_t{0}, st.vn[r] = 0, st.out[0][r] = st.out[1][r] = 0;
  const int out_lane = lanes - 1;
  const bool tail = lanes != kLanes || out_shift[kLanes - 1] != 63;

  // Lanes run from the bottom up within a step, so lane r reads out[p][r-1] before lane r-1 overwrites it.
  auto masked_step = [&](int64_t t) {
    for (int r = kLanes - 1; r >= 0; --r) {
      int64_t c = t - kStagger * r;
      if (c < 0 || c >= n) continue;
      uint64_t in = r == 0 ? carry[c] : st.out[t & 1][r - 1];
      uint64_t out = advance_lane(st, r, in, peq[(int64_t)text[c] * kLanes + r], out_shift[r]);
      st.out[t & 1][r] = out;
      if (r == out_lane) carry[c] = (uint8_t)out;
    }
  };

  // Vector steps need every lane on a column and 8 readable ids text[t-7 .. t].
  const int64_t full_begin = std::max(kStagger * (kLanes - 1), 7);
  const int64_t steps = n + kStagger * (kLanes - 1);
  int64_t t = 0;
  for (; t < std::min(full_begin, steps); ++t) masked_step(t);
  if (t < n) {
    if (tail) vector_steps<true>(st, peq, text, t, n, carry, out_shift, out_lane);
    else vector_steps<false>(st, peq, text, t, n, carry, out_shift, out_lane);
    t = n;
  }
  for (; t < steps; ++t) masked_step(t);
}

}  // namespace recode::editdist
