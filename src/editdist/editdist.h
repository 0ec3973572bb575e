// Unit-cost Levenshtein distance over Unicode code points (Python str semantics: an astral character such
// as an emoji is one unit), for one pair or for a batch of pairs.
//
// Strings are arrays of uint32 code points. A batch is packed as one code-point buffer plus 2n+1 offsets:
// pair i is a = chars[offsets[2i], offsets[2i+1]) and b = chars[offsets[2i+1], offsets[2i+2]).
//
// Three layers, kept apart so the fast code can always be checked against the plain one:
//   - reference(): the textbook dynamic programme, O(|a| |b|) time, obviously correct (tests use it);
//   - distance(): common prefix/suffix stripped, trivial cases, then bit-parallel Myers (1999) for a
//     pattern of at most 64 code points and Hyyro's (2003) multi-word blocks beyond, 64 cells per word
//     operation; the AVX2 build (editdist_avx2.cpp) runs four blocks per 256-bit vector;
//   - distance_batch(): spreads pairs over the thread pool, balanced by |a| |b|, polling a CancelFlag;
//     distance_batch_on() runs a batch on a chosen backend (editdist_device.cpp: CPU, CUDA or the emulation).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/cancel.h"

namespace recode {
enum class Device;  // device/kernels.h
}

namespace recode::editdist {

// Decodes UTF-16 code units to code points: a high surrogate followed by a low one becomes one astral code
// point; a lone surrogate stays one code point of its own value (as Python keeps it). Returns the count.
int64_t utf16_to_code_points(const uint16_t* units, int64_t n, uint32_t* out);
// Code points in a UTF-16 string (the length utf16_to_code_points produces).
int64_t utf16_code_point_length(const uint16_t* units, int64_t n);

// A batch of strings as code points, string s = chars[offsets[s], offsets[s+1]) (a pair batch: 2n strings).
struct CodePointBatch {
  std::vector<uint32_t> chars;
  std::vector<int64_t> offsets;
};
// Decodes `strings` UTF-16 strings, string s = units[offsets[s], offsets[s+1]), spread over the thread pool.
CodePointBatch decode_utf16_batch(const uint16_t* units, const int64_t* offsets, int64_t strings);

// The plain dynamic programme (two rows).
int64_t reference(const uint32_t* a, int64_t na, const uint32_t* b, int64_t nb);

// The fast path: same answer as reference(). Polls `cancel` between block rows of long pairs.
int64_t distance(const uint32_t* a, int64_t na, const uint32_t* b, int64_t nb, const CancelFlag& cancel = {});

// out[i] = distance of pair i (layout above). Work is spread over parallel_for; throws ABORT_ERR when
// cancelled. `use_reference` runs reference() instead (for tests and benchmarks of the plain loop).
void distance_batch(const uint32_t* chars, const int64_t* offsets, int64_t pairs, int32_t* out,
                    const CancelFlag& cancel, bool use_reference = false);

// The same on `device`: the CPU code above, or the CUDA kernel (device CUDA, or its SIMT emulation), which
// takes slices of pairs so that a cancelled request stops between slices.
void distance_batch_on(Device device, const uint32_t* chars, const int64_t* offsets, int64_t pairs, int32_t* out,
                       const CancelFlag& cancel);

// The banded block kernel alone on a pair, a as the pattern (no prefix/suffix stripping, no single-word
// path, no choice of orientation), for tests: exact when the distance is <= k, never below it otherwise.
int64_t distance_within(const uint32_t* a, int64_t na, const uint32_t* b, int64_t nb, int64_t k);

// ---- internals shared with the AVX2 file ---------------------------------------------------------------

// A pattern (the shorter string) and a text translated to small dense symbol ids: the pattern's distinct
// code points get ids 1..k in order of first appearance, text code points absent from the pattern get 0
// (they match nothing). Bit-parallel tables are then indexed by id instead of by code point.
struct Symbols {
  std::vector<uint32_t> pattern_ids;
  std::vector<uint32_t> text_ids;
  int64_t alphabet = 0;  // k + 1 (id 0 included)
  void build(const uint32_t* pattern, int64_t m, const uint32_t* text, int64_t n);

 private:
  std::vector<uint32_t> keys_, values_;  // open-addressing map for code points >= 128
  uint32_t ascii_[128];
};

// Hyyro block rows, up to kStripeWords words at a time (see editdist.cpp). Returns the distance when it is
// at most k, otherwise a value above k that is still an upper bound on it.
constexpr int kStripeWords = 8;
int64_t blocks_within(const Symbols& s, int64_t m, int64_t n, int64_t k, bool avx2, const CancelFlag& cancel);

// One stripe of `lanes` (1..kStripeWords) words over text columns [0, n): match words
// peq[id * kStripeWords + r], horizontal deltas in and out through carry[0, n) (bit 0: +1, bit 1: -1),
// lane r's outgoing delta read at bit out_shift[r].
void stripe_avx2(const uint64_t* peq, const uint32_t* text, int64_t n, uint8_t* carry, const int* out_shift, int lanes);

}  // namespace recode::editdist
