// CPU token log-probabilities (definitions in logprob.h). Rows run in parallel; each row keeps a double
// online log-sum-exp state over its vocabulary, so nothing of size T x V is ever allocated. The hidden-state
// variant computes logits a tile of rows x a chunk of the vocabulary at a time (dot products against rows of
// W) and folds each chunk into the rows' states; its backward recomputes the chunk's logits.
#include "logprob.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_features.h"
#include "logprob_core.h"
#include "parallel.h"

namespace recode::logprob {

namespace {

constexpr int kRowTile = 8;     // rows of hidden states sharing each loaded row of W
constexpr int kVocabChunk = 512;

inline float dot(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // eight partial sums: the loop vectorises without reassociation flags
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy(float alpha, const float* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace

void forward_logits(const float* logits, int T, int V, const int32_t* targets, float temperature, float* logp,
                    float* entropy, float* lse) {
  const float inv_t = 1.f / temperature;
  const bool avx2 = simd_level() == SimdLevel::AVX2;
  parallel_for(T, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* x = logits + (size_t)t * V;
      if (avx2 && forward_logits_row_avx2(x, V, targets[t], inv_t, logp + t, entropy + t, lse + t)) continue;
      Lse<double> st = lse_empty<double>();
      for (int v = 0; v < V; ++v) st = lse_add<double>(st, (double)(x[v] * inv_t));
      double l = lse_value(st);
      lse[t] = (float)l;
      logp[t] = (float)((double)(x[targets[t]] * inv_t) - l);
      entropy[t] = (float)lse_entropy(st);
    }
  });
}

void backward_logits(const float* logits, int T, int V, const int32_t* targets, float temperature, const float* lse,
                     const float* entropy, const float* dlogp, const float* dentropy, float* dlogits) {
  const float inv_t = 1.f / temperature;
  const bool avx2 = simd_level() == SimdLevel::AVX2;
  parallel_for(T, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* x = logits + (size_t)t * V;
      float* dx = dlogits + (size_t)t * V;
      const float dl = dlogp[t], de = dentropy ? dentropy[t] : 0.f;
      if (avx2) {
        backward_logits_row_avx2(x, V, targets[t], inv_t, lse[t], entropy[t], dl, de, dx);
        continue;
      }
      for (int v = 0; v < V; ++v) dx[v] = dz_of(x[v] * inv_t, lse[t], entropy[t], v == targets[t], dl, de) * inv_t;
    }
  });
}

void forward_hidden(const float* hidden, const float* weight, int T, int H, int V, const int32_t* targets,
                    float temperature, float* logp, float* entropy, float* lse) {
  const float inv_t = 1.f / temperature;
  const int tiles = (T + kRowTile - 1) / kRowTile;
  parallel_for(tiles, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t tile = i0; tile < i1; ++tile) {
      const int t0 = (int)tile * kRowTile, rows = std::min(kRowTile, T - t0);
      Lse<double> st[kRowTile];
      double target_z[kRowTile];
      for (int r = 0; r < rows; ++r) st[r] = lse_empty<double>();
      for (int v0 = 0; v0 < V; v0 += kVocabChunk) {  // one vocabulary chunk of logits for this row tile
        const int v1 = std::min(V, v0 + kVocabChunk);
        for (int v = v0; v < v1; ++v) {
          const float* w = weight + (size_t)v * H;
          for (int r = 0; r < rows; ++r) {
            float z = dot(hidden + (size_t)(t0 + r) * H, w, H) * inv_t;
            st[r] = lse_add<double>(st[r], (double)z);
            if (v == targets[t0 + r]) target_z[r] = z;
          }
        }
      }
      for (int r = 0; r < rows; ++r) {
        double l = lse_value(st[r]);
        lse[t0 + r] = (float)l;
        logp[t0 + r] = (float)(target_z[r] - l);
        entropy[t0 + r] = (float)lse_entropy(st[r]);
      }
    }
  });
}

void backward_hidden(const float* hidden, const float* weight, int T, int H, int V, const int32_t* targets,
                     float temperature, const float* lse, const float* entropy, const float* dlogp,
                     const float* dentropy, float* dhidden, float* dweight) {
  const float inv_t = 1.f / temperature;
  auto dlogit = [&](int t, int v) {  // d loss / d (hidden_t . W_v), recomputing the logit
    float z = dot(hidden + (size_t)t * H, weight + (size_t)v * H, H) * inv_t;
    return dz_of(z, lse[t], entropy[t], v == targets[t], dlogp[t], dentropy ? dentropy[t] : 0.f) * inv_t;
  };
  // dhidden_t = sum_v dlogit(t, v) W_v: rows in parallel, each owning its output row.
  parallel_for(T, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* dh = dhidden + (size_t)t * H;
      std::fill(dh, dh + H, 0.f);
      for (int v = 0; v < V; ++v) {
        float g = dlogit((int)t, v);
        if (g != 0.f) axpy(g, weight + (size_t)v * H, dh, H);
      }
    }
  });
  // dW_v = sum_t dlogit(t, v) hidden_t: vocabulary rows in parallel (skipped for a frozen head).
  if (!dweight) return;
  parallel_for(V, 16, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      float* dw = dweight + (size_t)v * H;
      std::fill(dw, dw + H, 0.f);
      for (int t = 0; t < T; ++t) {
        float g = dlogit(t, (int)v);
        if (g != 0.f) axpy(g, hidden + (size_t)t * H, dw, H);
      }
    }
  });
}

}  // namespace recode::logprob
