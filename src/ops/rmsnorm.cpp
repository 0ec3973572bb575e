// RMSNorm (no mean subtraction, no bias): out = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps).
#include <cmath>
#include <vector>

#include "ops/ops.h"
#include "core/parallel.h"

namespace recode::ops {

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps) {
  parallel_for(N, std::max(1, 16384 / std::max(C, 1)), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const float* xr = x + n * C;
      float* o = out + n * C;
      float ss = 0;
      for (int c = 0; c < C; ++c) ss += xr[c] * xr[c];
      float r = 1.0f / std::sqrt(ss / C + eps);
      if (rstd) rstd[n] = r;
      for (int c = 0; c < C; ++c) o[c] = xr[c] * r * w[c];
    }
  });
}

void rmsnorm_forward_ref(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps) {
  for (int n = 0; n < N; ++n) {
    double ss = 0;
    for (int c = 0; c < C; ++c) ss += (double)x[(int64_t)n * C + c] * x[(int64_t)n * C + c];
    double r = 1.0 / std::sqrt(ss / C + eps);
    if (rstd) rstd[n] = (float)r;
    for (int c = 0; c < C; ++c) out[(int64_t)n * C + c] = (float)(x[(int64_t)n * C + c] * r * w[c]);
  }
}

// With xhat = x * rstd: dw += sum_n dout * xhat; dx = rstd * (dout*w - xhat * mean(dout*w*xhat)).
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd, int N,
                      int C) {
  for (int n = 0; n < N; ++n) {
    const float* xr = x + (int64_t)n * C;
    const float* g = dout + (int64_t)n * C;
    float r = rstd[n];
    float dot = 0;
    for (int c = 0; c < C; ++c) dot += g[c] * w[c] * xr[c] * r;
    dot /= C;
    for (int c = 0; c < C; ++c) {
      float xhat = xr[c] * r;
      if (dw) dw[c] += g[c] * xhat;
      if (dx) dx[(int64_t)n * C + c] += r * (g[c] * w[c] - xhat * dot);
    }
  }
}

// The same gradient written directly from d/dx_i of x_i * w_i / sqrt(mean(x^2) + eps), in float64.
void rmsnorm_backward_ref(float* dx, float* dw, const float* dout, const float* x, const float* w, int N, int C,
                          float eps) {
  for (int n = 0; n < N; ++n) {
    const float* xr = x + (int64_t)n * C;
    const float* g = dout + (int64_t)n * C;
    double ms = 0;
    for (int c = 0; c < C; ++c) ms += (double)xr[c] * xr[c];
    ms = ms / C + eps;
    double r = 1.0 / std::sqrt(ms);
    // d out_j / d x_i = w_j * (delta_ij * r - x_j * x_i * r^3 / C)
    double s = 0;
    for (int j = 0; j < C; ++j) s += (double)g[j] * w[j] * xr[j];
    for (int i = 0; i < C; ++i) {
      if (dx) dx[(int64_t)n * C + i] += (float)(g[i] * (double)w[i] * r - xr[i] * s * r * r * r / C);
      if (dw) dw[i] += (float)(g[i] * (double)xr[i] * r);
    }
  }
}

}  // namespace recode::ops
