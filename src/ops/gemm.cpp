// GEMM: the reference (float64, three loops), the packed/blocked multi-threaded driver, the portable
// micro-kernel, and the linear layer (forward/backward) built on them.
//
// Blocking: B (the weight) is packed in panels of kPanel output columns, full K deep ([N/16][K][16]), once
// per weight for inference. Work is split into tasks of MC rows x a range of column panels; a task packs its
// rows of A once (kMR-row panels, full K), then for each group of 16 panels walks K in KC-deep slices,
// running the micro-kernel over every (row panel, column panel) pair: a KC x 16 slice of B is reused from L1
// across the row panels, and the MC x 256 block of C and MC x KC slice of A stay in L2.
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/cpu_features.h"
#include "core/numeric.h"
#include "ops/gemm_kernel.h"
#include "ops/ops.h"
#include "core/parallel.h"

namespace recode::ops {

namespace {

constexpr int kMC = 96;   // rows of C per task (16 row panels)
constexpr int kKC = 256;  // depth of one K slice

// Portable micro-kernel: same contract as the AVX2 one; plain loops the compiler can vectorise.
void gemm_kernel_portable(int mr, int nr, int kc, const float* a, const float* b, float* c, int64_t ldc,
                          bool accumulate) {
  float acc[kMR][kPanel] = {};
  for (int k = 0; k < kc; ++k) {
    for (int r = 0; r < kMR; ++r) {
      float av = a[r];
      for (int j = 0; j < kPanel; ++j) acc[r][j] += av * b[j];
    }
    a += kMR;
    b += kPanel;
  }
  for (int r = 0; r < mr; ++r) {
    float* cr = c + r * ldc;
    for (int j = 0; j < nr; ++j) cr[j] = accumulate ? cr[j] + acc[r][j] : acc[r][j];
  }
}

// Portable bf16 variant: widens each k step's 16 values, then the same loops.
void gemm_kernel_bf16_portable(int mr, int nr, int kc, const float* a, const uint16_t* b, float* c, int64_t ldc,
                               bool accumulate) {
  float acc[kMR][kPanel] = {};
  float bk[kPanel];
  for (int k = 0; k < kc; ++k) {
    for (int j = 0; j < kPanel; ++j) bk[j] = bf16_to_float(bf16{b[j]});
    for (int r = 0; r < kMR; ++r) {
      float av = a[r];
      for (int j = 0; j < kPanel; ++j) acc[r][j] += av * bk[j];
    }
    a += kMR;
    b += kPanel;
  }
  for (int r = 0; r < mr; ++r) {
    float* cr = c + r * ldc;
    for (int j = 0; j < nr; ++j) cr[j] = accumulate ? cr[j] + acc[r][j] : acc[r][j];
  }
}

GemmKernel pick_kernel(const float*) {
  return simd_level() == SimdLevel::AVX2 ? &gemm_kernel_avx2 : &gemm_kernel_portable;
}
GemmKernelBf16 pick_kernel(const uint16_t*) {
  return simd_level() == SimdLevel::AVX2 ? &gemm_kernel_bf16_avx2 : &gemm_kernel_bf16_portable;
}

// Packs B(n, k) = B[n*b_rs + k*b_cs] for n in [0, N), k in [0, K) into [ceil(N/16)][K][16].
void pack_b(float* dst, const float* B, int64_t b_rs, int64_t b_cs, int N, int K) {
  int panels = (N + kPanel - 1) / kPanel;
  parallel_for(panels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* d = dst + p * (int64_t)K * kPanel;
      int n0 = (int)p * kPanel, nn = std::min(kPanel, N - n0);
      for (int k = 0; k < K; ++k) {
        for (int j = 0; j < nn; ++j) d[(int64_t)k * kPanel + j] = B[(n0 + j) * b_rs + k * b_cs];
        for (int j = nn; j < kPanel; ++j) d[(int64_t)k * kPanel + j] = 0;
      }
    }
  });
}

// C[M, N] (+)= A(m, k) * Bpacked(n, k); BT is float or bfloat16 bits.
template <class BT>
void gemm_driver(float* C, int64_t ldc, const float* A, int64_t a_rs, int64_t a_cs, const BT* Bp, int M, int N, int K,
                 bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int m = 0; m < M; ++m) std::memset(C + m * ldc, 0, sizeof(float) * N);
    return;
  }
  auto kernel = pick_kernel(Bp);
  const int panels = (N + kPanel - 1) / kPanel;
  const int mblocks = (M + kMC - 1) / kMC;
  // Columns per task: all of them when there are enough row blocks (A is then packed once per task),
  // halved until every thread gets several tasks (small M: decode).
  const int want_tasks = num_threads() * 4;
  int panels_per_task = panels;
  while (panels_per_task > 1 && (int64_t)mblocks * ((panels + panels_per_task - 1) / panels_per_task) < want_tasks)
    panels_per_task = (panels_per_task + 1) / 2;
  const int nblocks = (panels + panels_per_task - 1) / panels_per_task;
  constexpr int kGroup = 16;  // panels sharing one pass over a K slice: C block kMC x 256 stays in L2
  parallel_for((int64_t)mblocks * nblocks, 1, [&](int64_t t0, int64_t t1) {
    thread_local AlignedFloats apack;
    apack.resize((size_t)kMC * K);
    for (int64_t task = t0; task < t1; ++task) {
      const int mb = (int)(task / nblocks), nb = (int)(task % nblocks);
      const int m0 = mb * kMC, mc = std::min(kMC, M - m0);
      const int p_begin = nb * panels_per_task, p_end = std::min(panels, p_begin + panels_per_task);
      // pack A rows [m0, m0+mc), all of K, into kMR-row panels [mc/kMR][K][kMR], zero padded
      for (int i = 0; i < mc; i += kMR) {
        float* d = apack.data() + (int64_t)(i / kMR) * K * kMR;
        const int mr = std::min(kMR, mc - i);
        if (a_cs == 1) {  // rows of A are contiguous: one row at a time
          for (int r = 0; r < kMR; ++r) {
            if (r >= mr) {
              for (int k = 0; k < K; ++k) d[(int64_t)k * kMR + r] = 0;
              continue;
            }
            const float* src = A + (m0 + i + r) * a_rs;
            for (int k = 0; k < K; ++k) d[(int64_t)k * kMR + r] = src[k];
          }
        } else {  // a transposed A (columns contiguous, e.g. dy^T in dW): the panel's rows at each k together
          const float* src = A + (m0 + i) * a_rs;
          for (int k = 0; k < K; ++k) {
            float* dk = d + (int64_t)k * kMR;
            const float* sk = src + (int64_t)k * a_cs;
            for (int r = 0; r < mr; ++r) dk[r] = sk[r * a_rs];
            for (int r = mr; r < kMR; ++r) dk[r] = 0;
          }
        }
      }
      for (int g0 = p_begin; g0 < p_end; g0 += kGroup) {
        const int g1 = std::min(p_end, g0 + kGroup);
        for (int k0 = 0; k0 < K; k0 += kKC) {
          const int kc = std::min(kKC, K - k0);
          const bool acc = accumulate || k0 > 0;
          for (int p = g0; p < g1; ++p) {
            const BT* b = Bp + (int64_t)p * K * kPanel + (int64_t)k0 * kPanel;
            const int n0 = p * kPanel, nr = std::min(kPanel, N - n0);
            for (int i = 0; i < mc; i += kMR)
              kernel(std::min(kMR, mc - i), nr, kc, apack.data() + (int64_t)(i / kMR) * K * kMR + (int64_t)k0 * kMR, b,
                     C + (m0 + i) * ldc + n0, ldc, acc);
          }
        }
      }
    }
  });
}

}  // namespace

void gemm_ref(float* C, int64_t ldc, const float* A, int64_t a_rs, int64_t a_cs, const float* B, int64_t b_rs,
              int64_t b_cs, int M, int N, int K, bool accumulate) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = accumulate ? C[m * ldc + n] : 0.0;
      for (int k = 0; k < K; ++k) s += (double)A[m * a_rs + k * a_cs] * B[n * b_rs + k * b_cs];
      C[m * ldc + n] = (float)s;
    }
}

void gemm(float* C, int64_t ldc, const float* A, int64_t a_rs, int64_t a_cs, const float* B, int64_t b_rs, int64_t b_cs,
          int M, int N, int K, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  AlignedFloats bp((size_t)((N + kPanel - 1) / kPanel) * std::max(K, 0) * kPanel);
  if (K > 0) pack_b(bp.data(), B, b_rs, b_cs, N, K);
  gemm_driver(C, ldc, A, a_rs, a_cs, bp.data(), M, N, K, accumulate);
}

PackedWeight pack_weight(const float* W, int N, int K, bool bf16) {
  PackedWeight p;
  p.N = N;
  p.K = K;
  p.panels.resize((size_t)((N + kPanel - 1) / kPanel) * K * kPanel);
  pack_b(p.panels.data(), W, K, 1, N, K);
  if (bf16) {
    p.panels_bf16.resize(p.panels.size());
    for (size_t i = 0; i < p.panels.size(); ++i) p.panels_bf16[i] = float_to_bf16(p.panels[i]).bits;
    AlignedFloats().swap(p.panels);
  }
  return p;
}

void gemm_packed(float* C, int64_t ldc, const float* A, int64_t lda, const PackedWeight& W, int M, bool accumulate) {
  if (W.is_bf16())
    gemm_driver(C, ldc, A, lda, 1, W.panels_bf16.data(), M, W.N, W.K, accumulate);
  else
    gemm_driver(C, ldc, A, lda, 1, W.panels.data(), M, W.N, W.K, accumulate);
}

static void fill_bias(float* y, const float* b, int M, int N) {
  for (int m = 0; m < M; ++m) std::memcpy(y + (int64_t)m * N, b, sizeof(float) * N);
}

void linear_forward(float* y, const float* x, const float* W, const float* b, int M, int N, int K) {
  if (b) fill_bias(y, b, M, N);
  gemm(y, N, x, K, 1, W, K, 1, M, N, K, b != nullptr);
}

void linear_forward_packed(float* y, const float* x, const PackedWeight& W, const float* b, int M) {
  if (b) fill_bias(y, b, M, W.N);
  gemm_packed(y, W.N, x, W.K, W, M, b != nullptr);
}

void linear_forward(float* y, const float* x, const Linear& L, int M) {
  if (L.packed)
    linear_forward_packed(y, x, *L.packed, L.bias, M);
  else
    linear_forward(y, x, L.w, L.bias, M, L.N, L.K);
}

void linear_forward_ref(float* y, const float* x, const float* W, const float* b, int M, int N, int K) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = b ? b[n] : 0.0;
      for (int k = 0; k < K; ++k) s += (double)x[(int64_t)m * K + k] * W[(int64_t)n * K + k];
      y[(int64_t)m * N + n] = (float)s;
    }
}

void linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x, const float* W, int M, int N,
                     int K) {
  // dx[m, k] += sum_n dy[m, n] W[n, k]:  A = dy (rows m, depth n), B(k, n) = W[n*K + k]
  if (dx) gemm(dx, K, dy, N, 1, W, 1, K, M, K, N, true);
  // dW[n, k] += sum_m dy[m, n] x[m, k]:  A(n, m) = dy[m*N + n], B(k, m) = x[m*K + k]
  if (dW) gemm(dW, K, dy, 1, N, x, 1, K, N, K, M, true);
  if (db)
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) db[n] += dy[(int64_t)m * N + n];
}

void linear_backward_ref(float* dx, float* dW, float* db, const float* dy, const float* x, const float* W, int M, int N,
                         int K) {
  if (dx)
    for (int m = 0; m < M; ++m)
      for (int k = 0; k < K; ++k) {
        double s = 0;
        for (int n = 0; n < N; ++n) s += (double)dy[(int64_t)m * N + n] * W[(int64_t)n * K + k];
        dx[(int64_t)m * K + k] += (float)s;
      }
  if (dW)
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) {
        double s = 0;
        for (int m = 0; m < M; ++m) s += (double)dy[(int64_t)m * N + n] * x[(int64_t)m * K + k];
        dW[(int64_t)n * K + k] += (float)s;
      }
  if (db)
    for (int n = 0; n < N; ++n) {
      double s = 0;
      for (int m = 0; m < M; ++m) s += dy[(int64_t)m * N + n];
      db[n] += (float)s;
    }
}

}  // namespace recode::ops
