// Fused causal attention: prefill forward (flash attention with online softmax), its backward (recomputing
// the probabilities from the saved log-sum-exp), and decode over a KV cache (split along the context, with a
// reduction kernel combining the splits). Never materialises a T x T matrix.
//
// Layouts (row-major, contiguous):
//   q, o, dq, dout   [B, T, Hq, D]        k, v, dk, dv  [B, T, Hkv, D]       lse, D-vector  fp32 [B, Hq, T]
//   k_cache, v_cache [B, Hkv, capacity, D]  (head-major: one head's context is one contiguous block)
//   decode q, o      [B, Hq, D]
// GQA: query head h reads kv head h / (Hq / Hkv) (as HF repeat_kv). Head dims 16, 32, 64 and 128 are compiled.
// Scores are scale * q.k in fp32; softmax state (running max m, running sum l) in fp32; lse = m + log(l).
//
// Forward (one block per 64-query tile, batch and query head; 128 threads): Q tile in shared memory, K/V tiles
// of 32 keys streamed through shared memory; S = Q K^T (each thread a 4x4 register block), online softmax by
// row (2 threads a row), O = diag(alpha) O + P V with O in registers (each thread 4 rows x D/8 columns), one
// division by l at the end. Causal blocks stop at their last query's tile.
// Backward: pre-pass Dvec = rowsum(dO * O); then two kernels, both recomputing P = exp(S - lse):
//   dK/dV: one block per 32-key tile and kv head; loops over the query heads of its group and the query tiles
//          at or after it (causal): dV += P^T dO, dS = P * (dO V^T - Dvec), dK += scale * dS^T Q.
//   dQ:    one block per 32-query tile and query head; loops over key tiles: dQ += scale * dS K.
// Splitting dQ from dK/dV costs one more recomputation of S but needs no atomics, so the backward is
// deterministic and dK/dV are summed over a group's query heads inside one block.
//
// bf16 forward and backward run on tensor cores (wmma; attention_forward_tc_kernel and the *_tc_kernel
// backward pair below, same tiling ideas with 64-row tiles); fp32 forward/backward and decode are the SIMT
// kernels described above (fp32 FMA). Decode is bandwidth-bound, so CUDA cores suffice there.
#include "ops_util.cuh"
#include "recode_cuda.h"

#include <cmath>

#if defined(__CUDACC__)
#include <mma.h>
#else
#include "simt/simt_wmma.h"
#endif

namespace {

constexpr int kFwdBQ = 64, kFwdBK = 32, kFwdThreads = 128;
constexpr int kBwdB = 32, kBwdThreads = 128;
constexpr int kDecBK = 32, kDecThreads = 128, kDecMaxGroup = 16;
constexpr float kNegInf = -INFINITY;

__device__ __forceinline__ float attn_warp_max(float v, int width = 32) {
  for (int o = width / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float attn_warp_sum(float v, int width = 32) {
  for (int o = width / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Copies rows [r0, r0+ROWS) of a [seq, heads, D] tensor's head `h` (batch base pointer) into smem[row*ld + d] as
// fp32 times `mul`, zero-filling rows past `seq`. Consecutive threads read consecutive d (coalesced).
template <int ROWS, int D, class T>
__device__ __forceinline__ void load_rows(const T* base, int seq, int heads, int h, int r0, float* dst, int ld,
                                          float mul) {
  for (int idx = threadIdx.x; idx < ROWS * D; idx += blockDim.x) {
    int r = idx / D, d = idx % D;
    int t = r0 + r;
    dst[r * ld + d] = t < seq ? to_float(base[((size_t)t * heads + h) * D + d]) * mul : 0.0f;
  }
}

// ---- forward -------------------------------------------------------------------------------------------

template <int D>
constexpr size_t fwd_smem_floats() {
  return (size_t)kFwdBQ * (D + 1) + kFwdBK * (D + 1) + kFwdBK * D + kFwdBQ * (kFwdBK + 1) + kFwdBQ;
}

template <class T, int D>
__global__ void __launch_bounds__(kFwdThreads)
    attention_forward_kernel(int seq, int Hq, int Hkv, const T* q, const T* k, const T* v, T* o, float* lse,
                             float scale, int causal) {
  SIMT_DYNAMIC_SHARED(float, smem);
  float* Qs = smem;                             // [BQ][D+1], pre-scaled
  float* Ks = Qs + kFwdBQ * (D + 1);            // [BK][D+1]
  float* Vs = Ks + kFwdBK * (D + 1);            // [BK][D]
  float* Ss = Vs + kFwdBK * D;                  // [BQ][BK+1] scores, then probabilities
  float* alpha_s = Ss + kFwdBQ * (kFwdBK + 1);  // [BQ] rescale factor of this step
  int tid = threadIdx.x;
  int q0 = blockIdx.x * kFwdBQ, h = blockIdx.y, b = blockIdx.z;
  int hk = h / (Hq / Hkv);
  const T* qb = q + (size_t)b * seq * Hq * D;
  const T* kb = k + (size_t)b * seq * Hkv * D;
  const T* vb = v + (size_t)b * seq * Hkv * D;
  load_rows<kFwdBQ, D>(qb, seq, Hq, h, q0, Qs, D + 1, scale);

  // S / P layout: thread (tr, tc) holds rows tr + 16 i and keys tc + 8 j. O layout: rows tr + 16 i, cols tc + 8 c.
  int tr = tid / 8, tc = tid % 8;
  constexpr int OC = D / 8;
  float acc[4][OC];
  for (int i = 0; i < 4; ++i)
    for (int c = 0; c < OC; ++c) acc[i][c] = 0.0f;
  // Softmax state of row sr = tid / 2 (both threads of the pair keep a copy).
  int sr = tid / 2, shalf = tid % 2;
  float m_row = kNegInf, l_row = 0.0f;

  int kv_end = causal ? min(seq, q0 + kFwdBQ) : seq;
  for (int k0 = 0; k0 < kv_end; k0 += kFwdBK) {
    __syncthreads();  // previous tile fully consumed
    load_rows<kFwdBK, D>(kb, seq, Hkv, hk, k0, Ks, D + 1, 1.0f);
    load_rows<kFwdBK, D>(vb, seq, Hkv, hk, k0, Vs, D, 1.0f);
    __syncthreads();
    // S = Q K^T for this thread's 4x4 block.
    float s[4][4] = {};
    for (int d = 0; d < D; ++d) {
      float qv[4], kv[4];
      RECODE_UNROLL
      for (int i = 0; i < 4; ++i) qv[i] = Qs[(tr + 16 * i) * (D + 1) + d];
      RECODE_UNROLL
      for (int j = 0; j < 4; ++j) kv[j] = Ks[(tc + 8 * j) * (D + 1) + d];
      RECODE_UNROLL
      for (int i = 0; i < 4; ++i) RECODE_UNROLL
      for (int j = 0; j < 4; ++j) s[i][j] += qv[i] * kv[j];
    }
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        int qi = q0 + tr + 16 * i, kj = k0 + tc + 8 * j;
        bool visible = kj < seq && (!causal || kj <= qi);
        Ss[(tr + 16 * i) * (kFwdBK + 1) + tc + 8 * j] = visible ? s[i][j] : kNegInf;
      }
    __syncthreads();
    // Online softmax over the row's 32 scores, 16 per thread of the pair.
    {
      float* row = Ss + sr * (kFwdBK + 1) + shalf * 16;
      float mx = kNegInf;
      for (int j = 0; j < 16; ++j) mx = fmaxf(mx, row[j]);
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      float m_new = fmaxf(m_row, mx);
      float sum = 0.0f;
      for (int j = 0; j < 16; ++j) {
        float p = m_new == kNegInf ? 0.0f : expf(row[j] - m_new);
        row[j] = p;
        sum += p;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      float alpha = m_row == kNegInf ? (m_new == kNegInf ? 1.0f : 0.0f) : expf(m_row - m_new);
      l_row = l_row * alpha + sum;
      m_row = m_new;
      if (shalf == 0) alpha_s[sr] = alpha;
    }
    __syncthreads();
    // O = diag(alpha) O + P V
    float al[4];
    for (int i = 0; i < 4; ++i) al[i] = alpha_s[tr + 16 * i];
    for (int i = 0; i < 4; ++i)
      for (int c = 0; c < OC; ++c) acc[i][c] *= al[i];
    for (int j = 0; j < kFwdBK; ++j) {
      float p[4];
      RECODE_UNROLL
      for (int i = 0; i < 4; ++i) p[i] = Ss[(tr + 16 * i) * (kFwdBK + 1) + j];
      const float* vr = Vs + j * D + tc;
      RECODE_UNROLL
      for (int c = 0; c < OC; ++c) {
        float vv = vr[8 * c];
        RECODE_UNROLL
        for (int i = 0; i < 4; ++i) acc[i][c] += p[i] * vv;
      }
    }
  }
  // Publish l per row (the pair's copies agree), divide once, write O and lse.
  __syncthreads();
  if (shalf == 0) {
    alpha_s[sr] = l_row;
    int qi = q0 + sr;
    if (qi < seq) lse[((size_t)b * Hq + h) * seq + qi] = m_row + logf(l_row);
  }
  __syncthreads();
  T* ob = o + (size_t)b * seq * Hq * D;
  for (int i = 0; i < 4; ++i) {
    int r = tr + 16 * i, qi = q0 + r;
    if (qi >= seq) continue;
    float inv = 1.0f / alpha_s[r];
    for (int c = 0; c < OC; ++c) ob[((size_t)qi * Hq + h) * D + tc + 8 * c] = store_as<T>(acc[i][c] * inv);
  }
}

// ---- forward on tensor cores (bf16) ----------------------------------------------------------------------
// Same algorithm with both matrix products on tensor cores (wmma 16x16x16, bf16 in, fp32 accumulate): block =
// 64 queries x 4 warps, warp w owns query rows 16w..16w+15; K/V tiles of 64 keys. Per tile a warp computes its
// 16 x 64 scores into shared memory, runs the online softmax there (2 lanes a row) writing P in bf16, rescales
// its O rows in shared memory by alpha, then adds P V into O by loading O as the accumulator fragment. O lives
// in shared memory rather than in fragments because wmma leaves the fragment element order unspecified, so
// per-row rescaling cannot be done in registers portably.
constexpr int kTcBQ = 64, kTcBK = 64, kTcThreads = 128;

template <int D>
struct TcLayout {
  static constexpr int ldk = D + 8;      // bf16 rows of Q/K/V (multiple of 8 elements)
  static constexpr int lds = kTcBK + 4;  // fp32 score rows
  static constexpr int ldp = kTcBK + 8;  // bf16 probability rows
  static constexpr int ldo = D + 4;      // fp32 output rows
  static constexpr size_t q_bytes = (size_t)kTcBQ * ldk * 2;
  static constexpr size_t kv_bytes = (size_t)kTcBK * ldk * 2;
  static constexpr size_t s_bytes = (size_t)kTcBQ * lds * 4;
  static constexpr size_t p_bytes = (size_t)kTcBQ * ldp * 2;
  static constexpr size_t o_bytes = (size_t)kTcBQ * ldo * 4;
  static constexpr size_t stat_bytes = (size_t)2 * kTcBQ * 4;
  static constexpr size_t total = q_bytes + 2 * kv_bytes + s_bytes + p_bytes + o_bytes + stat_bytes;
};

// Copies rows [r0, r0+ROWS) of head h of a [seq, heads, D] bf16 tensor into dst[row * ld + d], zeros past seq.
// vec: the tensor's base is 16-byte aligned, so each row (D a multiple of 8) moves as 16-byte vectors.
template <int ROWS, int D>
__device__ __forceinline__ void copy_rows_bf16(const bf16* base, int seq, int heads, int h, int r0, bf16* dst, int ld,
                                               int vec) {
  if (vec) {
    for (int idx = threadIdx.x; idx < ROWS * D / 8; idx += blockDim.x) {
      int r = idx / (D / 8), d = (idx % (D / 8)) * 8;
      int t = r0 + r;
      Bits128 v = {{0u, 0u, 0u, 0u}};
      if (t < seq) v = load128(base + ((size_t)t * heads + h) * D + d);
      store128(dst + r * ld + d, v);
    }
    return;
  }
  for (int idx = threadIdx.x; idx < ROWS * D; idx += blockDim.x) {
    int r = idx / D, d = idx % D;
    int t = r0 + r;
    dst[r * ld + d] = t < seq ? base[((size_t)t * heads + h) * D + d] : to_bf16(0.0f);
  }
}

template <int D>
__global__ void __launch_bounds__(kTcThreads)
    attention_forward_tc_kernel(int seq, int Hq, int Hkv, const bf16* q, const bf16* k, const bf16* v, bf16* o,
                                float* lse, float scale, int causal, int vec) {
  using namespace nvcuda;
  using L = TcLayout<D>;
  SIMT_DYNAMIC_SHARED(unsigned char, smem);
  bf16* Qs = reinterpret_cast<bf16*>(smem);
  bf16* Ks = reinterpret_cast<bf16*>(smem + L::q_bytes);
  bf16* Vs = reinterpret_cast<bf16*>(smem + L::q_bytes + L::kv_bytes);
  float* Ss = reinterpret_cast<float*>(smem + L::q_bytes + 2 * L::kv_bytes);
  bf16* Ps = reinterpret_cast<bf16*>(smem + L::q_bytes + 2 * L::kv_bytes + L::s_bytes);
  float* Os = reinterpret_cast<float*>(smem + L::q_bytes + 2 * L::kv_bytes + L::s_bytes + L::p_bytes);
  float* m_s = reinterpret_cast<float*>(smem + L::q_bytes + 2 * L::kv_bytes + L::s_bytes + L::p_bytes + L::o_bytes);
  float* l_s = m_s + kTcBQ;
  int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  int q0 = blockIdx.x * kTcBQ, h = blockIdx.y, b = blockIdx.z;
  int hk = h / (Hq / Hkv);
  const bf16* kb = k + (size_t)b * seq * Hkv * D;
  const bf16* vb = v + (size_t)b * seq * Hkv * D;
  copy_rows_bf16<kTcBQ, D>(q + (size_t)b * seq * Hq * D, seq, Hq, h, q0, Qs, L::ldk, vec);
  for (int idx = tid; idx < kTcBQ * L::ldo; idx += blockDim.x) Os[idx] = 0.0f;
  if (tid < kTcBQ) {
    m_s[tid] = kNegInf;
    l_s[tid] = 0.0f;
  }
  int wr = warp * 16;                        // first row of this warp inside the tile
  int row = wr + lane / 2, half = lane % 2;  // softmax: 2 lanes per row, 32 scores each
  int qi = q0 + row;
  int kv_end = causal ? min(seq, q0 + kTcBQ) : seq;
  for (int k0 = 0; k0 < kv_end; k0 += kTcBK) {
    __syncthreads();
    copy_rows_bf16<kTcBK, D>(kb, seq, Hkv, hk, k0, Ks, L::ldk, vec);
    copy_rows_bf16<kTcBK, D>(vb, seq, Hkv, hk, k0, Vs, L::ldk, vec);
    __syncthreads();
    if (causal && k0 > q0 + wr + 15) continue;  // every key of this tile is after every query of this warp
    // S (16 x 64) = Q_w K^T
    {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> s_acc[kTcBK / 16];
      RECODE_UNROLL
      for (int n = 0; n < kTcBK / 16; ++n) wmma::fill_fragment(s_acc[n], 0.0f);
      for (int kd = 0; kd < D; kd += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> qa;
        wmma::load_matrix_sync(qa, Qs + wr * L::ldk + kd, L::ldk);
        RECODE_UNROLL
        for (int n = 0; n < kTcBK / 16; ++n) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> kbf;
          wmma::load_matrix_sync(kbf, Ks + (n * 16) * L::ldk + kd, L::ldk);  // K^T: (d, key) at key*ld + d
          wmma::mma_sync(s_acc[n], qa, kbf, s_acc[n]);
        }
      }
      RECODE_UNROLL
      for (int n = 0; n < kTcBK / 16; ++n)
        wmma::store_matrix_sync(Ss + wr * L::lds + n * 16, s_acc[n], L::lds, wmma::mem_row_major);
    }
    __syncwarp();
    // Online softmax of this row's 32 scores (of 64); P in bf16; O row rescaled by alpha.
    {
      float* srow = Ss + row * L::lds + half * 32;
      float mx = kNegInf;
      for (int j = 0; j < 32; ++j) {
        int kj = k0 + half * 32 + j;
        bool visible = kj < seq && (!causal || kj <= qi);
        float x = visible ? srow[j] * scale : kNegInf;
        srow[j] = x;
        mx = fmaxf(mx, x);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      float m_old = m_s[row];
      float m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
      bf16* prow = Ps + row * L::ldp + half * 32;
      for (int j = 0; j < 32; ++j) {
        float p = m_new == kNegInf ? 0.0f : expf(srow[j] - m_new);
        prow[j] = to_bf16(p);
        sum += p;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      float alpha = m_old == kNegInf ? (m_new == kNegInf ? 1.0f : 0.0f) : expf(m_old - m_new);
      float* orow = Os + row * L::ldo;
      for (int c = half; c < D; c += 2) orow[c] *= alpha;
      __syncwarp();  // both lanes of the pair read m_s before it changes
      if (half == 0) {
        m_s[row] = m_new;
        l_s[row] = l_s[row] * alpha + sum;
      }
    }
    __syncwarp();
    // O_w (16 x D) += P_w (16 x 64) V (64 x D), O loaded as the accumulator.
    for (int cb = 0; cb < D; cb += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o_acc;
      wmma::load_matrix_sync(o_acc, Os + wr * L::ldo + cb, L::ldo, wmma::mem_row_major);
      RECODE_UNROLL
      for (int kk = 0; kk < kTcBK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> pa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> vbf;
        wmma::load_matrix_sync(pa, Ps + wr * L::ldp + kk, L::ldp);
        wmma::load_matrix_sync(vbf, Vs + kk * L::ldk + cb, L::ldk);  // V: (key, d) at key*ld + d
        wmma::mma_sync(o_acc, pa, vbf, o_acc);
      }
      wmma::store_matrix_sync(Os + wr * L::ldo + cb, o_acc, L::ldo, wmma::mem_row_major);
    }
    __syncwarp();
  }
  __syncthreads();
  // Each pair of lanes finishes its row: O / l and lse.
  if (qi < seq) {
    float l = l_s[row];
    float inv = 1.0f / l;
    bf16* orow = o + (((size_t)b * seq + qi) * Hq + h) * D;
    for (int c = half; c < D; c += 2) orow[c] = to_bf16(Os[row * L::ldo + c] * inv);
    if (half == 0) lse[((size_t)b * Hq + h) * seq + qi] = m_s[row] + logf(l);
  }
}

// ---- backward ------------------------------------------------------------------------------------------

// Dvec[b, h, t] = sum_d dO[b, t, h, d] * O[b, t, h, d]; one warp per row.
template <class T>
__global__ void attention_backward_dot_kernel(int B, int seq, int Hq, int D, const T* o, const T* dout, float* dvec) {
  size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;  // (b * seq + t) * Hq + h
  int lane = threadIdx.x % 32;
  if (row >= (size_t)B * seq * Hq) return;
  float s = 0.0f;
  for (int d = lane; d < D; d += 32) s += to_float(o[row * D + d]) * to_float(dout[row * D + d]);
  s = attn_warp_sum(s);
  if (lane == 0) {
    int h = (int)(row % Hq);
    size_t bt = row / Hq;
    int t = (int)(bt % seq), b = (int)(bt / seq);
    dvec[((size_t)b * Hq + h) * seq + t] = s;
  }
}

template <int D>
constexpr size_t bwd_smem_floats() {
  return (size_t)4 * kBwdB * (D + 1) + 2 * kBwdB * (kBwdB + 1) + 2 * kBwdB;
}

// Computes, for query rows [q0, q0+32) and keys [k0, k0+32): P (into Ps, when non-null) and
// dS = P * (dO V^T - Dvec) (into dSs). Thread layout: query row tid / 4, keys tid % 4 + 4 e.
template <int D>
__device__ __forceinline__ void attention_backward_probs(int seq, int q0, int k0, int causal, float scale,
                                                         const float* Qs, const float* Ks, const float* Vs,
                                                         const float* dOs, const float* lse_s, const float* dvec_s,
                                                         float* Ps, float* dSs) {
  int tid = threadIdx.x;
  int r = tid / 4, j0 = tid % 4;
  int qi = q0 + r;
  for (int e = 0; e < kBwdB / 4; ++e) {
    int j = j0 + 4 * e, kj = k0 + j;
    bool visible = qi < seq && kj < seq && (!causal || kj <= qi);
    float p = 0.0f, ds = 0.0f;
    if (visible) {
      float s = 0.0f, dp = 0.0f;
      for (int d = 0; d < D; ++d) {
        s += Qs[r * (D + 1) + d] * Ks[j * (D + 1) + d];
        dp += dOs[r * (D + 1) + d] * Vs[j * (D + 1) + d];
      }
      p = expf(s * scale - lse_s[r]);
      ds = p * (dp - dvec_s[r]);
    }
    if (Ps) Ps[r * (kBwdB + 1) + j] = p;
    dSs[r * (kBwdB + 1) + j] = ds;
  }
}

template <class T, int D>
__global__ void __launch_bounds__(kBwdThreads)
    attention_backward_dkdv_kernel(int seq, int Hq, int Hkv, const T* q, const T* k, const T* v, const float* lse,
                                   const float* dvec, const T* dout, T* dk, T* dv, float scale, int causal) {
  SIMT_DYNAMIC_SHARED(float, smem);
  float* Ks = smem;                   // [32][D+1]
  float* Vs = Ks + kBwdB * (D + 1);   // [32][D+1]
  float* Qs = Vs + kBwdB * (D + 1);   // [32][D+1]
  float* dOs = Qs + kBwdB * (D + 1);  // [32][D+1]
  float* Ps = dOs + kBwdB * (D + 1);  // [32 q][33]
  float* dSs = Ps + kBwdB * (kBwdB + 1);
  float* lse_s = dSs + kBwdB * (kBwdB + 1);
  float* dvec_s = lse_s + kBwdB;
  int tid = threadIdx.x;
  int k0 = blockIdx.x * kBwdB, hk = blockIdx.y, b = blockIdx.z;
  int group = Hq / Hkv;
  load_rows<kBwdB, D>(k + (size_t)b * seq * Hkv * D, seq, Hkv, hk, k0, Ks, D + 1, 1.0f);
  load_rows<kBwdB, D>(v + (size_t)b * seq * Hkv * D, seq, Hkv, hk, k0, Vs, D + 1, 1.0f);
  // Accumulators: keys tk + 8 i, columns tc + 16 c.
  int tk = tid / 16, tc = tid % 16;
  constexpr int AC = D / 16 > 0 ? D / 16 : 1;
  float dk_acc[4][AC], dv_acc[4][AC];
  for (int i = 0; i < 4; ++i)
    for (int c = 0; c < AC; ++c) dk_acc[i][c] = dv_acc[i][c] = 0.0f;
  int q_start = causal ? (k0 / kBwdB) * kBwdB : 0;
  for (int g = 0; g < group; ++g) {
    int h = hk * group + g;
    const T* qb = q + (size_t)b * seq * Hq * D;
    const T* dob = dout + (size_t)b * seq * Hq * D;
    for (int q0 = q_start; q0 < seq; q0 += kBwdB) {
      __syncthreads();
      load_rows<kBwdB, D>(qb, seq, Hq, h, q0, Qs, D + 1, 1.0f);
      load_rows<kBwdB, D>(dob, seq, Hq, h, q0, dOs, D + 1, 1.0f);
      if (tid < kBwdB) {
        int qi = q0 + tid;
        lse_s[tid] = qi < seq ? lse[((size_t)b * Hq + h) * seq + qi] : 0.0f;
        dvec_s[tid] = qi < seq ? dvec[((size_t)b * Hq + h) * seq + qi] : 0.0f;
      }
      __syncthreads();
      attention_backward_probs<D>(seq, q0, k0, causal, scale, Qs, Ks, Vs, dOs, lse_s, dvec_s, Ps, dSs);
      __syncthreads();
      for (int r = 0; r < kBwdB; ++r) {
        float p[4], ds[4];
        for (int i = 0; i < 4; ++i) {
          p[i] = Ps[r * (kBwdB + 1) + tk + 8 * i];
          ds[i] = dSs[r * (kBwdB + 1) + tk + 8 * i];
        }
        for (int c = 0; c < AC; ++c) {
          int col = tc + 16 * c;
          if (col >= D) break;
          float dov = dOs[r * (D + 1) + col], qv = Qs[r * (D + 1) + col];
          RECODE_UNROLL
          for (int i = 0; i < 4; ++i) {
            dv_acc[i][c] += p[i] * dov;
            dk_acc[i][c] += ds[i] * qv;
          }
        }
      }
    }
  }
  T* dkb = dk + (size_t)b * seq * Hkv * D;
  T* dvb = dv + (size_t)b * seq * Hkv * D;
  for (int i = 0; i < 4; ++i) {
    int kj = k0 + tk + 8 * i;
    if (kj >= seq) continue;
    for (int c = 0; c < AC; ++c) {
      int col = tc + 16 * c;
      if (col >= D) break;
      size_t idx = ((size_t)kj * Hkv + hk) * D + col;
      dkb[idx] = store_as<T>(dk_acc[i][c] * scale);
      dvb[idx] = store_as<T>(dv_acc[i][c]);
    }
  }
}

template <class T, int D>
__global__ void __launch_bounds__(kBwdThreads)
    attention_backward_dq_kernel(int seq, int Hq, int Hkv, const T* q, const T* k, const T* v, const float* lse,
                                 const float* dvec, const T* dout, T* dq, float scale, int causal) {
  SIMT_DYNAMIC_SHARED(float, smem);
  float* Ks = smem;
  float* Vs = Ks + kBwdB * (D + 1);
  float* Qs = Vs + kBwdB * (D + 1);
  float* dOs = Qs + kBwdB * (D + 1);
  float* dSs = dOs + kBwdB * (D + 1) + kBwdB * (kBwdB + 1);  // same offsets as the dK/dV kernel
  float* lse_s = dSs + kBwdB * (kBwdB + 1);
  float* dvec_s = lse_s + kBwdB;
  int tid = threadIdx.x;
  int q0 = blockIdx.x * kBwdB, h = blockIdx.y, b = blockIdx.z;
  int hk = h / (Hq / Hkv);
  load_rows<kBwdB, D>(q + (size_t)b * seq * Hq * D, seq, Hq, h, q0, Qs, D + 1, 1.0f);
  load_rows<kBwdB, D>(dout + (size_t)b * seq * Hq * D, seq, Hq, h, q0, dOs, D + 1, 1.0f);
  if (tid < kBwdB) {
    int qi = q0 + tid;
    lse_s[tid] = qi < seq ? lse[((size_t)b * Hq + h) * seq + qi] : 0.0f;
    dvec_s[tid] = qi < seq ? dvec[((size_t)b * Hq + h) * seq + qi] : 0.0f;
  }
  int tq = tid / 16, tc = tid % 16;  // rows tq + 8 i, columns tc + 16 c
  constexpr int AC = D / 16 > 0 ? D / 16 : 1;
  float acc[4][AC];
  for (int i = 0; i < 4; ++i)
    for (int c = 0; c < AC; ++c) acc[i][c] = 0.0f;
  const T* kb = k + (size_t)b * seq * Hkv * D;
  const T* vb = v + (size_t)b * seq * Hkv * D;
  int kv_end = causal ? min(seq, q0 + kBwdB) : seq;
  for (int k0 = 0; k0 < kv_end; k0 += kBwdB) {
    __syncthreads();
    load_rows<kBwdB, D>(kb, seq, Hkv, hk, k0, Ks, D + 1, 1.0f);
    load_rows<kBwdB, D>(vb, seq, Hkv, hk, k0, Vs, D + 1, 1.0f);
    __syncthreads();
    attention_backward_probs<D>(seq, q0, k0, causal, scale, Qs, Ks, Vs, dOs, lse_s, dvec_s, nullptr, dSs);
    __syncthreads();
    for (int j = 0; j < kBwdB; ++j) {
      float ds[4];
      for (int i = 0; i < 4; ++i) ds[i] = dSs[(tq + 8 * i) * (kBwdB + 1) + j];
      for (int c = 0; c < AC; ++c) {
        int col = tc + 16 * c;
        if (col >= D) break;
        float kv = Ks[j * (D + 1) + col];
        RECODE_UNROLL
        for (int i = 0; i < 4; ++i) acc[i][c] += ds[i] * kv;
      }
    }
  }
  T* dqb = dq + (size_t)b * seq * Hq * D;
  for (int i = 0; i < 4; ++i) {
    int qi = q0 + tq + 8 * i;
    if (qi >= seq) continue;
    for (int c = 0; c < AC; ++c) {
      int col = tc + 16 * c;
      if (col >= D) break;
      dqb[((size_t)qi * Hq + h) * D + col] = store_as<T>(acc[i][c] * scale);
    }
  }
}

// ---- backward on tensor cores (bf16) ---------------------------------------------------------------------
// The same two-kernel scheme with every product on tensor cores (wmma, bf16 in, fp32 accumulate). Here the
// accumulators (dK, dV per key row; dQ per query row) never need per-row rescaling, so they stay in fragments
// for the whole loop; S, dP go through shared memory for the elementwise softmax backward, and P, dS are
// rounded to bf16 for the second products (as FlashAttention-2 does). 64-row tiles, 4 warps, 16 rows a warp.
constexpr int kTbB = 64, kTbThreads = 128;

template <int D>
struct TbLayout {
  static constexpr int ldk = D + 8, lds = kTbB + 4, ldp = kTbB + 8;
  static constexpr size_t tile_bytes = (size_t)kTbB * ldk * 2;  // one bf16 [64][D] tile
  static constexpr size_t s_bytes = (size_t)kTbB * lds * 4;
  static constexpr size_t p_bytes = (size_t)kTbB * ldp * 2;
  static constexpr size_t total = 4 * tile_bytes + 2 * s_bytes + 2 * p_bytes + 2 * kTbB * 4;
};

// Writes a warp's 16 x 16 fragment (times `mul`) to out rows [row0, row0+16) (rows >= seq skipped), column
// block c0, through the warp's staging rows of `stage` (ld lds).
template <int D, class Frag>
__device__ __forceinline__ void store_rows_bf16(const Frag& f, float* stage, int lds, float mul, bf16* out, int seq,
                                                int heads, int h, int row0, int c0) {
  using namespace nvcuda;
  wmma::store_matrix_sync(stage, f, lds, wmma::mem_row_major);
  __syncwarp();
  for (int e = threadIdx.x % 32; e < 256; e += 32) {
    int r = e / 16, c = e % 16, t = row0 + r;
    if (t < seq) out[((size_t)t * heads + h) * D + c0 + c] = to_bf16(stage[r * lds + c] * mul);
  }
  __syncwarp();
}

template <int D>
__global__ void __launch_bounds__(kTbThreads)
    attention_backward_dkdv_tc_kernel(int seq, int Hq, int Hkv, const bf16* q, const bf16* k, const bf16* v,
                                      const float* lse, const float* dvec, const bf16* dout, bf16* dk, bf16* dv,
                                      float scale, int causal, int vec) {
  using namespace nvcuda;
  using L = TbLayout<D>;
  SIMT_DYNAMIC_SHARED(unsigned char, smem);
  bf16* Ks = reinterpret_cast<bf16*>(smem);
  bf16* Vs = reinterpret_cast<bf16*>(smem + L::tile_bytes);
  bf16* Qs = reinterpret_cast<bf16*>(smem + 2 * L::tile_bytes);
  bf16* dOs = reinterpret_cast<bf16*>(smem + 3 * L::tile_bytes);
  float* St = reinterpret_cast<float*>(smem + 4 * L::tile_bytes);  // S^T [key][query]
  float* dPt = St + kTbB * L::lds;                                 // dP^T
  bf16* Pt = reinterpret_cast<bf16*>(smem + 4 * L::tile_bytes + 2 * L::s_bytes);
  bf16* dSt = Pt + kTbB * L::ldp;
  float* lse_s = reinterpret_cast<float*>(smem + 4 * L::tile_bytes + 2 * L::s_bytes + 2 * L::p_bytes);
  float* dvec_s = lse_s + kTbB;
  int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  int k0 = blockIdx.x * kTbB, hk = blockIdx.y, b = blockIdx.z;
  int group = Hq / Hkv;
  int wr = warp * 16;  // this warp's key rows inside the tile
  copy_rows_bf16<kTbB, D>(k + (size_t)b * seq * Hkv * D, seq, Hkv, hk, k0, Ks, L::ldk, vec);
  copy_rows_bf16<kTbB, D>(v + (size_t)b * seq * Hkv * D, seq, Hkv, hk, k0, Vs, L::ldk, vec);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> dk_acc[D / 16], dv_acc[D / 16];
  RECODE_UNROLL
  for (int c = 0; c < D / 16; ++c) {
    wmma::fill_fragment(dk_acc[c], 0.0f);
    wmma::fill_fragment(dv_acc[c], 0.0f);
  }
  int row = wr + lane / 2, half = lane % 2;  // elementwise phase: 2 lanes per key row, 32 queries each
  int key = k0 + row;
  int q_start = causal ? k0 : 0;
  for (int g = 0; g < group; ++g) {
    int h = hk * group + g;
    for (int q0 = q_start; q0 < seq; q0 += kTbB) {
      __syncthreads();
      copy_rows_bf16<kTbB, D>(q + (size_t)b * seq * Hq * D, seq, Hq, h, q0, Qs, L::ldk, vec);
      copy_rows_bf16<kTbB, D>(dout + (size_t)b * seq * Hq * D, seq, Hq, h, q0, dOs, L::ldk, vec);
      if (tid < kTbB) {
        int qi = q0 + tid;
        lse_s[tid] = qi < seq ? lse[((size_t)b * Hq + h) * seq + qi] : 0.0f;
        dvec_s[tid] = qi < seq ? dvec[((size_t)b * Hq + h) * seq + qi] : 0.0f;
      }
      __syncthreads();
      // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys x 64 queries.
      {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> s_acc[kTbB / 16], dp_acc[kTbB / 16];
        RECODE_UNROLL
        for (int n = 0; n < kTbB / 16; ++n) {
          wmma::fill_fragment(s_acc[n], 0.0f);
          wmma::fill_fragment(dp_acc[n], 0.0f);
        }
        for (int kd = 0; kd < D; kd += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> ka, va;
          wmma::load_matrix_sync(ka, Ks + wr * L::ldk + kd, L::ldk);
          wmma::load_matrix_sync(va, Vs + wr * L::ldk + kd, L::ldk);
          RECODE_UNROLL
          for (int n = 0; n < kTbB / 16; ++n) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> qb, dob;
            wmma::load_matrix_sync(qb, Qs + (n * 16) * L::ldk + kd, L::ldk);
            wmma::load_matrix_sync(dob, dOs + (n * 16) * L::ldk + kd, L::ldk);
            wmma::mma_sync(s_acc[n], ka, qb, s_acc[n]);
            wmma::mma_sync(dp_acc[n], va, dob, dp_acc[n]);
          }
        }
        RECODE_UNROLL
        for (int n = 0; n < kTbB / 16; ++n) {
          wmma::store_matrix_sync(St + wr * L::lds + n * 16, s_acc[n], L::lds, wmma::mem_row_major);
          wmma::store_matrix_sync(dPt + wr * L::lds + n * 16, dp_acc[n], L::lds, wmma::mem_row_major);
        }
      }
      __syncwarp();
      // P^T = exp(scale S^T - lse), dS^T = P^T (dP^T - Dvec), masked, rounded to bf16.
      for (int j = half * 32; j < half * 32 + 32; ++j) {
        int qi = q0 + j;
        bool visible = key < seq && qi < seq && (!causal || key <= qi);
        float p = visible ? expf(St[row * L::lds + j] * scale - lse_s[j]) : 0.0f;
        float ds = p * (dPt[row * L::lds + j] - dvec_s[j]);
        Pt[row * L::ldp + j] = to_bf16(p);
        dSt[row * L::ldp + j] = to_bf16(ds);
      }
      __syncwarp();
      // dV += P^T dO, dK += dS^T Q (scale applied at the end).
      RECODE_UNROLL
      for (int kk = 0; kk < kTbB; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> pa, dsa;
        wmma::load_matrix_sync(pa, Pt + wr * L::ldp + kk, L::ldp);
        wmma::load_matrix_sync(dsa, dSt + wr * L::ldp + kk, L::ldp);
        RECODE_UNROLL
        for (int c = 0; c < D / 16; ++c) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> dob, qb;
          wmma::load_matrix_sync(dob, dOs + kk * L::ldk + c * 16, L::ldk);
          wmma::load_matrix_sync(qb, Qs + kk * L::ldk + c * 16, L::ldk);
          wmma::mma_sync(dv_acc[c], pa, dob, dv_acc[c]);
          wmma::mma_sync(dk_acc[c], dsa, qb, dk_acc[c]);
        }
      }
    }
  }
  bf16* dkb = dk + (size_t)b * seq * Hkv * D;
  bf16* dvb = dv + (size_t)b * seq * Hkv * D;
  float* stage = St + wr * L::lds;  // this warp's rows only
  RECODE_UNROLL
  for (int c = 0; c < D / 16; ++c) {
    store_rows_bf16<D>(dk_acc[c], stage, L::lds, scale, dkb, seq, Hkv, hk, k0 + wr, c * 16);
    store_rows_bf16<D>(dv_acc[c], stage, L::lds, 1.0f, dvb, seq, Hkv, hk, k0 + wr, c * 16);
  }
}

template <int D>
__global__ void __launch_bounds__(kTbThreads)
    attention_backward_dq_tc_kernel(int seq, int Hq, int Hkv, const bf16* q, const bf16* k, const bf16* v,
                                    const float* lse, const float* dvec, const bf16* dout, bf16* dq, float scale,
                                    int causal, int vec) {
  using namespace nvcuda;
  using L = TbLayout<D>;
  SIMT_DYNAMIC_SHARED(unsigned char, smem);
  bf16* Ks = reinterpret_cast<bf16*>(smem);
  bf16* Vs = reinterpret_cast<bf16*>(smem + L::tile_bytes);
  bf16* Qs = reinterpret_cast<bf16*>(smem + 2 * L::tile_bytes);
  bf16* dOs = reinterpret_cast<bf16*>(smem + 3 * L::tile_bytes);
  float* Ss = reinterpret_cast<float*>(smem + 4 * L::tile_bytes);  // S [query][key]
  float* dPs = Ss + kTbB * L::lds;
  bf16* dSs = reinterpret_cast<bf16*>(smem + 4 * L::tile_bytes + 2 * L::s_bytes);
  float* lse_s = reinterpret_cast<float*>(smem + 4 * L::tile_bytes + 2 * L::s_bytes + 2 * L::p_bytes);
  float* dvec_s = lse_s + kTbB;
  int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  int q0 = blockIdx.x * kTbB, h = blockIdx.y, b = blockIdx.z;
  int hk = h / (Hq / Hkv);
  int wr = warp * 16;  // this warp's query rows
  copy_rows_bf16<kTbB, D>(q + (size_t)b * seq * Hq * D, seq, Hq, h, q0, Qs, L::ldk, vec);
  copy_rows_bf16<kTbB, D>(dout + (size_t)b * seq * Hq * D, seq, Hq, h, q0, dOs, L::ldk, vec);
  if (tid < kTbB) {
    int qi = q0 + tid;
    lse_s[tid] = qi < seq ? lse[((size_t)b * Hq + h) * seq + qi] : 0.0f;
    dvec_s[tid] = qi < seq ? dvec[((size_t)b * Hq + h) * seq + qi] : 0.0f;
  }
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> dq_acc[D / 16];
  RECODE_UNROLL
  for (int c = 0; c < D / 16; ++c) wmma::fill_fragment(dq_acc[c], 0.0f);
  int row = wr + lane / 2, half = lane % 2;
  int qi = q0 + row;
  const bf16* kb = k + (size_t)b * seq * Hkv * D;
  const bf16* vb = v + (size_t)b * seq * Hkv * D;
  int kv_end = causal ? min(seq, q0 + kTbB) : seq;
  for (int k0 = 0; k0 < kv_end; k0 += kTbB) {
    __syncthreads();
    copy_rows_bf16<kTbB, D>(kb, seq, Hkv, hk, k0, Ks, L::ldk, vec);
    copy_rows_bf16<kTbB, D>(vb, seq, Hkv, hk, k0, Vs, L::ldk, vec);
    __syncthreads();
    if (causal && k0 > q0 + wr + 15) continue;  // every key after every query of this warp
    {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> s_acc[kTbB / 16], dp_acc[kTbB / 16];
      RECODE_UNROLL
      for (int n = 0; n < kTbB / 16; ++n) {
        wmma::fill_fragment(s_acc[n], 0.0f);
        wmma::fill_fragment(dp_acc[n], 0.0f);
      }
      for (int kd = 0; kd < D; kd += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> qa, doa;
        wmma::load_matrix_sync(qa, Qs + wr * L::ldk + kd, L::ldk);
        wmma::load_matrix_sync(doa, dOs + wr * L::ldk + kd, L::ldk);
        RECODE_UNROLL
        for (int n = 0; n < kTbB / 16; ++n) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> kbf, vbf;
          wmma::load_matrix_sync(kbf, Ks + (n * 16) * L::ldk + kd, L::ldk);
          wmma::load_matrix_sync(vbf, Vs + (n * 16) * L::ldk + kd, L::ldk);
          wmma::mma_sync(s_acc[n], qa, kbf, s_acc[n]);
          wmma::mma_sync(dp_acc[n], doa, vbf, dp_acc[n]);
        }
      }
      RECODE_UNROLL
      for (int n = 0; n < kTbB / 16; ++n) {
        wmma::store_matrix_sync(Ss + wr * L::lds + n * 16, s_acc[n], L::lds, wmma::mem_row_major);
        wmma::store_matrix_sync(dPs + wr * L::lds + n * 16, dp_acc[n], L::lds, wmma::mem_row_major);
      }
    }
    __syncwarp();
    for (int j = half * 32; j < half * 32 + 32; ++j) {
      int kj = k0 + j;
      bool visible = qi < seq && kj < seq && (!causal || kj <= qi);
      float p = visible ? expf(Ss[row * L::lds + j] * scale - lse_s[row]) : 0.0f;
      dSs[row * L::ldp + j] = to_bf16(p * (dPs[row * L::lds + j] - dvec_s[row]));
    }
    __syncwarp();
    RECODE_UNROLL
    for (int kk = 0; kk < kTbB; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> dsa;
      wmma::load_matrix_sync(dsa, dSs + wr * L::ldp + kk, L::ldp);
      RECODE_UNROLL
      for (int c = 0; c < D / 16; ++c) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> kbf;
        wmma::load_matrix_sync(kbf, Ks + kk * L::ldk + c * 16, L::ldk);
        wmma::mma_sync(dq_acc[c], dsa, kbf, dq_acc[c]);
      }
    }
  }
  __syncwarp();
  bf16* dqb = dq + (size_t)b * seq * Hq * D;
  float* stage = Ss + wr * L::lds;
  RECODE_UNROLL
  for (int c = 0; c < D / 16; ++c)
    store_rows_bf16<D>(dq_acc[c], stage, L::lds, scale, dqb, seq, Hq, h, q0 + wr, c * 16);
}

// ---- KV cache and decode ---------------------------------------------------------------------------------

template <class T>
__global__ void kv_cache_write_kernel(int B, int seq, int Hkv, int D, int capacity, const T* k, const T* v,
                                      const int* start, T* k_cache, T* v_cache) {
  size_t total = (size_t)B * seq * Hkv * D;
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
    int d = (int)(idx % D);
    size_t r = idx / D;  // (b * seq + t) * Hkv + h
    int h = (int)(r % Hkv);
    size_t bt = r / Hkv;
    int t = (int)(bt % seq), b = (int)(bt / seq);
    int pos = start[b] + t;
    if (pos < 0 || pos >= capacity) continue;  // callers keep positions inside the cache
    size_t dst = (((size_t)b * Hkv + h) * capacity + pos) * D + d;
    k_cache[dst] = k[idx];
    v_cache[dst] = v[idx];
  }
}

// The 16 bytes of v as floats: 8 bf16 or 4 fp32 values.
template <class T>
__device__ __forceinline__ void unpack_vec(const Bits128& v, float* out);
template <>
__device__ __forceinline__ void unpack_vec<bf16>(const Bits128& v, float* out) {
  RECODE_UNROLL
  for (int i = 0; i < 8; ++i) out[i] = to_float(bf16_lane(v, i));
}
template <>
__device__ __forceinline__ void unpack_vec<float>(const Bits128& v, float* out) {
  RECODE_UNROLL
  for (int i = 0; i < 4; ++i) out[i] = __uint_as_float(v.w[i]);
}

template <int D>
constexpr size_t decode_smem_floats() {
  return (size_t)kDecMaxGroup * D + kDecBK * (D + 1) + kDecBK * D + (kDecThreads / 32) * kDecBK;
}

// One block per (split, kv head, sequence): its 4 warps share each K/V tile; warp w serves the group's query
// heads w, w + 4, ...; lanes own keys for the scores and columns lane + 32 c for the output.
template <class T, int D>
__global__ void __launch_bounds__(kDecThreads)
    attention_decode_kernel(int Hq, int Hkv, int capacity, const T* q, const T* k_cache, const T* v_cache,
                            const int* context_lens, T* o, float scale, int num_splits, float* partial, int vec) {
  SIMT_DYNAMIC_SHARED(float, smem);
  float* qs = smem;                   // [group][D], pre-scaled
  float* Ks = qs + kDecMaxGroup * D;  // [BK][D+1]
  float* Vs = Ks + kDecBK * (D + 1);  // [BK][D]
  float* ps = Vs + kDecBK * D;        // [warps][BK]
  int split = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  int group = Hq / Hkv;
  int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  int ctx = min(max(context_lens[b], 0), capacity);
  int chunk = (ctx + num_splits - 1) / num_splits;
  chunk = (chunk + kDecBK - 1) / kDecBK * kDecBK;
  int c_begin = split * chunk, c_end = min(ctx, c_begin + chunk);
  for (int idx = tid; idx < group * D; idx += blockDim.x)
    qs[idx] = to_float(q[((size_t)b * Hq + hk * group) * D + idx]) * scale;
  constexpr int GW = kDecMaxGroup / (kDecThreads / 32);  // query heads per warp at most
  constexpr int OC = (D + 31) / 32;
  float m[GW], l[GW], acc[GW][OC];
  for (int gi = 0; gi < GW; ++gi) {
    m[gi] = kNegInf;
    l[gi] = 0.0f;
    for (int c = 0; c < OC; ++c) acc[gi][c] = 0.0f;
  }
  const T* kbase = k_cache + ((size_t)b * Hkv + hk) * capacity * D;
  const T* vbase = v_cache + ((size_t)b * Hkv + hk) * capacity * D;
  for (int k0 = c_begin; k0 < c_end; k0 += kDecBK) {
    __syncthreads();
    if (vec) {  // 16-byte loads: decode is bound by reading the cache, so the loads should be wide
      constexpr int E = 16 / sizeof(T);  // elements per vector
      for (int idx = tid; idx < kDecBK * D / E; idx += blockDim.x) {
        int j = idx / (D / E), d = (idx % (D / E)) * E;
        float kf[E], vf[E];
        if (k0 + j < c_end) {
          unpack_vec<T>(load128(kbase + (size_t)(k0 + j) * D + d), kf);
          unpack_vec<T>(load128(vbase + (size_t)(k0 + j) * D + d), vf);
        } else {
          for (int e = 0; e < E; ++e) kf[e] = vf[e] = 0.0f;
        }
        RECODE_UNROLL
        for (int e = 0; e < E; ++e) {
          Ks[j * (D + 1) + d + e] = kf[e];
          Vs[j * D + d + e] = vf[e];
        }
      }
    } else {
      for (int idx = tid; idx < kDecBK * D; idx += blockDim.x) {
        int j = idx / D, d = idx % D;
        bool in = k0 + j < c_end;
        Ks[j * (D + 1) + d] = in ? to_float(kbase[(size_t)(k0 + j) * D + d]) : 0.0f;
        Vs[j * D + d] = in ? to_float(vbase[(size_t)(k0 + j) * D + d]) : 0.0f;
      }
    }
    __syncthreads();
    for (int gi = 0; gi < GW; ++gi) {
      int g = warp + gi * (kDecThreads / 32);
      if (g >= group) break;  // uniform across the warp
      float s = kNegInf;
      if (k0 + lane < c_end) {
        s = 0.0f;
        for (int d = 0; d < D; ++d) s += qs[g * D + d] * Ks[lane * (D + 1) + d];
      }
      float m_new = fmaxf(m[gi], attn_warp_max(s));  // at least one key of the tile is valid
      float p = s == kNegInf ? 0.0f : expf(s - m_new);
      float alpha = m[gi] == kNegInf ? 0.0f : expf(m[gi] - m_new);
      l[gi] = l[gi] * alpha + attn_warp_sum(p);
      m[gi] = m_new;
      ps[warp * kDecBK + lane] = p;
      __syncwarp();
      for (int c = 0; c < OC; ++c) {
        int col = lane + 32 * c;
        float a = acc[gi][c] * alpha;
        if (col < D)
          for (int j = 0; j < kDecBK; ++j) a += ps[warp * kDecBK + j] * Vs[j * D + col];
        acc[gi][c] = a;
      }
      __syncwarp();
    }
  }
  for (int gi = 0; gi < GW; ++gi) {
    int g = warp + gi * (kDecThreads / 32);
    if (g >= group) break;
    int h = hk * group + g;
    float inv = l[gi] > 0.0f ? 1.0f / l[gi] : 0.0f;
    if (num_splits == 1) {
      for (int c = 0; c < OC; ++c) {
        int col = lane + 32 * c;
        if (col < D) o[((size_t)b * Hq + h) * D + col] = store_as<T>(acc[gi][c] * inv);
      }
    } else {
      float* part = partial + (((size_t)b * Hq + h) * num_splits + split) * (D + 2);
      for (int c = 0; c < OC; ++c) {
        int col = lane + 32 * c;
        if (col < D) part[col] = acc[gi][c] * inv;
      }
      if (lane == 0) {
        part[D] = l[gi] > 0.0f ? m[gi] + logf(l[gi]) : kNegInf;  // this split's log-sum-exp
        part[D + 1] = 0.0f;
      }
    }
  }
}

// Combines the splits of one (sequence, query head): o = sum_s exp(lse_s - M) o_s / sum_s exp(lse_s - M).
template <class T>
__global__ void attention_decode_combine_kernel(int Hq, int D, int num_splits, const float* partial, T* o) {
  int h = blockIdx.x, b = blockIdx.y;
  const float* parts = partial + ((size_t)b * Hq + h) * num_splits * (D + 2);
  float M = kNegInf;
  for (int s = 0; s < num_splits; ++s) M = fmaxf(M, parts[s * (D + 2) + D]);
  for (int col = threadIdx.x; col < D; col += blockDim.x) {
    float num = 0.0f, den = 0.0f;
    for (int s = 0; s < num_splits; ++s) {
      float l = parts[s * (D + 2) + D];
      if (l == kNegInf) continue;
      float w = expf(l - M);
      num += w * parts[s * (D + 2) + col];
      den += w;
    }
    o[((size_t)b * Hq + h) * D + col] = store_as<T>(den > 0.0f ? num / den : 0.0f);
  }
}

// Raises the dynamic shared memory limit of a kernel above the 48 KiB default (GPU only).
template <class K>
cudaError_t allow_smem(K kernel, size_t bytes) {
#if defined(__CUDACC__)
  if (bytes > 48 * 1024) return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
#endif
  (void)kernel;
  (void)bytes;
  return cudaSuccess;
}

}  // namespace

// Binds HD to the compile-time head dimension.
#define RECODE_DISPATCH_HEAD_DIM(D, ...) \
  do {                                   \
    switch (D) {                         \
      case 16: {                         \
        constexpr int HD = 16;           \
        __VA_ARGS__;                     \
      } break;                           \
      case 32: {                         \
        constexpr int HD = 32;           \
        __VA_ARGS__;                     \
      } break;                           \
      case 64: {                         \
        constexpr int HD = 64;           \
        __VA_ARGS__;                     \
      } break;                           \
      default: {                         \
        constexpr int HD = 128;          \
        __VA_ARGS__;                     \
      } break;                           \
    }                                    \
  } while (0)

#define ATTN_CHECK_SHAPES(op)                                                                                       \
  RECODE_REQUIRE_DTYPE(dtype, op);                                                                                  \
  RECODE_REQUIRE(D == 16 || D == 32 || D == 64 || D == 128, op, "head dim D must be 16, 32, 64 or 128, got %d", D); \
  RECODE_REQUIRE(Hq > 0 && Hkv > 0 && Hq % Hkv == 0, op, "Hq (%d) must be a positive multiple of Hkv (%d)", Hq, Hkv)

RECODE_API(attention_forward)(int B, int seq, int Hq, int Hkv, int D, const void* q, const void* k, const void* v,
                              void* o, float* lse, float scale, int causal, int dtype, void* stream, char* err,
                              size_t err_len) {
  RECODE_API_TRY
  ATTN_CHECK_SHAPES("attention_forward");
  RECODE_REQUIRE(B >= 0 && seq >= 0 && B <= 65535 && Hq <= 65535, "attention_forward", "bad sizes B=%d T=%d Hq=%d", B,
                 seq, Hq);
  if (B == 0 || seq == 0) return 0;
  RECODE_REQUIRE(q && k && v && o && lse, "attention_forward", "NULL pointer");
  if (dtype == RECODE_BF16) {  // tensor cores
    int vec = aligned16(q) && aligned16(k) && aligned16(v);
    dim3 grid(ceil_div((unsigned)seq, kTcBQ), Hq, B);
    RECODE_DISPATCH_HEAD_DIM(D, {
      auto kernel = attention_forward_tc_kernel<HD>;
      size_t bytes = TcLayout<HD>::total;
      RECODE_CUDA_CHECK(allow_smem(kernel, bytes));
      SIMT_LAUNCH(kernel, grid, dim3(kTcThreads), bytes, RECODE_STREAM(stream), seq, Hq, Hkv, (const bf16*)q,
                  (const bf16*)k, (const bf16*)v, (bf16*)o, lse, scale, causal, vec);
    });
    RECODE_LAUNCH_CHECK();
    return 0;
  }
  dim3 grid(ceil_div((unsigned)seq, kFwdBQ), Hq, B);  // fp32: SIMT kernel
  RECODE_DISPATCH_HEAD_DIM(D, {
    auto kernel = attention_forward_kernel<float, HD>;
    size_t bytes = fwd_smem_floats<HD>() * sizeof(float);
    RECODE_CUDA_CHECK(allow_smem(kernel, bytes));
    SIMT_LAUNCH(kernel, grid, dim3(kFwdThreads), bytes, RECODE_STREAM(stream), seq, Hq, Hkv, (const float*)q,
                (const float*)k, (const float*)v, (float*)o, lse, scale, causal);
  });
  RECODE_LAUNCH_CHECK();
  return 0;
  RECODE_API_CATCH
}

RECODE_API(attention_backward)(int B, int seq, int Hq, int Hkv, int D, const void* q, const void* k, const void* v,
                               const void* o, const float* lse, const void* dout, void* dq, void* dk, void* dv,
                               float* scratch, float scale, int causal, int dtype, void* stream, char* err,
                               size_t err_len) {
  RECODE_API_TRY
  ATTN_CHECK_SHAPES("attention_backward");
  RECODE_REQUIRE(B >= 0 && seq >= 0 && B <= 65535 && Hq <= 65535, "attention_backward", "bad sizes B=%d T=%d Hq=%d", B,
                 seq, Hq);
  if (B == 0 || seq == 0) return 0;
  RECODE_REQUIRE(q && k && v && o && lse && dout && dq && dk && dv && scratch, "attention_backward", "NULL pointer");
  cudaStream_t s = RECODE_STREAM(stream);
  RECODE_UNUSED(s);
  size_t rows = (size_t)B * seq * Hq;
  RECODE_DISPATCH_DTYPE(dtype, {
    SIMT_LAUNCH(attention_backward_dot_kernel<T>, dim3(grid_for(rows, 8, 1u << 30)), dim3(256), 0, s, B, seq, Hq, D,
                (const T*)o, (const T*)dout, scratch);
  });
  RECODE_LAUNCH_CHECK();
  if (dtype == RECODE_BF16) {  // tensor cores
    int vec = aligned16(q) && aligned16(k) && aligned16(v) && aligned16(dout);
    RECODE_DISPATCH_HEAD_DIM(D, {
      auto dkdv = attention_backward_dkdv_tc_kernel<HD>;
      auto dqk = attention_backward_dq_tc_kernel<HD>;
      size_t bytes = TbLayout<HD>::total;
      RECODE_CUDA_CHECK(allow_smem(dkdv, bytes));
      RECODE_CUDA_CHECK(allow_smem(dqk, bytes));
      SIMT_LAUNCH(dkdv, dim3(ceil_div((unsigned)seq, kTbB), Hkv, B), dim3(kTbThreads), bytes, s, seq, Hq, Hkv,
                  (const bf16*)q, (const bf16*)k, (const bf16*)v, lse, scratch, (const bf16*)dout, (bf16*)dk, (bf16*)dv,
                  scale, causal, vec);
      RECODE_LAUNCH_CHECK();
      SIMT_LAUNCH(dqk, dim3(ceil_div((unsigned)seq, kTbB), Hq, B), dim3(kTbThreads), bytes, s, seq, Hq, Hkv,
                  (const bf16*)q, (const bf16*)k, (const bf16*)v, lse, scratch, (const bf16*)dout, (bf16*)dq, scale,
                  causal, vec);
      RECODE_LAUNCH_CHECK();
    });
    return 0;
  }
  size_t bytes = 0;  // fp32: SIMT kernels
  RECODE_DISPATCH_HEAD_DIM(D, {
    using T = float;
    auto dkdv = attention_backward_dkdv_kernel<T, HD>;
    auto dqk = attention_backward_dq_kernel<T, HD>;
    bytes = bwd_smem_floats<HD>() * sizeof(float);
    RECODE_CUDA_CHECK(allow_smem(dkdv, bytes));
    RECODE_CUDA_CHECK(allow_smem(dqk, bytes));
    SIMT_LAUNCH(dkdv, dim3(ceil_div((unsigned)seq, kBwdB), Hkv, B), dim3(kBwdThreads), bytes, s, seq, Hq, Hkv,
                (const T*)q, (const T*)k, (const T*)v, lse, scratch, (const T*)dout, (T*)dk, (T*)dv, scale, causal);
    RECODE_LAUNCH_CHECK();
    SIMT_LAUNCH(dqk, dim3(ceil_div((unsigned)seq, kBwdB), Hq, B), dim3(kBwdThreads), bytes, s, seq, Hq, Hkv,
                (const T*)q, (const T*)k, (const T*)v, lse, scratch, (const T*)dout, (T*)dq, scale, causal);
    RECODE_LAUNCH_CHECK();
  });
  return 0;
  RECODE_API_CATCH
}

RECODE_API(kv_cache_write)(int B, int seq, int Hkv, int D, int capacity, const void* k, const void* v, const int* start,
                           void* k_cache, void* v_cache, int dtype, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  RECODE_REQUIRE_DTYPE(dtype, "kv_cache_write");
  RECODE_REQUIRE(B >= 0 && seq >= 0 && Hkv > 0 && D > 0 && capacity > 0, "kv_cache_write",
                 "bad sizes B=%d T=%d Hkv=%d D=%d capacity=%d", B, seq, Hkv, D, capacity);
  if (B == 0 || seq == 0) return 0;
  RECODE_REQUIRE(k && v && start && k_cache && v_cache, "kv_cache_write", "NULL pointer");
  size_t total = (size_t)B * seq * Hkv * D;
  RECODE_DISPATCH_DTYPE(dtype, SIMT_LAUNCH(kv_cache_write_kernel<T>, dim3(grid_for(total, 256, 8192)), dim3(256), 0,
                                           RECODE_STREAM(stream), B, seq, Hkv, D, capacity, (const T*)k, (const T*)v,
                                           start, (T*)k_cache, (T*)v_cache));
  RECODE_LAUNCH_CHECK();
  return 0;
  RECODE_API_CATCH
}

RECODE_API(attention_decode)(int B, int Hq, int Hkv, int D, int capacity, const void* q, const void* k_cache,
                             const void* v_cache, const int* context_lens, void* o, float scale, int num_splits,
                             float* scratch, int dtype, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  ATTN_CHECK_SHAPES("attention_decode");
  RECODE_REQUIRE(Hq / Hkv <= kDecMaxGroup, "attention_decode", "at most %d query heads per kv head, got %d",
                 kDecMaxGroup, Hq / Hkv);
  RECODE_REQUIRE(B >= 0 && B <= 65535 && Hkv <= 65535 && capacity > 0, "attention_decode",
                 "bad sizes B=%d Hkv=%d capacity=%d", B, Hkv, capacity);
  RECODE_REQUIRE(num_splits >= 1 && num_splits <= 1024, "attention_decode", "num_splits must be in 1..1024, got %d",
                 num_splits);
  if (B == 0) return 0;
  RECODE_REQUIRE(q && k_cache && v_cache && context_lens && o && (num_splits == 1 || scratch), "attention_decode",
                 "NULL pointer");
  cudaStream_t s = RECODE_STREAM(stream);
  RECODE_UNUSED(s);
  int vec = aligned16(k_cache) && aligned16(v_cache);
  RECODE_DISPATCH_DTYPE(dtype, RECODE_DISPATCH_HEAD_DIM(D, {
                          auto kernel = attention_decode_kernel<T, HD>;
                          size_t bytes = decode_smem_floats<HD>() * sizeof(float);
                          RECODE_CUDA_CHECK(allow_smem(kernel, bytes));
                          SIMT_LAUNCH(kernel, dim3(num_splits, Hkv, B), dim3(kDecThreads), bytes, s, Hq, Hkv, capacity,
                                      (const T*)q, (const T*)k_cache, (const T*)v_cache, context_lens, (T*)o, scale,
                                      num_splits, scratch, vec);
                          RECODE_LAUNCH_CHECK();
                          if (num_splits > 1) {
                            SIMT_LAUNCH(attention_decode_combine_kernel<T>, dim3(Hq, B), dim3(HD < 128 ? HD : 128), 0,
                                        s, Hq, HD, num_splits, scratch, (T*)o);
                            RECODE_LAUNCH_CHECK();
                          }
                        }));
  return 0;
  RECODE_API_CATCH
}
