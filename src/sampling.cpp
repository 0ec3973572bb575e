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

inline float load(const float* x, int i) { return x[i]; }
inline float load(const bf16* x, int i) { return bf16_to_float(x[i]); }

[[noreturn]] void throw_row_status(int status, int row, int index) {
  std::string where = "sample: logits row " + std::to_string(row);
  if (status == kRowNaN) throw Error("ERR_INVALID_ARG", where + " holds NaN at index " + std::to_string(index));
  if (status == kRowPosInf) throw Error("ERR_INVALID_ARG", where + " holds +Infinity at index " + std::to_string(index));
  throw Error("ERR_INVALID_ARG", where + " is entirely -Infinity (no token can be sampled)");
}

template <class T>
cpu::MaxScan row_max(const T* x, int vocab) {
  cpu::MaxScan s{-INFINITY, 0, kRowOk, -1};
  for (int i = 0; i < vocab; ++i) {
    float v = load(x, i);
    if (std::isnan(v)) return {s.max, s.argmax, kRowNaN, i};
    if (v == INFINITY) return {s.max, s.argmax, kRowPosInf, i};
    if (v > s.max) {
      s.max = v;
      s.argmax = i;
    }
  }
  if (s.max == -INFINITY) s.status = kRowAllNegInf;
  return s;
}

template <class T>
inline uint64_t units_at(const T* x, int i, float xmax, float inv_t) {
  return weight_units(sampling_weight((load(x, i) - xmax) * inv_t));
}

template <class T>
uint64_t row_units(const T* x, int vocab, float xmax, float inv_t) {
  uint64_t total = 0;
  for (int i = 0; i < vocab; ++i) total += units_at(x, i, xmax, inv_t);
  return total;
}

// Largest key tau such that at least k tokens have key >= tau (the k-th largest logit, as a key).
template <class T>
uint32_t select_top_k(const T* x, int vocab, int64_t k) {
  uint32_t prefix = 0;
  int64_t above = 0;  // tokens whose key is above the current prefix's range
  for (int level = 0; level < 4; ++level) {
    int shift = 24 - 8 * level;
    int64_t hist[256] = {0};
    for (int i = 0; i < vocab; ++i) {
      uint32_t key = order_key(load(x, i));
      if (level == 0 || (key >> (shift + 8)) == (prefix >> (shift + 8))) hist[(key >> shift) & 255u]++;
    }
    int b = 255;
    for (; b > 0; --b) {
      if (above + hist[b] >= k) break;
      above += hist[b];
    }
    prefix |= (uint32_t)b << shift;
  }
  return prefix;
}

// Largest key tau >= floor_key such that the mass of {key >= tau, key >= floor_key} reaches target.
// hist0 is the level-0 mass histogram over the tokens with key >= floor_key (computed with the total).
template <class T>
uint32_t select_top_p(const T* x, int vocab, float xmax, float inv_t, uint32_t floor_key, const uint64_t* hist0,
                      double target) {
  uint32_t prefix = 0;
  uint64_t above = 0;
  for (int level = 0; level < 4; ++level) {
    int shift = 24 - 8 * level;
    uint64_t hist[256] = {0};
    if (level == 0) {
      for (int b = 0; b < 256; ++b) hist[b] = hist0[b];
    } else {
      for (int i = 0; i < vocab; ++i) {
        uint32_t key = order_key(load(x, i));
        if (key < floor_key || (key >> (shift + 8)) != (prefix >> (shift + 8))) continue;
        hist[(key >> shift) & 255u] += units_at(x, i, xmax, inv_t);
      }
    }
    int b = 255;
    for (; b > 0; --b) {
      if ((double)(above + hist[b]) >= target) break;
      above += hist[b];
    }
    prefix |= (uint32_t)b << shift;
  }
  return prefix < floor_key ? floor_key : prefix;
}

template <class T>
Result sample_one(const T* x, int vocab, const Params& p, uint64_t seed, uint64_t row_id, uint64_t step, int row) {
  check_params(p, row);
  cpu::MaxScan s;
  constexpr bool fp32 = std::is_same_v<T, float>;
  const bool avx2 = fp32 && simd_level() == SimdLevel::AVX2;
  if constexpr (fp32) s = avx2 ? cpu::row_max_avx2(x, vocab) : row_max(x, vocab);
  else s = row_max(x, vocab);
  if (s.status != kRowOk) throw_row_status(s.status, row, s.bad_index);
  const float xmax = s.max;

  if (p.temperature == 0.f) {  // greedy: log-probability under the untempered softmax
    uint64_t total = 0;
    if constexpr (fp32) total = avx2 ? cpu::row_units_avx2(x, vocab, xmax, 1.f) : row_units(x, vocab, xmax, 1.f);
    else total = row_units(x, vocab, xmax, 1.f);
    return {s.argmax, (float)(0.0 - log_mass(total)), 0.f};
  }
  const float inv_t = 1.f / p.temperature;
  const bool need_k = p.top_k > 0 && p.top_k < vocab;
  const bool need_p = p.top_p < 1.f;
  const bool need_m = p.min_p > 0.f;

  uint32_t tau = 0;  // every key is >= 0: keep all
  if (need_k) tau = select_top_k(x, vocab, p.top_k);

  uint64_t total = 0, topk_total = 0;
  uint64_t hist0[256] = {0};
  if (!need_p) {
    if constexpr (fp32) total = avx2 ? cpu::row_units_avx2(x, vocab, xmax, inv_t) : row_units(x, vocab, xmax, inv_t);
    else total = row_units(x, vocab, xmax, inv_t);
  } else {
    for (int i = 0; i < vocab; ++i) {
      float v = load(x, i);
      uint64_t q = weight_units(sampling_weight((v - xmax) * inv_t));
      total += q;
      uint32_t key = order_key(v);
      if (key >= tau) {
        hist0[key >> 24] += q;
        topk_total += q;
      }
    }
    tau = select_top_p(x, vocab, xmax, inv_t, tau, hist0, (double)p.top_p * (double)topk_total);
  }

  auto kept = [&](float v, float w) { return order_key(v) >= tau && (!need_m || w >= p.min_p); };
  uint64_t kept_total = total;
  if (need_k || need_p || need_m) {
    kept_total = 0;
    for (int i = 0; i < vocab; ++i) {
      float v = load(x, i);
      float w = sampling_weight((v - xmax) * inv_t);
      if (kept(v, w)) kept_total += weight_units(w);
    }
  }

  const uint64_t target = philox::scale64(philox::random64(seed, row_id, step), kept_total);
  int token = -1;
  if constexpr (fp32) {
    if (avx2 && !need_k && !need_p && !need_m) token = cpu::row_pick_avx2(x, vocab, xmax, inv_t, target);
  }
  if (token < 0) {
    uint64_t cum = 0;
    int last_kept = s.argmax;
    for (int i = 0; i < vocab; ++i) {
      float v = load(x, i);
      float w = sampling_weight((v - xmax) * inv_t);
      if (!kept(v, w)) continue;
      uint64_t q = weight_units(w);
      if (q == 0) continue;
      cum += q;
      last_kept = i;
      if (cum > target) break;
    }
    token = last_kept;
  }
  double t_tok = (double)((load(x, token) - xmax) * inv_t);
  return {token, (float)(t_tok - log_mass(total)), (float)(t_tok - log_mass(kept_total))};
}

template <class T>
void sample_many(const T* logits, int rows, int vocab, const Params* per_row, uint64_t seed, const uint64_t* row_ids,
                 const uint64_t* steps, Result* out) {
  parallel_for(rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      out[r] = sample_one(logits + (size_t)r * vocab, vocab, per_row[r], seed, row_ids[r], steps[r], (int)r);
  });
}

}  // namespace

Result sample_row(const float* logits, int vocab, const Params& p, uint64_t seed, uint64_t row_id, uint64_t step) {
  return sample_one(logits, vocab, p, seed, row_id, step, 0);
}
Result sample_row(const bf16* logits, int vocab, const Params& p, uint64_t seed, uint64_t row_id, uint64_t step) {
  return sample_one(logits, vocab, p, seed, row_id, step, 0);
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
