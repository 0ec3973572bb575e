// SwiGLU gating of the MLP: out = silu(gate) * up, silu(g) = g * sigmoid(g).
#include <cmath>

#include "ops/ops.h"
#include "core/parallel.h"

namespace recode::ops {

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
  parallel_for(n, 8192, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

void swiglu_forward_ref(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double g = gate[i];
    out[i] = (float)(g / (1.0 + std::exp(-g)) * up[i]);
  }
}

// d silu(g)/dg = s * (1 + g * (1 - s)) with s = sigmoid(g).
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n) {
  parallel_for(n, 8192, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float g = gate[i], s = 1.0f / (1.0f + std::exp(-g));
      if (dgate) dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
      if (dup) dup[i] += dout[i] * g * s;
    }
  });
}

void swiglu_backward_ref(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double g = gate[i], s = 1.0 / (1.0 + std::exp(-g));
    if (dgate) dgate[i] += (float)(dout[i] * (double)up[i] * (s + g * s * (1.0 - s)));
    if (dup) dup[i] += (float)(dout[i] * g * s);
  }
}

}  // namespace recode::ops
