// Internal to the CPU sampler: the row passes that have an AVX2 variant (src/sampling_avx2.cpp). Each
// returns exactly what the portable loop in src/sampling.cpp returns (same operations, same rounding).
#pragma once

#include <cstdint>

namespace recode::sampling::cpu {

struct MaxScan {
  float max;
  int argmax;      // first index holding the maximum
  int status;      // RowStatus
  int bad_index;   // first offending index when status != kRowOk
};

MaxScan row_max_avx2(const float* x, int vocab);
// Sum over the row of weight_units(sampling_weight((x_i - xmax) * inv_t)).
uint64_t row_units_avx2(const float* x, int vocab, float xmax, float inv_t);
// First index whose inclusive running sum of units exceeds target (every token kept); vocab - 1 if none.
int row_pick_avx2(const float* x, int vocab, float xmax, float inv_t, uint64_t target);

}  // namespace recode::sampling::cpu
