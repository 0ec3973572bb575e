// Levenshtein distance over code points: the plain reference, the bit-parallel fast path, the batch driver.
// See editdist.h for the layout of a batch and for how the layers relate.
#include "editdist/editdist.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/cpu_features.h"
#include "core/parallel.h"

namespace recode::editdist {

// ---- UTF-16 ------------------------------------------------------------------------------------------------

static inline bool is_high_surrogate(uint32_t u) { return u >= 0xD800 && u <= 0xDBFF; }
static inline bool is_low_surrogate(uint32_t u) { return u >= 0xDC00 && u <= 0xDFFF; }

int64_t utf16_to_code_points(const uint16_t* units, int64_t n, uint32_t* out) {
  int64_t k = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u = units[i];
    if (is_high_surrogate(u) && i + 1 < n && is_low_surrogate(units[i + 1])) {
      out[k++] = 0x10000 + ((u - 0xD800) << 10) + (units[i + 1] - 0xDC00);
      ++i;
    } else {
      out[k++] = u;
    }
  }
  return k;
}

int64_t utf16_code_point_length(const uint16_t* units, int64_t n) {
  int64_t k = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (is_high_surrogate(units[i]) && i + 1 < n && is_low_surrogate(units[i + 1])) ++i;
    ++k;
  }
  return k;
}

// ---- reference -----------------------------------------------------------------------------------------------

int64_t reference(const uint32_t* a, int64_t na, const uint32_t* b, int64_t nb) {
  // prev[j] = D[i-1][j], cur[j] = D[i][j]: the cost of turning a[0,i) into b[0,j).
  std::vector<int64_t> prev(nb + 1), cur(nb + 1);
  for (int64_t j = 0; j <= nb; ++j) prev[j] = j;
  for (int64_t i = 1; i <= na; ++i) {
    cur[0] = i;
    for (int64_t j = 1; j <= nb; ++j) {
      int64_t substitute = prev[j - 1] + (a[i - 1] != b[j - 1] ? 1 : 0);
      int64_t remove = prev[j] + 1;
      int64_t insert = cur[j - 1] + 1;
      cur[j] = std::min({substitute, remove, insert});
    }
    std::swap(prev, cur);
  }
  return prev[nb];
}

// ---- symbols -------------------------------------------------------------------------------------------------

static inline uint32_t hash_slot(uint32_t c, int shift) { return (c * 0x9E3779B1u) >> shift; }

void Symbols::build(const uint32_t* pattern, int64_t m, const uint32_t* text, int64_t n) {
  pattern_ids.resize(m);
  text_ids.resize(n);
  std::memset(ascii_, 0, sizeof ascii_);
  int64_t wide = 0;
  for (int64_t i = 0; i < m; ++i) wide += pattern[i] >= 128;
  int bits = 4;
  while ((int64_t{1} << bits) < 2 * wide) ++bits;
  const int shift = 32 - bits;
  const uint32_t mask = (1u << bits) - 1;
  if (wide) {
    keys_.assign(size_t{1} << bits, 0);
    values_.assign(size_t{1} << bits, 0);  // 0 marks an empty slot (ids start at 1)
  }
  uint32_t next = 1;
  for (int64_t i = 0; i < m; ++i) {
    uint32_t c = pattern[i];
    if (c < 128) {
      if (!ascii_[c]) ascii_[c] = next++;
      pattern_ids[i] = ascii_[c];
      continue;
    }
    uint32_t slot = hash_slot(c, shift);
    while (values_[slot] && keys_[slot] != c) slot = (slot + 1) & mask;
    if (!values_[slot]) {
      keys_[slot] = c;
      values_[slot] = next++;
    }
    pattern_ids[i] = values_[slot];
  }
  alphabet = next;
  for (int64_t j = 0; j < n; ++j) {
    uint32_t c = text[j];
    if (c < 128) {
      text_ids[j] = ascii_[c];
    } else if (!wide) {
      text_ids[j] = 0;
    } else {
      uint32_t slot = hash_slot(c, shift);
      while (values_[slot] && keys_[slot] != c) slot = (slot + 1) & mask;
      text_ids[j] = values_[slot];
    }
  }
}

// ---- bit-parallel kernels --------------------------------------------------------------------------------------
//
// Column j of the DP matrix is held as two bit vectors over the pattern rows: VP (D[i][j] - D[i-1][j] = +1)
// and VN (= -1). One text character advances a 64-row word by one column with ~17 word operations (Myers
// 1999, in Hyyro's formulation). Words stacked vertically exchange the horizontal delta at their boundary:
// the delta entering a word's top row (hin) is shifted into bit 0 of HP/HN, and hin = -1 also sets bit 0 of
// the match vector, which stands in for the carry of the addition from the word above (Hyyro 2003).

// Single word: a pattern of 1..64 code points.
static int64_t myers_word(const Symbols& s, int64_t m, int64_t n) {
  thread_local std::vector<uint64_t> peq;
  peq.assign(s.alphabet, 0);
  for (int64_t i = 0; i < m; ++i) peq[s.pattern_ids[i]] |= uint64_t{1} << i;
  const uint64_t last = uint64_t{1} << (m - 1);
  uint64_t vp = ~uint64_t{0}, vn = 0;
  int64_t score = m;
  const uint32_t* text = s.text_ids.data();
  for (int64_t j = 0; j < n; ++j) {
    uint64_t x = peq[text[j]];
    uint64_t d0 = (((x & vp) + vp) ^ vp) | x | vn;
    uint64_t hp = vn | ~(d0 | vp);
    uint64_t hn = d0 & vp;
    score += (hp & last) != 0;
    score -= (hn & last) != 0;
    hp = (hp << 1) | 1;  // row 0 grows by one per column: hin = +1
    hn <<= 1;
    vp = hn | ~(d0 | hp);
    vn = hp & d0;
  }
  return score;
}

// A stripe of R consecutive words (block rows), advanced along an anti-diagonal: at step t, lane r works
// on text column t - r, so the R lanes are independent and the horizontal delta lane r hands to lane r+1
// is exactly the one lane r+1 needs at the next step. Lane 0 reads the deltas of the stripe above from
// `carry`; lane R-1 writes its own there for the stripe below. `out_shift[r]` is the bit whose horizontal
// delta leaves lane r (63, or the pattern's last row in the last word). peq[id * kStripeWords + r].
template <int R>
static void stripe_baseline(const uint64_t* peq, const uint32_t* text, int64_t n, uint8_t* carry,
                            const int* out_shift) {
  uint64_t vp[R], vn[R];
  uint32_t h[R];  // h[r]: delta lane r produced at the previous step (bit 0: +1, bit 1: -1)
  for (int r = 0; r < R; ++r) vp[r] = ~uint64_t{0}, vn[r] = 0, h[r] = 0;

  // HP is kept inverted (~HP): on the recurrence's critical path that saves a NOT per step.
  auto advance = [&](int r, int64_t c) __attribute__((always_inline)) {
    uint32_t in = r == 0 ? carry[c] : h[r - 1];
    uint64_t not_hp_in = (in & 1) ^ 1, hn_in = in >> 1;
    uint64_t x = peq[(int64_t)text[c] * kStripeWords + r] | hn_in;
    uint64_t d0 = (((x & vp[r]) + vp[r]) ^ vp[r]) | x | vn[r];
    uint64_t not_hp = (d0 | vp[r]) & ~vn[r];  // ~(vn | ~(d0 | vp))
    uint64_t hn = d0 & vp[r];
    uint32_t out = (uint32_t)(((not_hp >> out_shift[r]) & 1) ^ 1) | (uint32_t)(((hn >> out_shift[r]) & 1) << 1);
    not_hp = (not_hp << 1) | not_hp_in;
    hn = (hn << 1) | hn_in;
    vp[r] = hn | (~d0 & not_hp);
    vn[r] = d0 & ~not_hp;
    if (r == R - 1)
      carry[c] = (uint8_t)out;
    else
      h[r] = out;
  };

  // Lanes run from the bottom up within a step, so lane r reads h[r-1] before lane r-1 overwrites it.
  auto masked_step = [&](int64_t t) {
    for (int r = R - 1; r >= 0; --r) {
      int64_t c = t - r;
      if (c >= 0 && c < n) advance(r, c);
    }
  };
  const int64_t full_begin = R - 1, full_end = n;  // steps at which every lane has a column
  for (int64_t t = 0; t < std::min<int64_t>(full_begin, n + R - 1); ++t) masked_step(t);
  for (int64_t t = full_begin; t < full_end; ++t) {
#pragma GCC unroll 8
    for (int r = R - 1; r >= 0; --r) advance(r, t - r);
  }
  for (int64_t t = std::max<int64_t>(full_begin, n); t < n + R - 1; ++t) masked_step(t);
}

static void stripe_baseline_lanes(const uint64_t* peq, const uint32_t* text, int64_t n, uint8_t* carry,
                                  const int* out_shift, int lanes) {
  // At most four chains in flight: more would not fit the 16 general registers of x86-64.
  if (lanes > 4) {
    stripe_baseline<4>(peq, text, n, carry, out_shift);
    peq += 4, out_shift += 4, lanes -= 4;
  }
  switch (lanes) {
    case 4:
      stripe_baseline<4>(peq, text, n, carry, out_shift);
      break;
    case 3:
      stripe_baseline<3>(peq, text, n, carry, out_shift);
      break;
    case 2:
      stripe_baseline<2>(peq, text, n, carry, out_shift);
      break;
    default:
      stripe_baseline<1>(peq, text, n, carry, out_shift);
      break;
  }
}

static inline int64_t delta_of(uint8_t carry) { return (int64_t)(carry & 1) - (int64_t)(carry >> 1); }

// Hyyro blocks restricted to a diagonal band (Ukkonen): a path of cost <= k only visits cells (i, j) with
// |j - i| + |(n - m) - (j - i)| <= k, so each stripe of rows [r0, r1) needs only
// the text columns where such cells lie. Cells outside are treated as if their vertical and horizontal
// deltas were +1, which over-estimates them; hence the result is never below the true distance, and equals
// it whenever the true distance is <= k (that path lies wholly in the band). k >= n + m means no band.
int64_t blocks_within(const Symbols& s, int64_t m, int64_t n, int64_t k, bool avx2, const CancelFlag& cancel) {
  constexpr int R = kStripeWords;
  thread_local std::vector<uint64_t> peq;
  thread_local std::vector<uint8_t> carry;
  peq.assign((size_t)s.alphabet * R, 0);
  carry.assign(n, 1);  // row 0: D[0][j] - D[0][j-1] = +1 (and +1 wherever no stripe above reached)
  const int64_t words = (m + 63) / 64;
  // A narrow band is cut finer: a stripe of H rows spans H + k columns, so shorter stripes waste less.
  const int stripe_words = 2 * k < std::max(m, n) ? R / 2 : R;
  // Diagonals j - i a path of cost <= k can use: between 0 and n - m it costs |n - m| already, and each
  // step beyond that range costs two more.
  const int64_t diff = n - m, spread = std::abs(diff);
  k = std::max(k, spread);
  const int64_t lo_diagonal = std::min<int64_t>(0, diff) - (k - spread) / 2;
  const int64_t hi_diagonal = std::max<int64_t>(0, diff) + (k - spread) / 2;
  // corner = D[r0][cs]: the value at the top-left corner of the current stripe (DP row r0, DP column cs,
  // i.e. after cs text characters), from which the deltas along its left edge (+1) and bottom row count.
  int64_t corner = 0, r0 = 0, cs = 0;
  for (int64_t w = 0; w < words; w += stripe_words) {
    cancel.throw_if_requested();
    const int lanes = (int)std::min<int64_t>(stripe_words, words - w);
    const int64_t row0 = w * 64, row1 = std::min(m, (w + lanes) * 64);
    const int64_t col0 = std::max<int64_t>(0, row0 + lo_diagonal);
    const int64_t col1 = std::min<int64_t>(n - 1, row1 - 1 + hi_diagonal);
    if (w > 0) {
      corner += row0 - r0;
      for (int64_t c = cs; c < col0; ++c) corner += delta_of(carry[c]);
    }
    r0 = row0, cs = col0;
    int out_shift[R];
    for (int r = 0; r < R; ++r) out_shift[r] = 63;
    for (int r = 0; r < lanes; ++r) {
      int64_t lo = (w + r) * 64, hi = std::min(m, lo + 64);
      for (int64_t i = lo; i < hi; ++i) peq[(int64_t)s.pattern_ids[i] * R + r] |= uint64_t{1} << (i - lo);
      if (hi == m) out_shift[r] = (int)((m - 1) & 63);
    }
    const uint32_t* text = s.text_ids.data() + col0;
    if (avx2)
      stripe_avx2(peq.data(), text, col1 - col0 + 1, carry.data() + col0, out_shift, lanes);
    else
      stripe_baseline_lanes(peq.data(), text, col1 - col0 + 1, carry.data() + col0, out_shift, lanes);
    for (int r = 0; r < lanes; ++r) {
      int64_t lo = (w + r) * 64, hi = std::min(m, lo + 64);
      for (int64_t i = lo; i < hi; ++i) peq[(int64_t)s.pattern_ids[i] * R + r] = 0;
    }
  }
  // The last stripe reached column n-1 (hi_diagonal >= n - m); carry holds the deltas along row m.
  int64_t score = corner + (m - r0);
  for (int64_t c = cs; c < n; ++c) score += delta_of(carry[c]);
  return score;
}

// Two passes at most: a narrow band first (enough for similar strings), and if its answer exceeds the band,
// that answer, an upper bound on the distance, is a band wide enough for the exact result. Pairs that are
// plainly far apart (by length or by symbol counts) go straight to the full computation.
// A lower bound on the distance from symbol counts alone: every occurrence one side has in excess of the
// other must be inserted, deleted or substituted.
static int64_t count_bound(const Symbols& s, int64_t m, int64_t n) {
  thread_local std::vector<int32_t> balance;
  balance.assign(s.alphabet, 0);
  for (int64_t i = 0; i < m; ++i) ++balance[s.pattern_ids[i]];
  for (int64_t j = 0; j < n; ++j) --balance[s.text_ids[j]];
  int64_t pattern_excess = 0, text_excess = 0;
  for (int64_t id = 0; id < s.alphabet; ++id) {
    if (balance[id] > 0)
      pattern_excess += balance[id];
    else
      text_excess -= balance[id];
  }
  return std::max(pattern_excess, text_excess);
}

static int64_t blocks(const Symbols& s, int64_t m, int64_t n, const CancelFlag& cancel) {
  const bool avx2 = simd_level() == SimdLevel::AVX2;
  const int64_t longest = std::max(m, n);
  // The narrow band's width: room for the length difference, and for twice what the counts prove.
  const int64_t first = std::max({std::abs(n - m) + 64, longest / 16, 2 * count_bound(s, m, n)});
  // Worth trying when the banded pass costs a small part of a full one (a stripe of 4 words spans
  // 256 + k columns of the band instead of all of them).
  if ((64 * kStripeWords / 2 + first) * 3 < longest) {
    int64_t d = blocks_within(s, m, n, first, avx2, cancel);
    if (d <= first) return d;
    return blocks_within(s, m, n, d, avx2, cancel);
  }
  return blocks_within(s, m, n, n + m, avx2, cancel);
}

// ---- one pair ------------------------------------------------------------------------------------------------

int64_t distance(const uint32_t* a, int64_t na, const uint32_t* b, int64_t nb, const CancelFlag& cancel) {
  // Common prefix and suffix never change the distance.
  int64_t prefix = 0;
  while (prefix < na && prefix < nb && a[prefix] == b[prefix]) ++prefix;
  a += prefix, b += prefix, na -= prefix, nb -= prefix;
  while (na > 0 && nb > 0 && a[na - 1] == b[nb - 1]) --na, --nb;
  if (na == 0) return nb;
  if (nb == 0) return na;
  // The pattern (bit vectors) is the shorter side, the text the longer...
  const uint32_t* pattern = na <= nb ? a : b;
  const uint32_t* text = na <= nb ? b : a;
  int64_t m = std::min(na, nb), n = std::max(na, nb);
  if (m == 1) return std::find(text, text + n, pattern[0]) == text + n ? n : n - 1;
  thread_local Symbols symbols;
  if (m <= 64) {
    symbols.build(pattern, m, text, n);
    return myers_word(symbols, m, n);
  }
  // ...unless the longer side as pattern takes fewer stripe steps (stripes of 8 words, one step per text
  // column): 300 x 3800 code points is 1 stripe x 3800 steps one way, 8 x 300 the other.
  const int64_t stripe_rows = 64 * kStripeWords;
  if ((n + stripe_rows - 1) / stripe_rows * m < (m + stripe_rows - 1) / stripe_rows * n) {
    std::swap(pattern, text);
    std::swap(m, n);
  }
  symbols.build(pattern, m, text, n);
  return blocks(symbols, m, n, cancel);
}

int64_t distance_within(const uint32_t* a, int64_t na, const uint32_t* b, int64_t nb, int64_t k) {
  if (na == 0 || nb == 0) return na + nb;
  thread_local Symbols symbols;
  symbols.build(a, na, b, nb);  // a is the pattern, whichever is longer
  return blocks_within(symbols, na, nb, k, simd_level() == SimdLevel::AVX2, CancelFlag{});
}

// ---- batch ----------------------------------------------------------------------------------------------------

CodePointBatch decode_utf16_batch(const uint16_t* units, const int64_t* offsets, int64_t strings) {
  CodePointBatch out;
  out.offsets.assign(strings + 1, 0);
  parallel_for(strings, 256, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s)
      out.offsets[s + 1] = utf16_code_point_length(units + offsets[s], offsets[s + 1] - offsets[s]);
  });
  for (int64_t s = 0; s < strings; ++s) out.offsets[s + 1] += out.offsets[s];
  out.chars.resize(out.offsets[strings]);
  parallel_for(strings, 256, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s)
      utf16_to_code_points(units + offsets[s], offsets[s + 1] - offsets[s], out.chars.data() + out.offsets[s]);
  });
  return out;
}

void distance_batch(const uint32_t* chars, const int64_t* offsets, int64_t pairs, int32_t* out,
                    const CancelFlag& cancel, bool use_reference) {
  if (pairs <= 0) return;
  // Cut the batch into contiguous units of about equal work (|a| |b| cells, plus a little per pair), so
  // that the pool's dynamic scheduling balances long and short pairs alike.
  std::vector<int64_t> cost_prefix(pairs + 1, 0);
  for (int64_t i = 0; i < pairs; ++i) {
    int64_t na = offsets[2 * i + 1] - offsets[2 * i], nb = offsets[2 * i + 2] - offsets[2 * i + 1];
    cost_prefix[i + 1] = cost_prefix[i] + na * nb / (use_reference ? 1 : 64) + na + nb + 16;
  }
  const int64_t total = cost_prefix[pairs];
  const int64_t units = std::min<int64_t>(pairs, (int64_t)num_threads() * 16);
  std::vector<int64_t> unit_begin(units + 1, pairs);
  unit_begin[0] = 0;
  for (int64_t u = 1, i = 0; u < units; ++u) {
    int64_t target = total / units * u;
    while (i < pairs && cost_prefix[i] < target) ++i;
    unit_begin[u] = std::max(unit_begin[u - 1], i);
  }
  parallel_for(units, 1, [&](int64_t ub, int64_t ue) {
    for (int64_t i = unit_begin[ub]; i < unit_begin[ue]; ++i) {
      cancel.throw_if_requested();
      const uint32_t* a = chars + offsets[2 * i];
      const uint32_t* b = chars + offsets[2 * i + 1];
      int64_t na = offsets[2 * i + 1] - offsets[2 * i], nb = offsets[2 * i + 2] - offsets[2 * i + 1];
      out[i] = (int32_t)(use_reference ? reference(a, na, b, nb) : distance(a, na, b, nb, cancel));
    }
  });
}

}  // namespace recode::editdist
