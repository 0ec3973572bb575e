// Rotary position embedding, rotate-half convention (Hugging Face Llama/Qwen), with the optional "llama3"
// frequency scaling: long wavelengths are divided by `factor`, short ones kept, and the band between
// blended smoothly.
#include <cmath>

#include "ops/ops.h"
#include "core/parallel.h"

namespace recode::ops {

void rope_inv_freq_ref(double* inv_freq, int D, double theta, const RopeScaling& sc) {
  const double pi = 3.14159265358979323846;
  for (int i = 0; i < D / 2; ++i) {
    double f = 1.0 / std::pow(theta, (2.0 * i) / D);
    if (sc.llama3) {
      double low_freq_wavelen = sc.original_max_position / sc.low_freq_factor;
      double high_freq_wavelen = sc.original_max_position / sc.high_freq_factor;
      double wavelen = 2 * pi / f;
      if (wavelen > low_freq_wavelen) {
        f = f / sc.factor;
      } else if (wavelen >= high_freq_wavelen) {  // medium band: interpolate
        double smooth =
            (sc.original_max_position / wavelen - sc.low_freq_factor) / (sc.high_freq_factor - sc.low_freq_factor);
        f = (1 - smooth) * f / sc.factor + smooth * f;
      }
    }
    inv_freq[i] = f;
  }
}

// Rotates each (x[i], x[i + D/2]) pair by +sign * pos * inv_freq[i].
static void rotate(float* x, const int32_t* pos, const double* inv_freq, int T, int H, int D, float sign) {
  int half = D / 2;
  parallel_for(T, 16, [&](int64_t t0, int64_t t1) {
    std::vector<float> cs(half), sn(half);
    for (int64_t t = t0; t < t1; ++t) {
      for (int i = 0; i < half; ++i) {
        double angle = (double)pos[t] * inv_freq[i];
        cs[i] = (float)std::cos(angle);
        sn[i] = sign * (float)std::sin(angle);
      }
      for (int h = 0; h < H; ++h) {
        float* v = x + ((int64_t)t * H + h) * D;
        for (int i = 0; i < half; ++i) {
          float a = v[i], b = v[i + half];
          v[i] = a * cs[i] - b * sn[i];
          v[i + half] = b * cs[i] + a * sn[i];
        }
      }
    }
  });
}

void rope_forward(float* x, const int32_t* pos, const double* inv_freq, int T, int H, int D) {
  rotate(x, pos, inv_freq, T, H, D, 1.0f);
}

void rope_backward(float* dx, const int32_t* pos, const double* inv_freq, int T, int H, int D) {
  rotate(dx, pos, inv_freq, T, H, D, -1.0f);
}

// out = x * cos + rotate_half(x) * sin, rotate_half(x) = concat(-x2, x1), as the published definition reads.
void rope_forward_ref(float* out, const float* x, const int32_t* pos, const double* inv_freq, int T, int H, int D) {
  int half = D / 2;
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < D; ++i) {
        int64_t base = ((int64_t)t * H + h) * D;
        double angle = (double)pos[t] * inv_freq[i % half];
        double rot = i < half ? -(double)x[base + i + half] : (double)x[base + i - half];
        out[base + i] = (float)(x[base + i] * std::cos(angle) + rot * std::sin(angle));
      }
}

}  // namespace recode::ops
