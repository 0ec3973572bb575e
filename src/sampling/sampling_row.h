// Internal to the CPU sampler: the per-row algorithm (see sampling.cpp for the passes) as a template over the
// logits type and the full-row passes. It is instantiated twice: in sampling.cpp with portable passes (fma
// through libm), and in sampling_avx2.cpp, where fmaf compiles to the FMA instruction and the fp32 max /
// mass / pick passes are vectorised. Both give identical results (same correctly rounded operations).
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>
#include <type_traits>

#include "core/error.h"
#include "sampling/sampling.h"
#include "sampling_core.h"
#include "sampling/sampling_cpu.h"

namespace recode::sampling::cpu {
namespace {  // internal linkage: the baseline and the AVX2 translation units each keep their own instantiation

// Passes used when no vectorised variant applies.
struct PortablePasses;

inline float load(const float* x, int i) { return x[i]; }
inline float load(const bf16* x, int i) { return bf16_to_float(x[i]); }

template <class T>
MaxScan row_max(const T* x, int vocab) {
  MaxScan s{-INFINITY, 0, kRowOk, -1};
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
// Small k: one pass keeping the k largest keys in a min-heap (most tokens fail the first comparison).
template <class T>
uint32_t select_top_k_heap(const T* x, int vocab, int k) {
  std::vector<uint32_t> heap;
  heap.reserve(k);
  for (int i = 0; i < vocab; ++i) {
    uint32_t key = order_key(load(x, i));
    if ((int)heap.size() < k) {
      heap.push_back(key);
      std::push_heap(heap.begin(), heap.end(), std::greater<uint32_t>());
    } else if (key > heap.front()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<uint32_t>());
      heap.back() = key;
      std::push_heap(heap.begin(), heap.end(), std::greater<uint32_t>());
    }
  }
  return heap.front();
}

template <class T>
uint32_t select_top_k(const T* x, int vocab, int64_t k) {
  if (k <= 1024) return select_top_k_heap(x, vocab, (int)k);
  // Radix select, 8 bits a level: level 0 over the row, then over the keys of the chosen bucket only.
  int64_t hist[256] = {0};
  for (int i = 0; i < vocab; ++i) hist[order_key(load(x, i)) >> 24]++;
  int64_t above = 0;
  int b = 255;
  for (; b > 0; --b) {
    if (above + hist[b] >= k) break;
    above += hist[b];
  }
  uint32_t prefix = (uint32_t)b << 24;
  thread_local std::vector<uint32_t> candidates;
  candidates.clear();
  for (int i = 0; i < vocab; ++i) {
    uint32_t key = order_key(load(x, i));
    if ((key >> 24) == (uint32_t)b) candidates.push_back(key);
  }
  for (int level = 1; level < 4; ++level) {
    int shift = 24 - 8 * level;
    int64_t h[256] = {0};
    size_t kept = 0;  // drop the keys outside the chosen prefix: later levels scan only the survivors
    for (uint32_t key : candidates)
      if ((key >> (shift + 8)) == (prefix >> (shift + 8))) {
        h[(key >> shift) & 255u]++;
        candidates[kept++] = key;
      }
    candidates.resize(kept);
    b = 255;
    for (; b > 0; --b) {
      if (above + h[b] >= k) break;
      above += h[b];
    }
    prefix |= (uint32_t)b << shift;
  }
  return prefix;
}

// A token of the top-p bucket: its key and its weight in units.
struct Candidate {
  uint32_t key;
  uint64_t units;
};

// Appends {key, units} of every token with key >= floor_key whose key's top byte is `bucket`, in index order;
// w holds the row's weights (stored by the units_hist pass).
// out has room for vocab entries; returns the count.
template <class T>
int gather_portable(const T* x, const float* w, int vocab, uint32_t floor_key, uint32_t bucket, Candidate* out) {
  int n = 0;
  for (int i = 0; i < vocab; ++i) {
    uint32_t key = order_key(load(x, i));
    if (key >= floor_key && (key >> 24) == bucket) out[n++] = {key, weight_units(w[i])};
  }
  return n;
}

// Largest key tau >= floor_key such that the mass of {key >= tau, key >= floor_key} reaches target.
// hist0 is the level-0 mass histogram over the tokens with key >= floor_key (computed with the total). After
// level 0 the tokens of the chosen bucket are gathered once with their units, and levels 1-3 run on them only.
// *kept_mass receives the mass of {key >= tau} within the top-k set.
template <class T, class Gather>
uint32_t select_top_p(const T* x, const float* w, int vocab, uint32_t floor_key, const uint64_t* hist0, double target,
                      uint64_t* kept_mass, Gather gather) {
  uint64_t above = 0;
  int b = 255;
  for (; b > 0; --b) {
    if ((double)(above + hist0[b]) >= target) break;
    above += hist0[b];
  }
  uint32_t prefix = (uint32_t)b << 24;
  thread_local std::vector<Candidate> buffer;
  if ((int)buffer.size() < vocab) buffer.resize(vocab);
  Candidate* cand = buffer.data();
  int n = gather(x, w, vocab, floor_key, (uint32_t)b, cand);
  for (int level = 1; level < 4; ++level) {
    int shift = 24 - 8 * level;
    uint64_t hist[256] = {0};
    int kept = 0;  // drop the tokens outside the chosen prefix: later levels scan only the survivors
    for (int i = 0; i < n; ++i)
      if ((cand[i].key >> (shift + 8)) == (prefix >> (shift + 8))) {
        hist[(cand[i].key >> shift) & 255u] += cand[i].units;
        cand[kept++] = cand[i];
      }
    n = kept;
    b = 255;
    for (; b > 0; --b) {
      if ((double)(above + hist[b]) >= target) break;
      above += hist[b];
    }
    prefix |= (uint32_t)b << shift;
    if (level == 3) *kept_mass = above + hist[b];
  }
  return prefix < floor_key ? floor_key : prefix;
}

// Portable full-row passes with a threshold: kept(i) = key_i >= tau and (min_p == 0 or w_i >= min_p).
// Also stores every weight in w (the top-p gather and pick read them instead of recomputing e^t).
template <class T>
uint64_t units_hist_portable(const T* x, int vocab, float xmax, float inv_t, uint32_t floor_key, uint64_t* hist0,
                             uint64_t* topk_total, float* w) {
  uint64_t total = 0, topk = 0;
  for (int i = 0; i < vocab; ++i) {
    float v = load(x, i);
    w[i] = sampling_weight((v - xmax) * inv_t);
    uint64_t q = weight_units(w[i]);
    total += q;
    uint32_t key = order_key(v);
    if (key >= floor_key) {
      hist0[key >> 24] += q;
      topk += q;
    }
  }
  *topk_total = topk;
  return total;
}

template <class T>
uint64_t kept_units_portable(const T* x, int vocab, float xmax, float inv_t, uint32_t tau, float min_p) {
  uint64_t kept = 0;
  for (int i = 0; i < vocab; ++i) {
    float v = load(x, i);
    if (order_key(v) < tau) continue;  // cheap test first: most tokens fall below the threshold
    float w = sampling_weight((v - xmax) * inv_t);
    if (min_p == 0.f || w >= min_p) kept += weight_units(w);
  }
  return kept;
}

// First kept index whose inclusive running mass exceeds target; -1 if none (the caller rules that out).
template <class T>
int pick_portable(const T* x, int vocab, float xmax, float inv_t, uint32_t tau, float min_p, uint64_t target) {
  uint64_t cum = 0;
  for (int i = 0; i < vocab; ++i) {
    float v = load(x, i);
    if (order_key(v) < tau) continue;
    float w = sampling_weight((v - xmax) * inv_t);
    if (min_p != 0.f && w < min_p) continue;
    cum += weight_units(w);
    if (cum > target) return i;
  }
  return -1;
}

// pick_portable over the tokens with key >= tau, their weights read from w.
template <class T>
int pick_stored_portable(const T* x, const float* w, int vocab, uint32_t tau, uint64_t target) {
  uint64_t cum = 0;
  for (int i = 0; i < vocab; ++i) {
    if (order_key(load(x, i)) < tau) continue;
    cum += weight_units(w[i]);
    if (cum > target) return i;
  }
  return -1;
}

// Passes (each for float and bf16): P::max, P::top_k (the k-th largest key), P::units (total mass),
// P::units_hist (total + level-0 top-p histogram, storing the weights), P::gather (the top-p bucket's tokens),
// P::kept_units (mass of the kept set), P::pick (the inverse-CDF pick over the kept set) and P::pick_stored (the
// same with tau only, from the stored weights).
template <class P, class T>
Result sample_one(const T* x, int vocab, const Params& p, uint64_t seed, uint64_t row_id, uint64_t step, int row) {
  check_params(p, row);
  MaxScan s = P::max(x, vocab);
  if (s.status != kRowOk) throw_row_status(s.status, row, s.bad_index);
  const float xmax = s.max;

  if (p.temperature == 0.f) {  // greedy: log-probability under the untempered softmax
    uint64_t total = P::units(x, vocab, xmax, 1.f);
    return {s.argmax, (float)(0.0 - log_mass(total)), 0.f};
  }
  const float inv_t = 1.f / p.temperature;
  const bool need_k = p.top_k > 0 && p.top_k < vocab;
  const bool need_p = p.top_p < 1.f;
  const bool need_m = p.min_p > 0.f;

  uint32_t tau = 0;  // every key is >= 0: keep all
  if (need_k) tau = P::top_k(x, vocab, p.top_k);

  // The kept mass chunk by chunk where a pass computes it anyway: the pick then reads one chunk instead of
  // running over the row again (same integer sums, so the same token).
  constexpr int kChunk = 2048;
  const int chunks = (vocab + kChunk - 1) / kChunk;
  thread_local std::vector<uint64_t> chunk_mass;
  thread_local std::vector<float> weights;  // top-p: the row's weights, computed once
  bool chunked = false;
  const float min_p = need_m ? p.min_p : 0.f;
  uint64_t total = 0, kept_total = 0;
  if (!need_p) {
    // unfiltered: the total is the kept mass; else the kept set is summed after the total
    chunk_mass.assign(chunks, 0);
    chunked = true;
    for (int c = 0; c < chunks; ++c) {
      int n = std::min(kChunk, vocab - c * kChunk);
      uint64_t u = P::units(x + (size_t)c * kChunk, n, xmax, inv_t);
      total += u;
      if (!need_k && !need_m) chunk_mass[c] = u;
    }
    if (!need_k && !need_m) kept_total = total;
  } else {
    uint64_t hist0[256] = {0}, topk_total = 0;
    weights.resize(vocab);
    total = P::units_hist(x, vocab, xmax, inv_t, tau, hist0, &topk_total, weights.data());
    tau = select_top_p(x, weights.data(), vocab, tau, hist0, (double)p.top_p * (double)topk_total, &kept_total,
                       [](auto&&... a) { return P::gather(a...); });
    // without min-p the selection already summed the mass of {key >= tau}; the pick then runs in index order
  }
  if (need_m || (need_k && !need_p)) {
    chunk_mass.assign(chunks, 0);
    chunked = true;
    kept_total = 0;
    for (int c = 0; c < chunks; ++c) {
      int n = std::min(kChunk, vocab - c * kChunk);
      chunk_mass[c] = P::kept_units(x + (size_t)c * kChunk, n, xmax, inv_t, tau, min_p);
      kept_total += chunk_mass[c];
    }
  }

  const uint64_t target = philox::scale64(philox::random64(seed, row_id, step), kept_total);
  int token = -1;
  if (chunked) {
    uint64_t cum = 0;
    int c = 0;
    while (c < chunks - 1 && cum + chunk_mass[c] <= target) cum += chunk_mass[c++];
    int at =
        P::pick(x + (size_t)c * kChunk, std::min(kChunk, vocab - c * kChunk), xmax, inv_t, tau, min_p, target - cum);
    if (at >= 0) token = c * kChunk + at;
  } else {
    token = P::pick_stored(x, weights.data(), vocab, tau, target);  // top-p without min-p
  }
  if (token < 0) token = s.argmax;  // unreachable: target < kept_total
  double t_tok = (double)((load(x, token) - xmax) * inv_t);
  return {token, (float)(t_tok - log_mass(total)), (float)(t_tok - log_mass(kept_total))};
}

struct PortablePasses {
  template <class T>
  static MaxScan max(const T* x, int vocab) {
    return row_max(x, vocab);
  }
  template <class T>
  static uint32_t top_k(const T* x, int vocab, int64_t k) {
    return select_top_k(x, vocab, k);
  }
  template <class T>
  static int gather(const T* x, const float* w, int vocab, uint32_t floor_key, uint32_t bucket, Candidate* out) {
    return gather_portable(x, w, vocab, floor_key, bucket, out);
  }
  template <class T>
  static int pick_stored(const T* x, const float* w, int vocab, uint32_t tau, uint64_t target) {
    return pick_stored_portable(x, w, vocab, tau, target);
  }
  template <class T>
  static uint64_t units(const T* x, int vocab, float xmax, float inv_t) {
    return row_units(x, vocab, xmax, inv_t);
  }
  template <class T>
  static uint64_t units_hist(const T* x, int vocab, float xmax, float inv_t, uint32_t floor_key, uint64_t* hist0,
                             uint64_t* topk_total, float* w) {
    return units_hist_portable(x, vocab, xmax, inv_t, floor_key, hist0, topk_total, w);
  }
  template <class T>
  static uint64_t kept_units(const T* x, int vocab, float xmax, float inv_t, uint32_t tau, float min_p) {
    return kept_units_portable(x, vocab, xmax, inv_t, tau, min_p);
  }
  template <class T>
  static int pick(const T* x, int vocab, float xmax, float inv_t, uint32_t tau, float min_p, uint64_t target) {
    return pick_portable(x, vocab, xmax, inv_t, tau, min_p, target);
  }
};

}  // namespace
}  // namespace recode::sampling::cpu
