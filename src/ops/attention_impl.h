// Fast causal attention bodies, included twice: by attention.cpp (baseline x86-64) and by
// attention_avx2.cpp (compiled with AVX2+FMA), each inside its own namespace, so both SIMD levels run the
// same source. The inner loops (dot products and axpys over head_dim) are written for the auto-vectoriser.
// Expects RECODE_ATTN_NS to name the namespace.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "ops/ops.h"
#include "core/parallel.h"

namespace recode::ops::RECODE_ATTN_NS {

inline float dot(const float* a, const float* b, int n) {
  float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) part[j] += a[i + j] * b[i + j];
  float s = ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy(float* y, float a, const float* x, int n) {
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

inline void scale_vec(float* y, float a, int n) {
  for (int i = 0; i < n; ++i) y[i] *= a;
}

// Zero-initialised scratch owned by this namespace (no std::vector<float>/std::fill instantiations, which
// the AVX2 copy could otherwise donate to baseline code through the linker).
struct Buf {
  float* p;
  explicit Buf(size_t n) : p(new float[n]()) {}
  ~Buf() { delete[] p; }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  float* data() { return p; }
  float& operator[](int64_t i) { return p[i]; }
};

inline void zero(float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = 0;
}

constexpr int kBr = 16;  // query rows per task

constexpr int kBc = 64;  // keys per tile (scores_full_tile is written for 64) (a 64 x 128 fp32 K tile is 32 KiB:
                         // L1-resident across the rows)

// Online-softmax state of one query row.
struct RowState {
  float m, l;
};

// Register-blocked inner loops on 8-float vectors (GCC vector extension: ymm under AVX2, pairs of xmm in the
// baseline build). Eight accumulators cover 64 keys (scores) or 64 head dims (P V) and stay in registers.
// (under-aligned and may_alias: a plain unaligned load/store of floats). These helpers are inline and
// internal to this namespace, so GCC's note that 32-byte vectors pass differently without AVX is moot.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float v8f __attribute__((vector_size(32), aligned(4), may_alias));
inline v8f load8(const float* p) { return *reinterpret_cast<const v8f*>(p); }
inline void store8(float* p, v8f v) { *reinterpret_cast<v8f*>(p) = v; }

// scores[0..64) = scale * (q . k_j) for a full 64-key tile, from the transposed tile kt [D][64].
inline void scores_full_tile(float* scores, const float* qi, const float* kt, int D, float scale) {
  v8f s0 = {}, s1 = {}, s2 = {}, s3 = {}, s4 = {}, s5 = {}, s6 = {}, s7 = {};
  for (int d = 0; d < D; ++d) {
    const float qd = qi[d] * scale;
    const float* k = kt + d * 64;
    s0 += qd * load8(k);
    s1 += qd * load8(k + 8);
    s2 += qd * load8(k + 16);
    s3 += qd * load8(k + 24);
    s4 += qd * load8(k + 32);
    s5 += qd * load8(k + 40);
    s6 += qd * load8(k + 48);
    s7 += qd * load8(k + 56);
  }
  store8(scores, s0);
  store8(scores + 8, s1);
  store8(scores + 16, s2);
  store8(scores + 24, s3);
  store8(scores + 32, s4);
  store8(scores + 40, s5);
  store8(scores + 48, s6);
  store8(scores + 56, s7);
}

// a[0..64) += sum_j p[j] * v_j[0..64) over cnt keys (rows of v `stride` floats apart).
inline void pv_block64(float* a, const float* p, const float* v, int64_t stride, int cnt) {
  v8f a0 = load8(a), a1 = load8(a + 8), a2 = load8(a + 16), a3 = load8(a + 24), a4 = load8(a + 32), a5 = load8(a + 40),
      a6 = load8(a + 48), a7 = load8(a + 56);
  for (int j = 0; j < cnt; ++j) {
    const float pj = p[j];
    const float* vj = v + j * stride;
    a0 += pj * load8(vj);
    a1 += pj * load8(vj + 8);
    a2 += pj * load8(vj + 16);
    a3 += pj * load8(vj + 24);
    a4 += pj * load8(vj + 32);
    a5 += pj * load8(vj + 40);
    a6 += pj * load8(vj + 48);
    a7 += pj * load8(vj + 56);
  }
  store8(a, a0);
  store8(a + 8, a1);
  store8(a + 16, a2);
  store8(a + 24, a3);
  store8(a + 32, a4);
  store8(a + 40, a5);
  store8(a + 48, a6);
  store8(a + 56, a7);
}

// exp(x) for x <= 0 in a loop the compiler vectorises: x*log2(e) = n + f with n = round(x*log2(e)) and
// |f| <= 1/2, 2^f from its degree-6 Taylor polynomial (relative error < 2e-8), 2^n through the exponent
// bits. Inputs below -87 flush to 0 (the true value is below 1.7e-38).
inline void exp_inplace(float* s, int n) {
  for (int j = 0; j < n; ++j) {
    float x = s[j] < -87.0f ? -87.0f : s[j];
    float t = x * 1.44269504088896341f;
    float r = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
    float f = (t - r) * 0.693147180559945309f;  // f * ln 2, |.| <= 0.347
    float p = 1.0f + f * (1.0f + f * (0.5f + f * (1.0f / 6 + f * (1.0f / 24 + f * (1.0f / 120 + f * (1.0f / 720))))));
    int32_t bits = ((int32_t)r + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, 4);
    s[j] = s[j] < -87.0f ? 0.0f : p * scale;
  }
}

inline void continue_row_done(RowState& r, float corr, float sum, float m_new) {
  r.l = r.l * corr + sum;
  r.m = m_new;
}

// How attend_tile computes scores: dot products per key (one row, nothing to amortise a transpose over), or
// from the K tile transposed to [D][kBc] (scores become broadcast-FMAs over contiguous keys): transposing
// it here, or reusing the transpose a previous call of the same kv head made.
enum class KMode { Dot, Transpose, Transposed };

// Processes keys [j0, j1) for query rows [i0, i1) of head h; rows' visible limit is q_pos0 + i.
inline void attend_tile(const float* q, const float* k, const float* v, const AttnShape& s, int h, int i0, int i1,
                        int j0, int j1, RowState* st, float* acc, float* scores, float* kt, KMode mode) {
  const int D = s.D, g = h / (s.H / s.Hkv);
  const int64_t kv_stride = (int64_t)s.Hkv * D;
  const bool transposed = mode != KMode::Dot;
  if (mode == KMode::Transpose)
    for (int j = j0; j < j1; ++j)
      for (int d = 0; d < D; ++d) kt[d * kBc + (j - j0)] = k[j * kv_stride + (int64_t)g * D + d];
  for (int i = i0; i < i1; ++i) {
    int last = std::min(j1, s.q_pos0 + i + 1);  // exclusive
    if (last <= j0) continue;
    const int cnt = last - j0;
    const float* qi = q + ((int64_t)i * s.H + h) * D;
    if (transposed && cnt == kBc) {
      scores_full_tile(scores, qi, kt, D, s.scale);
    } else if (transposed) {
      // four dims per pass: scores are loaded and stored once per 4 FMAs instead of once per FMA
      for (int j = 0; j < cnt; ++j) scores[j] = 0;
      int d = 0;
      for (; d + 4 <= D; d += 4) {
        const float q0 = qi[d] * s.scale, q1 = qi[d + 1] * s.scale, q2 = qi[d + 2] * s.scale, q3 = qi[d + 3] * s.scale;
        const float *k0 = kt + d * kBc, *k1 = k0 + kBc, *k2 = k1 + kBc, *k3 = k2 + kBc;
        for (int j = 0; j < cnt; ++j) scores[j] += q0 * k0[j] + q1 * k1[j] + q2 * k2[j] + q3 * k3[j];
      }
      for (; d < D; ++d) {
        const float qd = qi[d] * s.scale;
        const float* kd = kt + d * kBc;
        for (int j = 0; j < cnt; ++j) scores[j] += qd * kd[j];
      }
    } else {
      for (int j = 0; j < cnt; ++j) scores[j] = s.scale * dot(qi, k + (j0 + j) * kv_stride + (int64_t)g * D, D);
    }
    float mx = -std::numeric_limits<float>::infinity();
    for (int j = 0; j < cnt; ++j) mx = std::max(mx, scores[j]);
    RowState& r = st[i - i0];
    float* a = acc + (int64_t)(i - i0) * D;
    float m_new = std::max(r.m, mx);
    float corr = std::exp(r.m - m_new);  // 0 on the first tile (r.m = -inf)
    if (corr != 1.0f) scale_vec(a, corr, D);
    for (int j = 0; j < cnt; ++j) scores[j] -= m_new;
    exp_inplace(scores, cnt);
    float sum = 0;
    for (int j = 0; j < cnt; ++j) sum += scores[j];
    const float* vg = v + (int64_t)g * D;
    if (D % 64 == 0) {
      for (int d0 = 0; d0 < D; d0 += 64) pv_block64(a + d0, scores, vg + (int64_t)j0 * kv_stride + d0, kv_stride, cnt);
      continue_row_done(r, corr, sum, m_new);
      continue;
    }
    // four keys per pass over the accumulator row (one load/store of it per 4 FMAs)
    int j = 0;
    for (; j + 4 <= cnt; j += 4) {
      const float p0 = scores[j], p1 = scores[j + 1], p2 = scores[j + 2], p3 = scores[j + 3];
      const float* v0 = vg + (j0 + j) * kv_stride;
      const float *v1 = v0 + kv_stride, *v2 = v1 + kv_stride, *v3 = v2 + kv_stride;
      for (int d = 0; d < D; ++d) a[d] += p0 * v0[d] + p1 * v1[d] + p2 * v2[d] + p3 * v3[d];
    }
    for (; j < cnt; ++j) axpy(a, scores[j], vg + (j0 + j) * kv_stride, D);
    continue_row_done(r, corr, sum, m_new);
  }
}

inline void forward(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s) {
  const int qtiles = (s.T + kBr - 1) / kBr;
  parallel_for((int64_t)s.H * qtiles, 1, [&](int64_t t0, int64_t t1) {
    Buf acc((size_t)kBr * s.D), scores(kBc), kt((size_t)kBc * s.D);
    RowState st[kBr];
    for (int64_t task = t0; task < t1; ++task) {
      int h = (int)(task % s.H), i0 = (int)(task / s.H) * kBr, i1 = std::min(s.T, i0 + kBr);
      for (int i = 0; i < i1 - i0; ++i) st[i] = {-std::numeric_limits<float>::infinity(), 0.0f};
      zero(acc.data(), (int64_t)kBr * s.D);
      int kend = std::min(s.S, s.q_pos0 + i1);  // keys any row of the tile can see
      for (int j0 = 0; j0 < kend; j0 += kBc)
        attend_tile(q, k, v, s, h, i0, i1, j0, std::min(kend, j0 + kBc), st, acc.data(), scores.data(), kt.data(),
                    i1 - i0 >= 4 ? KMode::Transpose : KMode::Dot);
      for (int i = i0; i < i1; ++i) {
        float* o = out + ((int64_t)i * s.H + h) * s.D;
        const RowState& r = st[i - i0];
        float inv = r.l > 0 ? 1.0f / r.l : 0.0f;
        for (int d = 0; d < s.D; ++d) o[d] = acc[(int64_t)(i - i0) * s.D + d] * inv;
        if (lse) lse[(int64_t)i * s.H + h] = r.l > 0 ? r.m + std::log(r.l) : -std::numeric_limits<float>::infinity();
      }
    }
  });
}

// Split-context decode: each (kv head, chunk) task runs every query head of its group over the chunk (the
// group's heads share one transposed K tile) and leaves partial softmax states; a second pass merges them.
inline void decode(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s) {
  const int chunk = std::max(256, (s.S + 63) / 64);
  const int splits = (s.S + chunk - 1) / chunk;
  const int T = s.T, D = s.D, group = s.H / s.Hkv;
  std::vector<RowState> part_state((size_t)s.H * splits * T);
  Buf part_acc((size_t)s.H * splits * T * D);
  parallel_for((int64_t)s.Hkv * splits, 1, [&](int64_t t0, int64_t t1) {
    Buf scores(kBc), kt((size_t)kBc * D);
    for (int64_t task = t0; task < t1; ++task) {
      int g = (int)(task / splits), sp = (int)(task % splits);
      for (int h = g * group; h < (g + 1) * group; ++h) {
        RowState* st = part_state.data() + ((int64_t)h * splits + sp) * T;
        for (int i = 0; i < T; ++i) st[i] = {-std::numeric_limits<float>::infinity(), 0.0f};
        zero(part_acc.data() + ((int64_t)h * splits + sp) * T * D, (int64_t)T * D);
      }
      const bool share = group * T >= 2;
      int c0 = sp * chunk, c1 = std::min(s.S, c0 + chunk);
      for (int j0 = c0; j0 < c1; j0 += kBc)
        for (int h = g * group; h < (g + 1) * group; ++h) {
          KMode mode = !share ? KMode::Dot : h == g * group ? KMode::Transpose : KMode::Transposed;
          attend_tile(q, k, v, s, h, 0, T, j0, std::min(c1, j0 + kBc),
                      part_state.data() + ((int64_t)h * splits + sp) * T,
                      part_acc.data() + ((int64_t)h * splits + sp) * T * D, scores.data(), kt.data(), mode);
        }
    }
  });
  for (int h = 0; h < s.H; ++h)
    for (int i = 0; i < T; ++i) {
      float m = -std::numeric_limits<float>::infinity();
      for (int sp = 0; sp < splits; ++sp) m = std::max(m, part_state[((int64_t)h * splits + sp) * T + i].m);
      float* o = out + ((int64_t)i * s.H + h) * D;
      zero(o, D);
      float l = 0;
      if (m != -std::numeric_limits<float>::infinity()) {
        for (int sp = 0; sp < splits; ++sp) {
          const RowState& r = part_state[((int64_t)h * splits + sp) * T + i];
          if (r.l == 0) continue;
          float w = std::exp(r.m - m);
          l += r.l * w;
          axpy(o, w, part_acc.data() + (((int64_t)h * splits + sp) * T + i) * D, D);
        }
        scale_vec(o, 1.0f / l, D);
      }
      if (lse) lse[(int64_t)i * s.H + h] = l > 0 ? m + std::log(l) : -std::numeric_limits<float>::infinity();
    }
}

// FlashAttention-2-style backward: probabilities are recomputed from lse one row at a time. One task per
// kv head owns dk/dv of that head and dq of its query heads, so tasks never write the same memory.
inline void backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                     const float* out, const float* lse, const AttnShape& s) {
  const int D = s.D, group = s.H / s.Hkv;
  const int64_t kv_stride = (int64_t)s.Hkv * D;
  parallel_for(s.Hkv, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g)
      for (int h = (int)g * group; h < (int)(g + 1) * group; ++h)
        for (int i = 0; i < s.T; ++i) {
          const int64_t row = ((int64_t)i * s.H + h) * D;
          const float* qi = q + row;
          const float* doi = dout + row;
          float* dqi = dq + row;
          float Di = dot(doi, out + row, D);
          float L = lse[(int64_t)i * s.H + h];
          int last = std::min(s.S, s.q_pos0 + i + 1);
          for (int j = 0; j < last; ++j) {
            const float* kj = k + j * kv_stride + g * D;
            const float* vj = v + j * kv_stride + g * D;
            float p = std::exp(s.scale * dot(qi, kj, D) - L);
            axpy(dv + j * kv_stride + g * D, p, doi, D);
            float ds = p * (dot(doi, vj, D) - Di) * s.scale;
            axpy(dqi, ds, kj, D);
            axpy(dk + j * kv_stride + g * D, ds, qi, D);
          }
        }
  });
}

}  // namespace recode::ops::RECODE_ATTN_NS
