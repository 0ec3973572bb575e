// CPU sampler: one row at a time, rows in parallel. The definition is in sampling.h, the shared arithmetic in
// sampling_core.h, the per-row algorithm in sampling_row.h. Passes over a row:
//   1. max (and NaN / +inf / all -inf checks);
//   2. top-k threshold: for k <= 1024 one pass with a min-heap of keys (AVX2 skips blocks of eight below the
//      heap's minimum), else a radix select on the ordered 32-bit keys (8 bits a level; the chosen level-0
//      bucket is gathered once and refined in memory);
//   3. total mass in units (for top-p also the level-0 mass histogram over the top-k set, and every weight kept
//      in a per-thread buffer so that later passes do not recompute e^t);
//   4. top-p threshold: the chosen bucket's tokens gathered with their units, levels 1-3 on the survivors;
//   5. kept mass (known from step 4 unless min-p is on), then the inverse-CDF pick in index order. Where a pass
//      sums the kept mass anyway (unfiltered, top-k, min-p) it does so per chunk of 2048 tokens and the pick reads
//      only the chunk holding the target; blocks with no token at or above the threshold are skipped.
// Unfiltered rows (the RL rollout default) only run 1 and 3 over the whole row. The portable instantiation here is
// the plain code; sampling_avx2.cpp instantiates the same algorithm with 8-wide passes for fp32 (identical results).
#include "sampling/sampling.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/parallel.h"
#include "sampling_core.h"
#include "sampling/sampling_cpu.h"
#include "sampling/sampling_row.h"

namespace recode::sampling {

[[noreturn]] void throw_row_status(int status, int row, int index) {
  std::string where = "sample: logits row " + std::to_string(row);
  if (status == kRowNaN) throw Error("ERR_INVALID_ARG", where + " holds NaN at index " + std::to_string(index));
  if (status == kRowPosInf)
    throw Error("ERR_INVALID_ARG", where + " holds +Infinity at index " + std::to_string(index));
  throw Error("ERR_INVALID_ARG", where + " is entirely -Infinity (no token can be sampled)");
}

void check_params(const Params& p, int row) {
  auto bad = [&](const std::string& what) {
    throw Error("ERR_INVALID_ARG", "sample: row " + std::to_string(row) + ": " + what);
  };
  if (!(p.temperature >= 0.f) || !std::isfinite(p.temperature))
    bad("temperature must be a finite number >= 0, got " + std::to_string(p.temperature));
  // 1/T must be a finite float: below the smallest normal float (2^-126) 1/T overflows to infinity and the
  // top token's scaled logit becomes 0 * inf = NaN. Such a temperature is rejected rather than silently
  // turned into greedy decoding (which T = 0 asks for explicitly).
  if (p.temperature > 0.f && p.temperature < std::numeric_limits<float>::min()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", (double)p.temperature);
    bad(std::string("temperature ") + buf +
        " is too small (1/T overflows float32): use 0 for greedy or a value >= 1.2e-38");
  }
  if (p.top_k < 0) bad("topK must be an integer >= 0 (0 = off), got " + std::to_string(p.top_k));
  if (!(p.top_p > 0.f && p.top_p <= 1.f)) bad("topP must be in (0, 1], got " + std::to_string(p.top_p));
  if (!(p.min_p >= 0.f && p.min_p <= 1.f)) bad("minP must be in [0, 1], got " + std::to_string(p.min_p));
}

namespace {

template <class T>
Result sample_dispatch(const T* x, int vocab, const Params& p, uint64_t seed, uint64_t row_id, uint64_t step, int row) {
  if (simd_level() == SimdLevel::AVX2) return cpu::sample_one_avx2(x, vocab, p, seed, row_id, step, row);
  return cpu::sample_one<cpu::PortablePasses>(x, vocab, p, seed, row_id, step, row);
}

template <class T>
void sample_many(const T* logits, int rows, int vocab, const Params* per_row, uint64_t seed, const uint64_t* row_ids,
                 const uint64_t* steps, Result* out) {
  parallel_for(rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      out[r] = sample_dispatch(logits + (size_t)r * vocab, vocab, per_row[r], seed, row_ids[r], steps[r], (int)r);
  });
}

}  // namespace

Result sample_row(const float* logits, int vocab, const Params& p, uint64_t seed, uint64_t row_id, uint64_t step) {
  return sample_dispatch(logits, vocab, p, seed, row_id, step, 0);
}
Result sample_row(const bf16* logits, int vocab, const Params& p, uint64_t seed, uint64_t row_id, uint64_t step) {
  return sample_dispatch(logits, vocab, p, seed, row_id, step, 0);
}
void sample_rows(const float* logits, int rows, int vocab, const Params* per_row, uint64_t seed,
                 const uint64_t* row_ids, const uint64_t* steps, Result* out) {
  sample_many(logits, rows, vocab, per_row, seed, row_ids, steps, out);
}
void sample_rows(const bf16* logits, int rows, int vocab, const Params* per_row, uint64_t seed, const uint64_t* row_ids,
                 const uint64_t* steps, Result* out) {
  sample_many(logits, rows, vocab, per_row, seed, row_ids, steps, out);
}

}  // namespace recode::sampling
