// LoRA / DoRA on a frozen linear layer, the fast path the trainer runs (the plain reference it is held to is
// src/train/adapters.cpp; the formulas, PEFT's, are in src/train/adapters.h). Every product goes through the GEMM:
//   u = drop(x) A^T                 [M, r]
//   lora = u B^T                    [M, N]
//   LoRA:  y = x W^T + b + s lora
//   DoRA:  pre = drop(x) W^T + s lora,  c = m / n   (n = ||W + s B A|| per row, a constant in the backward)
//          y = x W^T + b + (c - 1) drop(x) W^T + c s lora     (= c pre + b without dropout)
// Backward with g = c dy (dy for LoRA):
//   dm += sum_t dy pre / n,  dB += s g^T u,  du = s g B,  dA += du^T drop(x)
//   dx += dy W + mask/(1-p) ((c - 1) dy W + du A)             (= g W + du A without dropout)
#include <algorithm>
#include <cmath>
#include <cstring>

#include "train/adapters.h"
#include "ops/ops.h"
#include "core/parallel.h"

namespace recode::ops {
namespace {

// drop(x) [M, K]: kept values scaled by 1 / (1 - p), the mask a function of (seed, offset + flat index).
std::vector<float> dropped(const float* x, const LinearAdapter& ad, int M, int K) {
  std::vector<float> xd((size_t)M * K);
  const float keep_scale = 1.0f / (1.0f - ad.dropout);
  parallel_for(M, 16, [&](int64_t b, int64_t e) {
    std::vector<uint8_t> keep((size_t)(e - b) * K);
    dropout_keep_range(ad.seed, ad.offset + (uint64_t)(b * K), (e - b) * K, ad.dropout, keep.data());
    for (int64_t i = b * K; i < e * K; ++i) xd[i] = keep[i - b * K] ? x[i] * keep_scale : 0.0f;
  });
  return xd;
}

// c_o = m_o / n_o (DoRA's per-row scale).
std::vector<float> dora_scale(const LinearAdapter& ad, int N) {
  std::vector<float> c(N);
  for (int o = 0; o < N; ++o) c[o] = ad.magnitude[o] / ad.weight_norm[o];
  return c;
}

// rows [o0, o0 + n) of W + s B A into out [n, K].
void adapted_rows(float* out, const float* W, const LinearAdapter& ad, int o0, int n, int K) {
  std::memcpy(out, W + (int64_t)o0 * K, sizeof(float) * n * K);
  std::vector<float> ba((size_t)n * K);
  // (B A)[o, i] = sum_j B[o, j] A[j, i]
  gemm(ba.data(), K, ad.b + (int64_t)o0 * ad.rank, ad.rank, 1, ad.a, 1, K, n, K, ad.rank, false);
  for (size_t i = 0; i < ba.size(); ++i) out[i] += ad.scaling * ba[i];
}

constexpr int kRowBlock = 256;  // rows of W + s B A formed at a time (bounded scratch)

}  // namespace

void adapter_linear_forward(float* y, const float* x, const Linear& L, int M, AdapterActs& acts) {
  const LinearAdapter& ad = *L.adapter;
  const int N = L.N, K = L.K, r = ad.rank;
  const bool dora = ad.magnitude != nullptr, drop = ad.dropout > 0.0f;
  std::vector<float> xd_store;
  if (drop) xd_store = dropped(x, ad, M, K);
  const float* xd = drop ? xd_store.data() : x;

  linear_forward(y, x, L.w, nullptr, M, N, K);  // x W^T; the bias comes last
  acts.u.resize((size_t)M * r);
  gemm(acts.u.data(), r, xd, K, 1, ad.a, K, 1, M, r, K, false);
  std::vector<float> lora((size_t)M * N);
  gemm(lora.data(), N, acts.u.data(), r, 1, ad.b, r, 1, M, N, r, false);

  if (!dora) {
    for (size_t i = 0; i < lora.size(); ++i) y[i] += ad.scaling * lora[i];
  } else {
    acts.pre.resize((size_t)M * N);
    if (drop)
      gemm(acts.pre.data(), N, xd, K, 1, L.w, K, 1, M, N, K, false);
    else
      std::memcpy(acts.pre.data(), y, sizeof(float) * M * N);
    for (size_t i = 0; i < lora.size(); ++i) acts.pre[i] += ad.scaling * lora[i];
    const std::vector<float> c = dora_scale(ad, N);
    for (int64_t t = 0; t < M; ++t) {
      float* yt = y + t * N;
      const float* pt = acts.pre.data() + t * N;
      if (!drop) {
        for (int o = 0; o < N; ++o) yt[o] = c[o] * pt[o];
      } else {
        // x W^T + (c - 1) drop(x) W^T + c s lora = x W^T + c pre - drop(x) W^T
        const float* lt = lora.data() + t * N;
        for (int o = 0; o < N; ++o) yt[o] += c[o] * pt[o] - (pt[o] - ad.scaling * lt[o]);
      }
    }
  }
  if (L.bias)
    for (int64_t t = 0; t < M; ++t)
      for (int o = 0; o < N; ++o) y[t * N + o] += L.bias[o];
}

void adapter_linear_backward(float* dx, const float* dy, const float* x, const Linear& L, int M,
                             const AdapterActs& acts) {
  const LinearAdapter& ad = *L.adapter;
  const int N = L.N, K = L.K, r = ad.rank;
  const bool dora = ad.magnitude != nullptr, drop = ad.dropout > 0.0f;
  std::vector<float> c_store;
  if (dora) c_store = dora_scale(ad, N);

  // g = c dy: the gradient reaching the low-rank product
  std::vector<float> g_store;
  const float* g = dy;
  if (dora) {
    g_store.resize((size_t)M * N);
    for (int64_t t = 0; t < M; ++t)
      for (int o = 0; o < N; ++o) g_store[t * N + o] = c_store[o] * dy[t * N + o];
    g = g_store.data();
    // dm_o += sum_t dy[t, o] pre[t, o] / n_o: column blocks, walked row by row (contiguous reads)
    parallel_for(N, 128, [&](int64_t b, int64_t e) {
      std::vector<double> acc((size_t)(e - b), 0.0);
      for (int64_t t = 0; t < M; ++t) {
        const float* dyt = dy + t * N;
        const float* pt = acts.pre.data() + t * N;
        for (int64_t o = b; o < e; ++o) acc[o - b] += (double)dyt[o] * pt[o];
      }
      for (int64_t o = b; o < e; ++o) ad.grad_magnitude[o] += (float)(acc[o - b] / ad.weight_norm[o]);
    });
  }
  // dB[o, j] += s sum_t g[t, o] u[t, j]
  std::vector<float> db((size_t)N * r);
  gemm(db.data(), r, g, 1, N, acts.u.data(), 1, r, N, r, M, false);
  for (size_t i = 0; i < db.size(); ++i) ad.grad_b[i] += ad.scaling * db[i];
  // du[t, j] = s sum_o g[t, o] B[o, j]
  std::vector<float> du((size_t)M * r);
  gemm(du.data(), r, g, N, 1, ad.b, 1, r, M, r, N, false);
  for (float& v : du) v *= ad.scaling;
  // dA[j, i] += sum_t du[t, j] drop(x)[t, i]
  std::vector<float> xd_store;
  if (drop) xd_store = dropped(x, ad, M, K);
  const float* xd = drop ? xd_store.data() : x;
  gemm(ad.grad_a, K, du.data(), 1, r, xd, 1, K, r, K, M, true);

  if (!dx) return;
  if (!drop) {
    // dx += g W + du A
    gemm(dx, K, g, N, 1, L.w, 1, K, M, K, N, true);
    gemm(dx, K, du.data(), r, 1, ad.a, 1, K, M, K, r, true);
    return;
  }
  // dx += dy W + mask/(1-p) ((c - 1) dy W + du A)
  gemm(dx, K, dy, N, 1, L.w, 1, K, M, K, N, true);
  std::vector<float> adapter_dx((size_t)M * K);
  gemm(adapter_dx.data(), K, du.data(), r, 1, ad.a, 1, K, M, K, r, false);
  if (dora) {
    std::vector<float> dyc((size_t)M * N);
    for (int64_t t = 0; t < M; ++t)
      for (int o = 0; o < N; ++o) dyc[t * N + o] = (c_store[o] - 1.0f) * dy[t * N + o];
    gemm(adapter_dx.data(), K, dyc.data(), N, 1, L.w, 1, K, M, K, N, true);
  }
  const float keep_scale = 1.0f / (1.0f - ad.dropout);
  parallel_for(M, 16, [&](int64_t b, int64_t e) {
    std::vector<uint8_t> keep((size_t)(e - b) * K);
    dropout_keep_range(ad.seed, ad.offset + (uint64_t)(b * K), (e - b) * K, ad.dropout, keep.data());
    for (int64_t i = b * K; i < e * K; ++i)
      if (keep[i - b * K]) dx[i] += keep_scale * adapter_dx[i];
  });
}

void adapter_merged_weight(float* merged, float* norm, const float* W, const LinearAdapter& ad, int N, int K) {
  const bool scale_rows = merged && ad.magnitude;
  std::vector<float> scratch(merged ? 0 : (size_t)std::min(N, kRowBlock) * K);
  for (int o0 = 0; o0 < N; o0 += kRowBlock) {
    const int n = std::min(kRowBlock, N - o0);
    float* rows = merged ? merged + (int64_t)o0 * K : scratch.data();
    adapted_rows(rows, W, ad, o0, n, K);
    if (!norm && !scale_rows) continue;
    parallel_for(n, 16, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        double sq = 0;
        for (int i = 0; i < K; ++i) sq += (double)rows[o * K + i] * rows[o * K + i];
        const float row_norm = (float)std::sqrt(sq);
        if (norm) norm[o0 + o] = row_norm;
        if (!scale_rows) continue;
        const float scale = ad.magnitude[o0 + o] / row_norm;
        for (int i = 0; i < K; ++i) rows[o * K + i] *= scale;
      }
    });
  }
}

void adapter_weight_norm(float* norm, const float* W, const LinearAdapter& ad, int N, int K) {
  adapter_merged_weight(nullptr, norm, W, ad, N, K);
}

}  // namespace recode::ops
