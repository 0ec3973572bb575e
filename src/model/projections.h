// The seven projections of a decoder layer, in the one order the trainers, the adapter target names, the CUDA
// decoder layer (cuda_layer::Projection) and the checkpoint/PEFT tensor names share (lib/model/projections.ts is
// the TypeScript twin).
#pragma once

#include <cstring>

namespace recode::model {

inline constexpr int kProjectionCount = 7;
inline constexpr const char* kProjections[kProjectionCount] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"};
// The module holding projection p: the first four are attention's, the rest the MLP's.
inline const char* projection_parent(int proj) { return proj < 4 ? "self_attn" : "mlp"; }
// Index of a projection name, or -1.
inline int projection_index(const char* name) {
  for (int p = 0; p < kProjectionCount; ++p)
    if (std::strcmp(kProjections[p], name) == 0) return p;
  return -1;
}

}  // namespace recode::model
