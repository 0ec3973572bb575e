// Token embedding: a row gather; its backward scatters the rows' gradients back (adding, since a token
// may repeat).
#include <cstring>

#include "ops/ops.h"

namespace recode::ops {

void embedding_forward(float* out, const int32_t* ids, const float* table, int T, int C) {
  for (int t = 0; t < T; ++t) std::memcpy(out + (int64_t)t * C, table + (int64_t)ids[t] * C, sizeof(float) * C);
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int T, int C) {
  for (int t = 0; t < T; ++t) {
    float* row = dtable + (int64_t)ids[t] * C;
    const float* g = dout + (int64_t)t * C;
    for (int c = 0; c < C; ++c) row[c] += g[c];
  }
}

}  // namespace recode::ops
