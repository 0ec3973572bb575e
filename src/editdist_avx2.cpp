// AVX2 block rows for the Hyyro multi-word Levenshtein kernel (entered only when simd_level() == AVX2).
// The same anti-diagonal stripes as blocks_baseline() in editdist.cpp, but the four words of a stripe live
// in the four 64-bit lanes of one 256-bit register: one vector step advances four words, each on its own
// text column (lane r on column t - r), and the horizontal deltas move one lane up per step with a
// cross-lane permute. Steps where some lane has no column (the first and last three) run lane by lane.
#include <immintrin.h>

#include <algorithm>

#include "editdist.h"

namespace recode::editdist {

constexpr int kLanes = kStripeWords;

namespace {

// Stripe state in scalar form, for the masked steps at both ends.
struct StripeState {
  alignas(32) uint64_t vp[kLanes];
  alignas(32) uint64_t vn[kLanes];
  alignas(32) uint64_t h[kLanes];  // delta lane r produced at the previous step (bit 0: +1, bit 1: -1)
};

// Advances lane r over column c (scalar, same arithmetic as the vector loop).
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

}  // namespace

// One stripe of `lanes` (1..4) real words; lanes above them compute unused values. peq[id * 4 + r].
void stripe_avx2(const uint64_t* peq, const uint32_t* text, int64_t n, uint8_t* carry, const int* out_shift,
                 int lanes) {
  StripeState st;
  for (int r = 0; r < kLanes; ++r) st.vp[r] = ~uint64_t{0}, st.vn[r] = 0, st.h[r] = 0;
  const int out_lane = lanes - 1;

  auto masked_step = [&](int64_t t) {
    for (int r = kLanes - 1; r >= 0; --r) {
      int64_t c = t - r;
      if (c < 0 || c >= n) continue;
      uint64_t in = r == 0 ? carry[c] : st.h[r - 1];
      uint64_t out = advance_lane(st, r, in, peq[(int64_t)text[c] * kLanes + r], out_shift[r]);
      st.h[r] = out;
      if (r == out_lane) carry[c] = (uint8_t)out;
    }
  };

  const int64_t full_begin = kLanes - 1;
  for (int64_t t = 0; t < std::min<int64_t>(full_begin, n + kLanes - 1); ++t) masked_step(t);

  if (full_begin < n) {
    const __m256i ones = _mm256_set1_epi64x(-1);
    const __m256i one = _mm256_set1_epi64x(1);
    const __m256i shift = _mm256_setr_epi64x(out_shift[0], out_shift[1], out_shift[2], out_shift[3]);
    const __m128i lane_index = _mm_setr_epi32(0, 1, 2, 3);
    __m256i vp = _mm256_load_si256((const __m256i*)st.vp);
    __m256i vn = _mm256_load_si256((const __m256i*)st.vn);
    __m256i h = _mm256_load_si256((const __m256i*)st.h);
    alignas(32) uint64_t out_lanes[kLanes];
    for (int64_t t = full_begin; t < n; ++t) {
      // Deltas in: lane 0 from the stripe above, lane r from lane r-1's previous step.
      __m256i in = _mm256_permute4x64_epi64(h, _MM_SHUFFLE(2, 1, 0, 0));
      in = _mm256_blend_epi32(in, _mm256_castsi128_si256(_mm_cvtsi32_si128(carry[t])), 0x03);
      __m256i hp_in = _mm256_and_si256(in, one);
      __m256i hn_in = _mm256_srli_epi64(in, 1);
      // Match words: lane r looks up text[t - r] in its own column of the table.
      __m128i ids = _mm_loadu_si128((const __m128i*)(text + t - 3));
      ids = _mm_shuffle_epi32(ids, _MM_SHUFFLE(0, 1, 2, 3));
      __m128i idx = _mm_add_epi32(_mm_slli_epi32(ids, 2), lane_index);
      __m256i x = _mm256_i32gather_epi64((const long long*)peq, idx, 8);
      x = _mm256_or_si256(x, hn_in);
      __m256i d0 = _mm256_or_si256(
          _mm256_or_si256(_mm256_xor_si256(_mm256_add_epi64(_mm256_and_si256(x, vp), vp), vp), x), vn);
      __m256i hp = _mm256_or_si256(vn, _mm256_xor_si256(_mm256_or_si256(d0, vp), ones));
      __m256i hn = _mm256_and_si256(d0, vp);
      h = _mm256_or_si256(_mm256_and_si256(_mm256_srlv_epi64(hp, shift), one),
                          _mm256_slli_epi64(_mm256_and_si256(_mm256_srlv_epi64(hn, shift), one), 1));
      hp = _mm256_or_si256(_mm256_slli_epi64(hp, 1), hp_in);
      hn = _mm256_or_si256(_mm256_slli_epi64(hn, 1), hn_in);
      vp = _mm256_or_si256(hn, _mm256_xor_si256(_mm256_or_si256(d0, hp), ones));
      vn = _mm256_and_si256(hp, d0);
      _mm256_store_si256((__m256i*)out_lanes, h);
      carry[t - out_lane] = (uint8_t)out_lanes[out_lane];
    }
    _mm256_store_si256((__m256i*)st.vp, vp);
    _mm256_store_si256((__m256i*)st.vn, vn);
    _mm256_store_si256((__m256i*)st.h, h);
  }

  for (int64_t t = std::max<int64_t>(full_begin, n); t < n + kLanes - 1; ++t) masked_step(t);
}

}  // namespace recode::editdist
