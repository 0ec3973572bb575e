// AVX2 block rows for the Hyyro multi-word Levenshtein kernel (entered only when simd_level() == AVX2).
// The stripes of blocks_within() in editdist.cpp, with the four words of a stripe in the four 64-bit lanes
// of one 256-bit register: one vector step advances four words, each on its own text column. Lanes are
// staggered by two columns (lane r on column t - 2r at step t), so the horizontal delta lane r-1 hands to
// lane r (a cross-lane permute, several cycles) has a whole step to arrive, and the critical path is
// only the word's own recurrence. HP is carried inverted (~HP), which saves an operation on that path.
// Steps where some lane has no column (the first and last six) run lane by lane in scalar code.
#include <immintrin.h>

#include <algorithm>

#include "editdist/editdist.h"

namespace recode::editdist {

constexpr int kMaxLanes = kStripeWords;
constexpr int kStagger = 2;

namespace {

// Stripe state in scalar form, for the masked steps at both ends. out[p][r] is the delta lane r produced
// at the last step of parity p (bit 0: +1, bit 1: -1); lane r+1 reads it two steps later.
struct StripeState {
  alignas(32) uint64_t vp[kMaxLanes];
  alignas(32) uint64_t vn[kMaxLanes];
  alignas(32) uint64_t out[2][kMaxLanes];
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

// Lane l of a stripe lives in vector l / 4, element l % 4. The delta entering lane l comes from lane l-1
// two steps back: element 3 of the vector below for element 0 of the next, lane 0 from `carry`.
template <int V>
inline void shift_lanes_up(const __m256i (&out)[V], __m256i (&in)[V], uint8_t from_above) {
  in[0] = _mm256_permute4x64_epi64(out[0], _MM_SHUFFLE(2, 1, 0, 0));
  in[0] = _mm256_blend_epi32(in[0], _mm256_castsi128_si256(_mm_cvtsi32_si128(from_above)), 0x03);
  for (int v = 1; v < V; ++v)  // (prev[3], cur[0], cur[1], cur[2])
    in[v] = _mm256_alignr_epi8(out[v], _mm256_permute2x128_si256(out[v - 1], out[v], 0x21), 8);
}

// The vector steps t in [first, last) of a stripe of 4V lanes: every lane has a column. kTail: the stripe
// holding the pattern's last word (fewer lanes may be real, the last one reads its delta below bit 63).
template <int V, bool kTail>
void vector_steps(StripeState& st, const uint64_t* peq, const uint32_t* text, int64_t first, int64_t last,
                  uint8_t* carry, const int* out_shift, int out_lane) {
  constexpr int W = kStripeWords;
  const __m256i one = _mm256_set1_epi64x(1);
  const __m256i two = _mm256_set1_epi64x(2);
  __m256i shift[V], vp[V], vn[V], out_even[V], out_odd[V];
  for (int v = 0; v < V; ++v) {
    shift[v] = _mm256_setr_epi64x(out_shift[4 * v], out_shift[4 * v + 1], out_shift[4 * v + 2], out_shift[4 * v + 3]);
    vp[v] = _mm256_load_si256((const __m256i*)(st.vp + 4 * v));
    vn[v] = _mm256_load_si256((const __m256i*)(st.vn + 4 * v));
    out_even[v] = _mm256_load_si256((const __m256i*)(st.out[0] + 4 * v));
    out_odd[v] = _mm256_load_si256((const __m256i*)(st.out[1] + 4 * v));
  }
  alignas(32) uint64_t out_lanes[4 * V];

  auto step = [&](int64_t t, __m256i(&out_same_parity)[V]) __attribute__((always_inline)) {
    __m256i in[V];
    shift_lanes_up<V>(out_same_parity, in, carry[t]);
    for (int v = 0; v < V; ++v) {
      __m256i not_hp_in = _mm256_andnot_si256(in[v], one);
      __m256i hn_in = _mm256_srli_epi64(in[v], 1);
      // Match words: lane l looks up text[t - 2l] in its own column of the table.
      const int l = 4 * v;
      __m128i lo = _mm_insert_epi64(_mm_cvtsi64_si128((long long)peq[(int64_t)text[t - 2 * l] * W + l]),
                                    (long long)peq[(int64_t)text[t - 2 * l - 2] * W + l + 1], 1);
      __m128i hi = _mm_insert_epi64(_mm_cvtsi64_si128((long long)peq[(int64_t)text[t - 2 * l - 4] * W + l + 2]),
                                    (long long)peq[(int64_t)text[t - 2 * l - 6] * W + l + 3], 1);
      __m256i x = _mm256_or_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1), hn_in);
      __m256i d0 = _mm256_or_si256(_mm256_xor_si256(_mm256_add_epi64(_mm256_and_si256(x, vp[v]), vp[v]), vp[v]),
                                   _mm256_or_si256(x, vn[v]));
      __m256i not_hp = _mm256_andnot_si256(vn[v], _mm256_or_si256(d0, vp[v]));  // ~(vn | ~(d0 | vp))
      __m256i hn = _mm256_and_si256(d0, vp[v]);
      if (kTail) {
        out_same_parity[v] =
            _mm256_or_si256(_mm256_xor_si256(_mm256_and_si256(_mm256_srlv_epi64(not_hp, shift[v]), one), one),
                            _mm256_slli_epi64(_mm256_and_si256(_mm256_srlv_epi64(hn, shift[v]), one), 1));
      } else {
        out_same_parity[v] = _mm256_or_si256(_mm256_xor_si256(_mm256_srli_epi64(not_hp, 63), one),
                                             _mm256_and_si256(_mm256_srli_epi64(hn, 62), two));
      }
      __m256i not_hp_shifted = _mm256_or_si256(_mm256_slli_epi64(not_hp, 1), not_hp_in);
      __m256i hn_shifted = _mm256_or_si256(_mm256_slli_epi64(hn, 1), hn_in);
      vp[v] = _mm256_or_si256(hn_shifted, _mm256_andnot_si256(d0, not_hp_shifted));
      vn[v] = _mm256_andnot_si256(not_hp_shifted, d0);
    }
    if (kTail) {
      for (int v = 0; v < V; ++v) _mm256_store_si256((__m256i*)(out_lanes + 4 * v), out_same_parity[v]);
      carry[t - kStagger * out_lane] = (uint8_t)out_lanes[out_lane];
    } else {
      carry[t - kStagger * (4 * V - 1)] = (uint8_t)_mm256_extract_epi64(out_same_parity[V - 1], 3);
    }
  };

  int64_t t = first;
  if (t < last && (t & 1)) step(t++, out_odd);
  for (; t + 1 < last; t += 2) {
    step(t, out_even);
    step(t + 1, out_odd);
  }
  if (t < last) step(t++, out_even);
  for (int v = 0; v < V; ++v) {
    _mm256_store_si256((__m256i*)(st.vp + 4 * v), vp[v]);
    _mm256_store_si256((__m256i*)(st.vn + 4 * v), vn[v]);
    _mm256_store_si256((__m256i*)(st.out[0] + 4 * v), out_even[v]);
    _mm256_store_si256((__m256i*)(st.out[1] + 4 * v), out_odd[v]);
  }
}

// A stripe of 4V lanes holding `lanes` real words (lanes above them compute unused values).
template <int V>
void stripe_lanes(const uint64_t* peq, const uint32_t* text, int64_t n, uint8_t* carry, const int* out_shift,
                  int lanes) {
  constexpr int L = 4 * V;
  StripeState st;
  for (int r = 0; r < L; ++r) st.vp[r] = ~uint64_t{0}, st.vn[r] = 0, st.out[0][r] = st.out[1][r] = 0;
  const int out_lane = lanes - 1;
  const bool tail = lanes != L || out_shift[L - 1] != 63;

  // Lanes run from the bottom up within a step, so lane r reads out[p][r-1] before lane r-1 overwrites it.
  auto masked_step = [&](int64_t t) {
    for (int r = L - 1; r >= 0; --r) {
      int64_t c = t - kStagger * r;
      if (c < 0 || c >= n) continue;
      uint64_t in = r == 0 ? carry[c] : st.out[t & 1][r - 1];
      uint64_t out = advance_lane(st, r, in, peq[(int64_t)text[c] * kStripeWords + r], out_shift[r]);
      st.out[t & 1][r] = out;
      if (r == out_lane) carry[c] = (uint8_t)out;
    }
  };

  // Vector steps need every lane on a column: t - 2(L-1) >= 0.
  const int64_t full_begin = kStagger * (L - 1);
  const int64_t steps = n + kStagger * (L - 1);
  int64_t t = 0;
  for (; t < std::min(full_begin, steps); ++t) masked_step(t);
  if (t < n) {
    if (tail)
      vector_steps<V, true>(st, peq, text, t, n, carry, out_shift, out_lane);
    else
      vector_steps<V, false>(st, peq, text, t, n, carry, out_shift, out_lane);
    t = n;
  }
  for (; t < steps; ++t) masked_step(t);
}

}  // namespace

// One stripe of `lanes` (1..8) words; peq[id * kStripeWords + r]. Up to four words take one vector.
void stripe_avx2(const uint64_t* peq, const uint32_t* text, int64_t n, uint8_t* carry, const int* out_shift,
                 int lanes) {
  if (lanes <= 4)
    stripe_lanes<1>(peq, text, n, carry, out_shift, lanes);
  else
    stripe_lanes<2>(peq, text, n, carry, out_shift, lanes);
}

}  // namespace recode::editdist
