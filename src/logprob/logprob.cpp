// CPU token log-probabilities (definitions in logprob.h). Rows run in parallel; each row keeps a double
// online log-sum-exp state over its vocabulary, so nothing of size T x V is ever allocated. The hidden-state
// variant computes logits a tile of rows x a chunk of the vocabulary at a time (dot products against rows of
// W, or for a large vocabulary all rows x a chunk through the GEMM) and folds each chunk into the rows'
// states; its backward recomputes the chunk's logits.
#include "logprob/logprob.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cpu_features.h"
#include "logprob_core.h"
#include "ops/ops.h"
#include "core/parallel.h"

namespace recode::logprob {

namespace {

constexpr int kRowTile = 8;  // rows of hidden states sharing each loaded row of W
constexpr int kVocabChunk = 512;
// From this vocabulary size on, the hidden-state variant forms its logits chunk by chunk with the blocked GEMM
// (W streamed once per pass instead of once per tile of 8 rows: a 151,936 x 896 head is 544 MB); below it the
// row-tile path reads W from cache and is as fast.
constexpr int kGemmVocab = 8192;
constexpr int kGemmChunk = 1024;  // vocabulary entries per chunk of logits [T, chunk]

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

namespace {

// logits chunk z[t, j] = hidden_t . W_{v0 + j} for j < vc, through the GEMM.
void logits_chunk(float* z, const float* hidden, const float* weight, int T, int H, int v0, int vc) {
  ops::gemm(z, vc, hidden, H, 1, weight + (size_t)v0 * H, H, 1, T, vc, H, false);
}

void forward_hidden_gemm(const float* hidden, const float* weight, int T, int H, int V, const int32_t* targets,
                         float inv_t, float* logp, float* entropy, float* lse) {
  std::vector<Lse<double>> st(T, lse_empty<double>());
  std::vector<float> target_z(T);
  std::vector<float> z((size_t)T * std::min(V, kGemmChunk));
  for (int v0 = 0; v0 < V; v0 += kGemmChunk) {
    const int vc = std::min(kGemmChunk, V - v0);
    logits_chunk(z.data(), hidden, weight, T, H, v0, vc);
    parallel_for(T, 4, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const float* zt = z.data() + (size_t)t * vc;
        for (int j = 0; j < vc; ++j) st[t] = lse_add<double>(st[t], (double)(zt[j] * inv_t));
        const int target = targets[t] - v0;
        if (target >= 0 && target < vc) target_z[t] = zt[target] * inv_t;
      }
    });
  }
  for (int t = 0; t < T; ++t) {
    double l = lse_value(st[t]);
    lse[t] = (float)l;
    logp[t] = (float)(target_z[t] - l);
    entropy[t] = (float)lse_entropy(st[t]);
  }
}

// Per chunk: the logits again, d loss / d logits in place, dhidden += dz W_chunk, dW_chunk = dz^T hidden.
void backward_hidden_gemm(const float* hidden, const float* weight, int T, int H, int V, const int32_t* targets,
                          float inv_t, const float* lse, const float* entropy, const float* dlogp,
                          const float* dentropy, float* dhidden, float* dweight) {
  std::fill(dhidden, dhidden + (size_t)T * H, 0.f);
  std::vector<float> z((size_t)T * std::min(V, kGemmChunk));
  for (int v0 = 0; v0 < V; v0 += kGemmChunk) {
    const int vc = std::min(kGemmChunk, V - v0);
    logits_chunk(z.data(), hidden, weight, T, H, v0, vc);
    parallel_for(T, 4, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        float* zt = z.data() + (size_t)t * vc;
        const float de = dentropy ? dentropy[t] : 0.f;
        for (int j = 0; j < vc; ++j)
          zt[j] = dz_of(zt[j] * inv_t, lse[t], entropy[t], v0 + j == targets[t], dlogp[t], de) * inv_t;
      }
    });
    // dhidden[t, c] += sum_j dz[t, j] W[v0 + j, c]
    ops::gemm(dhidden, H, z.data(), vc, 1, weight + (size_t)v0 * H, 1, H, T, H, vc, true);
    // dW[v0 + j, c] = sum_t dz[t, j] hidden[t, c]
    if (dweight) ops::gemm(dweight + (size_t)v0 * H, H, z.data(), 1, vc, hidden, 1, H, vc, H, T, false);
  }
}

}  // namespace

void forward_hidden(const float* hidden, const float* weight, int T, int H, int V, const int32_t* targets,
                    float temperature, float* logp, float* entropy, float* lse) {
  const float inv_t = 1.f / temperature;
  if (V >= kGemmVocab) return forward_hidden_gemm(hidden, weight, T, H, V, targets, inv_t, logp, entropy, lse);
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
  if (V >= kGemmVocab)
    return backward_hidden_gemm(hidden, weight, T, H, V, targets, inv_t, lse, entropy, dlogp, dentropy, dhidden,
                                dweight);
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
