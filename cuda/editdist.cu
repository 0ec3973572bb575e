// Batched Levenshtein distance over code points on the GPU (and, through the SIMT emulation, on the CPU).
// Input: one code-point buffer and 2n+1 offsets; pair i is a = chars[off[2i], off[2i+1]),
// b = chars[off[2i+1], off[2i+2]) (the layout of src/editdist/editdist.h).
//
// Two kernels, chosen per pair on the host by min(|a|, |b|):
//   - short pairs (<= 64 code points on the shorter side): one thread per pair, Myers' single-word
//     bit-parallel recurrence; the match word of a text character is built by comparing it with the
//     pattern's code points (at most 64);
//   - long pairs: one warp per pair. The pattern (shorter side) is cut into 64-row words; lane r owns word
//     r of the current stripe of 32 words and keeps that word's 64 code points in shared memory. The warp
//     advances along an anti-diagonal: at step t lane r works on text column t - r, receiving the
//     horizontal delta at its top boundary from lane r-1 by a shuffle (lane r-1 produced it one step
//     earlier). Patterns longer than 32 words run stripe after stripe; the bottom lane of a stripe leaves
//     its deltas in a per-pair global scratch row (one byte per text column) that lane 0 of the next
//     stripe reads.
// Both strip the common prefix and suffix first (the warp compares 32 code points at a time with a ballot).
// Uses only what src/simt/simt.h emulates: shared memory, __syncwarp, __shfl_up_sync, __ballot_sync.
#include "common.cuh"
#include "recode_editdist.h"

namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kShortThreads = 128;
constexpr unsigned kFullMask = 0xffffffffu;

// One Myers/Hyyro step of a 64-row word. `in` is the horizontal delta entering the word's top row (bit 0:
// +1, bit 1: -1); the return value is the delta leaving row `out_shift` in the same encoding.
__device__ __forceinline__ unsigned advance_word(unsigned long long& vp, unsigned long long& vn,
                                                 unsigned long long match, unsigned in, int out_shift) {
  unsigned long long hp_in = in & 1u, hn_in = in >> 1;
  unsigned long long x = match | hn_in;
  unsigned long long d0 = (((x & vp) + vp) ^ vp) | x | vn;
  unsigned long long hp = vn | ~(d0 | vp);
  unsigned long long hn = d0 & vp;
  unsigned out = (unsigned)((hp >> out_shift) & 1ull) | ((unsigned)((hn >> out_shift) & 1ull) << 1);
  hp = (hp << 1) | hp_in;
  hn = (hn << 1) | hn_in;
  vp = hn | ~(d0 | hp);
  vn = hp & d0;
  return out;
}

__global__ void edit_distance_short_kernel(const unsigned* chars, const long long* offsets, const int* pair_index,
                                           int count, int* out) {
  int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= count) return;
  int p = pair_index[k];
  const unsigned* a = chars + offsets[2 * p];
  const unsigned* b = chars + offsets[2 * p + 1];
  long long na = offsets[2 * p + 1] - offsets[2 * p], nb = offsets[2 * p + 2] - offsets[2 * p + 1];
  while (na > 0 && nb > 0 && a[0] == b[0]) ++a, ++b, --na, --nb;
  while (na > 0 && nb > 0 && a[na - 1] == b[nb - 1]) --na, --nb;
  if (na == 0 || nb == 0) {
    out[p] = (int)(na + nb);
    return;
  }
  const unsigned* pattern = na <= nb ? a : b;
  const unsigned* text = na <= nb ? b : a;
  int m = (int)(na <= nb ? na : nb);  // <= 64: the host sends only such pairs here
  long long n = na <= nb ? nb : na;
  unsigned long long vp = ~0ull, vn = 0;
  long long score = m;
  for (long long j = 0; j < n; ++j) {
    unsigned ch = text[j];
    unsigned long long match = 0;
    for (int i = 0; i < m; ++i) match |= (unsigned long long)(pattern[i] == ch) << i;
    unsigned d = advance_word(vp, vn, match, 1u, m - 1);
    score += (long long)(d & 1u) - (long long)(d >> 1);
  }
  out[p] = (int)score;
}

__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    edit_distance_warp_kernel(const unsigned* chars, const long long* offsets, const int* pair_index, int count,
                              unsigned char* scratch, const long long* scratch_offsets, int* out) {
  // Each lane's 64 pattern code points, laid out [row][lane] so a warp's loads hit 32 different banks.
  __shared__ unsigned pattern_rows[kWarpsPerBlock][64 * 32];
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int k = blockIdx.x * kWarpsPerBlock + warp;
  if (k >= count) return;  // the whole warp leaves together
  unsigned* rows = pattern_rows[warp];
  const int p = pair_index[k];
  const unsigned* a = chars + offsets[2 * p];
  const unsigned* b = chars + offsets[2 * p + 1];
  long long na = offsets[2 * p + 1] - offsets[2 * p], nb = offsets[2 * p + 2] - offsets[2 * p + 1];

  // Common prefix, 32 code points per ballot.
  long long limit = na < nb ? na : nb, prefix = 0;
  for (;;) {
    long long i = prefix + lane;
    unsigned differ = __ballot_sync(kFullMask, i >= limit || a[i] != b[i]);
    if (differ) {
      prefix += __ffs((int)differ) - 1;
      break;
    }
    prefix += 32;
  }
  if (prefix > limit) prefix = limit;
  a += prefix, b += prefix, na -= prefix, nb -= prefix;
  // Common suffix.
  limit = na < nb ? na : nb;
  long long suffix = 0;
  for (;;) {
    long long i = suffix + lane;
    unsigned differ = __ballot_sync(kFullMask, i >= limit || a[na - 1 - i] != b[nb - 1 - i]);
    if (differ) {
      suffix += __ffs((int)differ) - 1;
      break;
    }
    suffix += 32;
  }
  if (suffix > limit) suffix = limit;
  na -= suffix, nb -= suffix;
  if (na == 0 || nb == 0) {
    if (lane == 0) out[p] = (int)(na + nb);
    return;
  }

  const unsigned* pattern = na <= nb ? a : b;
  const unsigned* text = na <= nb ? b : a;
  const long long m = na <= nb ? na : nb, n = na <= nb ? nb : na;
  const long long words = (m + 63) / 64;
  const long long stripes = (words + 31) / 32;
  unsigned char* carry = scratch + scratch_offsets[k];
  long long score = 0;  // sum of deltas along the last pattern row (kept by the lane owning the last word)

  for (long long s = 0; s < stripes; ++s) {
    const long long word = s * 32 + lane;
    for (int j = 0; j < 64; ++j) {
      long long i = word * 64 + j;
      // Rows past the pattern's end hold a value no code point has; their bits never reach lower rows.
      rows[j * 32 + lane] = i < m ? pattern[i] : 0xffffffffu;
    }
    __syncwarp();
    const int out_shift = word == words - 1 ? (int)((m - 1) & 63) : 63;
    const bool last_stripe = s == stripes - 1;
    // The stripe ends once the lane owning the last useful word has finished column n-1.
    const long long last_lane = last_stripe ? (words - 1) - s * 32 : 31;
    unsigned long long vp = ~0ull, vn = 0;
    unsigned mine = 0;  // the delta this lane produced at the previous step
    for (long long t = 0; t < n + last_lane; ++t) {
      unsigned from_above = __shfl_up_sync(kFullMask, mine, 1);
      long long c = t - lane;
      if (c >= 0 && c < n && lane <= last_lane) {
        unsigned in = lane != 0 ? from_above : (s == 0 ? 1u : carry[c]);
        unsigned ch = text[c];
        unsigned lo = 0, hi = 0;
#if defined(__CUDACC__)
#pragma unroll
#endif
        for (int j = 0; j < 32; ++j) {
          lo |= (unsigned)(rows[j * 32 + lane] == ch) << j;
          hi |= (unsigned)(rows[(j + 32) * 32 + lane] == ch) << j;
        }
        unsigned long long match = ((unsigned long long)hi << 32) | lo;
        mine = advance_word(vp, vn, match, in, out_shift);
        if (lane == 31 && !last_stripe) carry[c] = (unsigned char)mine;
        if (word == words - 1) score += (long long)(mine & 1u) - (long long)(mine >> 1);
      }
    }
    __syncwarp();
  }
  if (lane == (int)((words - 1) & 31)) out[p] = (int)(m + score);
}

}  // namespace

// chars: the code points from offsets[0] to offsets[2 * pairs]; offsets: 2 * pairs + 1 ascending positions
// into chars (offsets[0] need not be 0, so callers may pass a slice of a larger batch); out: pairs distances.
RECODE_API(edit_distance)(const uint32_t* chars, const int64_t* offsets, int64_t pairs, int32_t* out, char* err,
                          size_t err_len) {
  RECODE_API_TRY
  if (pairs < 0 || pairs > (int64_t)1 << 30) {
    snprintf(err, err_len, "edit_distance: pairs %lld out of range", (long long)pairs);
    return 1;
  }
  if (pairs == 0) return 0;
  const int64_t base = offsets[0];
  const int64_t total = offsets[2 * pairs] - base;
  // Host-side plan: which pairs go to which kernel, and the scratch rows of multi-stripe pairs.
  int* short_index = (int*)malloc(sizeof(int) * pairs);
  int* long_index = (int*)malloc(sizeof(int) * pairs);
  long long* rebased = (long long*)malloc(sizeof(long long) * (2 * pairs + 1));
  long long* scratch_offsets = (long long*)malloc(sizeof(long long) * (pairs + 1));
  if (!short_index || !long_index || !rebased || !scratch_offsets) {
    free(short_index), free(long_index), free(rebased), free(scratch_offsets);
    snprintf(err, err_len, "edit_distance: out of host memory");
    return 2;
  }
  int n_short = 0, n_long = 0;
  long long scratch_bytes = 0;
  for (int64_t i = 0; i <= 2 * pairs; ++i) rebased[i] = offsets[i] - base;
  for (int64_t i = 0; i < pairs; ++i) {
    long long na = rebased[2 * i + 1] - rebased[2 * i], nb = rebased[2 * i + 2] - rebased[2 * i + 1];
    long long m = na < nb ? na : nb, n = na < nb ? nb : na;
    if (m <= 64) {
      short_index[n_short++] = (int)i;
    } else {
      scratch_offsets[n_long] = scratch_bytes;
      if (m > 64 * 32) scratch_bytes += n;  // a carry row only when there is more than one stripe
      long_index[n_long++] = (int)i;
    }
  }

  unsigned* d_chars = nullptr;
  long long *d_offsets = nullptr, *d_scratch_offsets = nullptr;
  int *d_short = nullptr, *d_long = nullptr, *d_out = nullptr;
  unsigned char* d_scratch = nullptr;
  int rc = 0;
  auto run = [&]() -> int {
    RECODE_CUDA_CHECK(cudaMalloc(&d_chars, (size_t)(total > 0 ? total : 1) * sizeof(unsigned)));
    RECODE_CUDA_CHECK(cudaMalloc(&d_offsets, (size_t)(2 * pairs + 1) * sizeof(long long)));
    RECODE_CUDA_CHECK(cudaMalloc(&d_out, (size_t)pairs * sizeof(int)));
    RECODE_CUDA_CHECK(cudaMalloc(&d_short, (size_t)(n_short > 0 ? n_short : 1) * sizeof(int)));
    RECODE_CUDA_CHECK(cudaMalloc(&d_long, (size_t)(n_long > 0 ? n_long : 1) * sizeof(int)));
    RECODE_CUDA_CHECK(cudaMalloc(&d_scratch_offsets, (size_t)(n_long > 0 ? n_long : 1) * sizeof(long long)));
    RECODE_CUDA_CHECK(cudaMalloc(&d_scratch, (size_t)(scratch_bytes > 0 ? scratch_bytes : 1)));
    if (total > 0)
      RECODE_CUDA_CHECK(cudaMemcpy(d_chars, chars + base, (size_t)total * sizeof(unsigned), cudaMemcpyHostToDevice));
    RECODE_CUDA_CHECK(
        cudaMemcpy(d_offsets, rebased, (size_t)(2 * pairs + 1) * sizeof(long long), cudaMemcpyHostToDevice));
    if (n_short > 0) {
      RECODE_CUDA_CHECK(cudaMemcpy(d_short, short_index, (size_t)n_short * sizeof(int), cudaMemcpyHostToDevice));
      SIMT_LAUNCH(edit_distance_short_kernel, dim3(ceil_div((unsigned)n_short, kShortThreads)), dim3(kShortThreads), 0,
                  0, d_chars, d_offsets, d_short, n_short, d_out);
      RECODE_CUDA_CHECK(cudaGetLastError());
    }
    if (n_long > 0) {
      RECODE_CUDA_CHECK(cudaMemcpy(d_long, long_index, (size_t)n_long * sizeof(int), cudaMemcpyHostToDevice));
      RECODE_CUDA_CHECK(
          cudaMemcpy(d_scratch_offsets, scratch_offsets, (size_t)n_long * sizeof(long long), cudaMemcpyHostToDevice));
      SIMT_LAUNCH(edit_distance_warp_kernel, dim3(ceil_div((unsigned)n_long, kWarpsPerBlock)),
                  dim3(kWarpsPerBlock * 32), 0, 0, d_chars, d_offsets, d_long, n_long, d_scratch, d_scratch_offsets,
                  d_out);
      RECODE_CUDA_CHECK(cudaGetLastError());
    }
    RECODE_CUDA_CHECK(cudaMemcpy(out, d_out, (size_t)pairs * sizeof(int), cudaMemcpyDeviceToHost));
    return 0;
  };
  rc = run();
  cudaFree(d_chars), cudaFree(d_offsets), cudaFree(d_out), cudaFree(d_short), cudaFree(d_long);
  cudaFree(d_scratch_offsets), cudaFree(d_scratch);
  free(short_index), free(long_index), free(rebased), free(scratch_offsets);
  return rc;
  RECODE_API_CATCH
}
