// Internal to the CPU sampler: the row passes that have an AVX2 variant (src/sampling/sampling_avx2.cpp). Each
// returns exactly what the portable loop in src/sampling/sampling.cpp returns (same operations, same rounding).
#pragma once

#include <cstdint>

#include "sampling/sampling.h"

namespace recode::sampling::cpu {

struct MaxScan {
  float max;
  int argmax;     // first index holding the maximum
  int status;     // RowStatus
  int bad_index;  // first offending index when status != kRowOk
};

MaxScan row_max_avx2(const float* x, int vocab);
// Sum over the row of weight_units(sampling_weight((x_i - xmax) * inv_t)).
uint64_t row_units_avx2(const float* x, int vocab, float xmax, float inv_t);
// Total mass, plus the level-0 top-p histogram over tokens with key >= floor_key and their mass; every weight is
// stored in w.
uint64_t units_hist_avx2(const float* x, int vocab, float xmax, float inv_t, uint32_t floor_key, uint64_t* hist0,
                         uint64_t* topk_total, float* w);
// Mass of the kept set {key >= tau, w >= min_p (when min_p > 0)}.
uint64_t kept_units_avx2(const float* x, int vocab, float xmax, float inv_t, uint32_t tau, float min_p);
// First kept index whose inclusive running mass exceeds target; -1 if none.
int pick_kept_avx2(const float* x, int vocab, float xmax, float inv_t, uint32_t tau, float min_p, uint64_t target);

// The whole per-row algorithm compiled for AVX2 + FMA (sampling_row.h instantiated in sampling_avx2.cpp).
Result sample_one_avx2(const float* x, int vocab, const Params& p, uint64_t seed, uint64_t row_id, uint64_t step,
                       int row);
Result sample_one_avx2(const bf16* x, int vocab, const Params& p, uint64_t seed, uint64_t row_id, uint64_t step,
                       int row);

}  // namespace recode::sampling::cpu
