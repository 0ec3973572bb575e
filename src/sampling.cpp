// CPU sampler: one row at a time, rows in parallel. The definition is in sampling.h; the shared arithmetic in
// sampling_core.h. Passes over a row:
//   1. max (and NaN / +inf / all -inf checks);
//   2. top-k threshold: radix select on the ordered 32-bit keys, 8 bits a level, counting tokens;
//   3. total mass in units (and, for top-p, the first radix level of the mass histogram over the top-k set);
//   4. top-p threshold: radix select on the mass, levels 2-4;
//   5. kept mass, then the inverse-CDF pick in index order with 64 random bits.
// Unfiltered rows (the RL rollout default) only run 1, 3 and 5, and those have AVX2 variants for fp32.
#include "sampling.h"

#include <cmath>
#include <string>

#include "cpu_features.h"
#include "napi_util.h"
#include "parallel.h"
#include "sampling_core.h"
#include "sampling_cpu.h"
#include "sampling_row.h"

namespace recode::sampling {

void check_params(const Params& p, int row) {
  auto bad = [&](const std::string& what) {
    throw Error("ERR_INVALID_ARG", "sample: row " + std::to_string(row) + ": " + what);
  };
  if (!(p.temperature >= 0.f) || !std::isfinite(p.temperature))
    bad("temperature must be a finite number >= 0, got " + std::to_string(p.temperature));
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
void sample_rows(const bf16* logits, int rows, int vocab, const Params* per_row, uint64_t seed,
                 const uint64_t* row_ids, const uint64_t* steps, Result* out) {
  sample_many(logits, rows, vocab, per_row, seed, row_ids, steps, out);
}

}  // namespace recode::sampling
