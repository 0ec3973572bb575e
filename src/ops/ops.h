// CPU kernels of the transformer, one file per family (src/ops/<family>.cpp). Every op is a plain
// forward/backward pair in the llm.c style; each also has a `_ref` forward (and most a `_ref` backward)
// written as obviously as possible with float64 accumulation, kept apart from the fast path, which the
// tests hold it to. Backward functions ACCUMULATE into their gradient outputs (+=), so gradients from
// several uses of a tensor add up; callers zero them first.
//
// Layouts: activations are row-major [rows, features]; a linear layer's weight is Hugging Face's [out, in]
// (y = x W^T + b); attention tensors are [tokens, heads, head_dim].
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace recode::ops {

// ---- embedding (embedding.cpp) -----------------------------------------------------------------------
// out[t, :] = table[ids[t], :]. ids must be in [0, V) (checked by the caller).
void embedding_forward(float* out, const int32_t* ids, const float* table, int T, int C);
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int T, int C);

// ---- RMSNorm (rmsnorm.cpp) ---------------------------------------------------------------------------
// out[n, :] = x[n, :] * rstd[n] * w, rstd[n] = 1 / sqrt(mean(x[n, :]^2) + eps). rstd (may be null) is saved
// for the backward. Qwen3's per-head q/k norm is this op over rows of head_dim.
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps);
void rmsnorm_forward_ref(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps);
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd, int N,
                      int C);
void rmsnorm_backward_ref(float* dx, float* dw, const float* dout, const float* x, const float* w, int N, int C,
                          float eps);

// ---- rotary position embedding (rope.cpp) ------------------------------------------------------------
// The "rotate half" convention of Hugging Face Llama/Qwen: for i < D/2, the pair (x[i], x[i + D/2]) is
// rotated by angle pos * inv_freq[i].
struct RopeScaling {
  bool llama3 = false;
  double factor = 1, low_freq_factor = 1, high_freq_factor = 4, original_max_position = 8192;
};
// inv_freq[i] = theta^(-2i/D), llama3-scaled when configured (float64: used by fast and reference paths).
void rope_inv_freq_ref(double* inv_freq, int D, double theta, const RopeScaling& scaling);
// In place on x [T, H, D] with positions pos[T]. Angles pos * inv_freq are formed in double (a float32 angle
// at position 10^4 is off by ~1e-3 rad), cos/sin computed once per (token, frequency) and applied in float.
void rope_forward(float* x, const int32_t* pos, const double* inv_freq, int T, int H, int D);
void rope_forward_ref(float* out, const float* x, const int32_t* pos, const double* inv_freq, int T, int H, int D);
// The rotation is orthogonal: its backward rotates the gradient back (in place on dx).
void rope_backward(float* dx, const int32_t* pos, const double* inv_freq, int T, int H, int D);

// ---- linear / GEMM (gemm.cpp, gemm_avx2.cpp) -----------------------------------------------------------
// General strided product C[m, n] (+)= sum_k A(m, k) * B(n, k), where A(m, k) = A[m*a_rs + k*a_cs] and
// B(n, k) = B[n*b_rs + k*b_cs]; C is row-major with leading dimension ldc. Strides express transposes, so
// one routine serves the forward (x W^T) and both backward products. Blocked, packed, multi-threaded; the
// micro-kernel is AVX2+FMA when the run-time SIMD level allows, else portable C++.
void gemm(float* C, int64_t ldc, const float* A, int64_t a_rs, int64_t a_cs, const float* B, int64_t b_rs, int64_t b_cs,
          int M, int N, int K, bool accumulate);
void gemm_ref(float* C, int64_t ldc, const float* A, int64_t a_rs, int64_t a_cs, const float* B, int64_t b_rs,
              int64_t b_cs, int M, int N, int K, bool accumulate);

// A weight [N, K] packed once into the GEMM's panel layout (kPanel columns of the output interleaved per k),
// so inference never repacks weights. Either float32 panels, or bfloat16 panels (half the memory and half
// the bytes streamed per decode step; the micro-kernel widens them to float32 in registers).
constexpr int kPanel = 16;
// 64-byte aligned storage: a panel row of 16 floats is then exactly one cache line, so the micro-kernel's
// loads never straddle two lines.
template <class T>
struct CacheAligned {
  using value_type = T;
  CacheAligned() = default;
  template <class U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <class U>
  bool operator==(const CacheAligned<U>&) const {
    return true;
  }
};
using AlignedFloats = std::vector<float, CacheAligned<float>>;
struct PackedWeight {
  int N = 0, K = 0;
  AlignedFloats panels;                                       // [ceil(N / kPanel)][K][kPanel], zero padded
  std::vector<uint16_t, CacheAligned<uint16_t>> panels_bf16;  // the same layout as bfloat16 bits
  bool is_bf16() const { return !panels_bf16.empty(); }
  size_t bytes() const { return panels.size() * sizeof(float) + panels_bf16.size() * sizeof(uint16_t); }
};
// bf16: values rounded to nearest even bfloat16.
PackedWeight pack_weight(const float* W, int N, int K, bool bf16 = false);
// C[M, N] (+)= A[M, K] (row stride lda) times the packed weight, transposed.
void gemm_packed(float* C, int64_t ldc, const float* A, int64_t lda, const PackedWeight& W, int M, bool accumulate);

// y[M, N] = x[M, K] W^T + b (b may be null). W is [N, K] row-major.
void linear_forward(float* y, const float* x, const float* W, const float* b, int M, int N, int K);
void linear_forward_packed(float* y, const float* x, const PackedWeight& W, const float* b, int M);
void linear_forward_ref(float* y, const float* x, const float* W, const float* b, int M, int N, int K);
// dx += dy W, dW += dy^T x, db += sum over rows of dy (each output may be null).
void linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x, const float* W, int M, int N,
                     int K);
void linear_backward_ref(float* dx, float* dW, float* db, const float* dy, const float* x, const float* W, int M, int N,
                         int K);

// ---- SwiGLU (swiglu.cpp) -------------------------------------------------------------------------------
// out = silu(gate) * up, elementwise over n values.
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n);
void swiglu_forward_ref(float* out, const float* gate, const float* up, int64_t n);
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n);
void swiglu_backward_ref(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n);

// ---- causal attention (attention.cpp, attention_avx2.cpp) -------------------------------------------------
// T queries q [T, H, D] against S keys/values k, v [S, Hkv, D] (GQA: query head h reads kv head
// h / (H / Hkv)). Query i sits at position q_pos0 + i among the keys and sees keys j <= q_pos0 + i (prefill
// of a fresh sequence: S == T, q_pos0 == 0; a chunk appended to a KV cache: q_pos0 = tokens already cached).
// out [T, H, D]; lse [T, H] (natural-log sum of exp of the scaled scores, may be null) is what the backward
// needs to recompute probabilities without storing them.
struct AttnShape {
  int T = 0, S = 0, H = 0, Hkv = 0, D = 0, q_pos0 = 0;
  float scale = 1;
};
// Flash-style: query tiles x key tiles with an online softmax, never a T x S matrix; threads over heads
// and query tiles.
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s);
// Few queries (decode) over a long context: the context is split in chunks processed in parallel, then
// their partial softmax states are merged.
void attention_decode(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s);
void attention_forward_ref(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s);
// dq += ..., dk += ..., dv += ... from dout, recomputing probabilities from lse (never T x S).
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const AttnShape& s);
void attention_backward_ref(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                            const float* v, const AttnShape& s);

// ---- a whole decoder layer (decoder_layer.cpp) ------------------------------------------------------------
struct LayerDims {
  int C = 0;    // hidden size
  int H = 0;    // query heads
  int Hkv = 0;  // key/value heads
  int D = 0;    // head dim
  int F = 0;    // MLP intermediate size
  float eps = 1e-6f;
  bool qk_norm = false;  // Qwen3: RMSNorm over each q and k head before RoPE
};

// A LoRA / DoRA adapter on a frozen linear layer (formulas and the plain reference: src/train/adapters.h). The
// trainer owns the arrays; `weight_norm` (DoRA) is ||W + s B A|| per output row, computed once per update.
struct LinearAdapter {
  const float* a = nullptr;                                               // A [rank, K]
  const float* b = nullptr;                                               // B [N, rank]
  const float* magnitude = nullptr;                                       // m [N] (DoRA), null for LoRA
  const float* weight_norm = nullptr;                                     // n [N] (DoRA)
  float *grad_a = nullptr, *grad_b = nullptr, *grad_magnitude = nullptr;  // accumulated by the backward
  int rank = 0;
  float scaling = 1;  // alpha / rank
  float dropout = 0;  // on the adapter's input; mask from (seed, offset + flat index), see adapters.h
  uint64_t seed = 0, offset = 0;
};

// A linear layer as the layer sees it: packed weight for inference, or plain [N, K] for training.
struct Linear {
  const float* w = nullptr;              // [N, K] row-major, or null when only `packed` is kept
  const PackedWeight* packed = nullptr;  // preferred when present
  const float* bias = nullptr;           // [N] or null
  int N = 0, K = 0;
  const LinearAdapter* adapter = nullptr;  // training with adapters: w frozen, gradients go to the adapter
};
void linear_forward(float* y, const float* x, const Linear& L, int M);

// ---- adapted linear (adapter_linear.cpp) -----------------------------------------------------------------
// What an adapted linear keeps for its backward: u = drop(x) A^T [M, rank] and, for DoRA, the pre-scaling
// output drop(x) W^T + s u B^T [M, N] (the magnitude's gradient).
struct AdapterActs {
  std::vector<float> u, pre;
};
// y = the adapted layer of x (L.adapter set, L.w plain); fills `acts`.
void adapter_linear_forward(float* y, const float* x, const Linear& L, int M, AdapterActs& acts);
// dx += d x (may be null); the adapter's gradients accumulate; W and the bias are frozen.
void adapter_linear_backward(float* dx, const float* dy, const float* x, const Linear& L, int M,
                             const AdapterActs& acts);
// The merged weight [N, K] the adapted layer equals at inference (LoRA: W + s B A; DoRA: (m / n) (W + s B A)
// row-wise) and/or DoRA's n [N] = ||W + s B A|| per row (either output may be null; one pass over the rows of
// W + s B A, formed block by block through the GEMM).
void adapter_merged_weight(float* merged, float* norm, const float* W, const LinearAdapter& ad, int N, int K);
void adapter_weight_norm(float* norm, const float* W, const LinearAdapter& ad, int N, int K);  // merged = null

struct LayerWeights {
  const float* input_norm = nullptr;           // [C]
  Linear q, k, v, o;                           // q [H*D, C], k/v [Hkv*D, C], o [C, H*D]
  const float* q_norm = nullptr;               // [D] (qk_norm only)
  const float* k_norm = nullptr;               // [D]
  const float* post_attention_norm = nullptr;  // [C]
  Linear gate, up, down;                       // gate/up [F, C], down [C, F]
};

// One sequence's slice of a batch of tokens: rows [t0, t0 + t) of the batch, appended at positions
// pos0 .. pos0 + t - 1 to the sequence's key/value storage for this layer (k_cache, v_cache:
// [capacity, Hkv, D]); attention reads positions 0 .. pos0 + t - 1 from it.
struct AttnSeq {
  int t0 = 0, t = 0, pos0 = 0;
  float* k_cache = nullptr;
  float* v_cache = nullptr;
};

// Activations a layer keeps for its backward (all [T, ...] row-major), or scratch for inference.
struct LayerActs {
  std::vector<float> x_in, h1, rstd1, q, k, v, q_rstd, k_rstd, q_pre, k_pre, att, lse, x_mid, h2, rstd2, gate, up, act,
      tmp;
  AdapterActs ad_q, ad_k, ad_v, ad_o, ad_gate, ad_up, ad_down;  // adapted linears only
  void resize(int T, const LayerDims& d, bool for_backward);
};

// x [T, C] is the residual stream, updated in place: x += attn(norm(x)); x += mlp(norm(x)). pos [T] holds
// each row's position. With `training`, seqs must describe whole sequences starting at position 0 and their
// k/v caches are acts.k / acts.v (the layer sets that up when seqs' caches are null).
void decoder_layer_forward(float* x, const LayerWeights& w, const LayerDims& d, const int32_t* pos, int T,
                           const std::vector<AttnSeq>& seqs, LayerActs& acts, const double* inv_freq);
// Gradients of one layer (training): dx [T, C] is the gradient wrt the layer's output on entry and wrt its
// input on return; weight gradients accumulate into `grads` (plain [N, K] arrays, same fields as the weights).
struct LayerGrads {
  float *input_norm = nullptr, *q_w = nullptr, *q_b = nullptr, *k_w = nullptr, *k_b = nullptr, *v_w = nullptr,
        *v_b = nullptr, *o_w = nullptr, *o_b = nullptr, *q_norm = nullptr, *k_norm = nullptr,
        *post_attention_norm = nullptr, *gate_w = nullptr, *gate_b = nullptr, *up_w = nullptr, *up_b = nullptr,
        *down_w = nullptr, *down_b = nullptr;
};
void decoder_layer_backward(float* dx, const LayerWeights& w, const LayerDims& d, const int32_t* pos, int T,
                            const std::vector<AttnSeq>& seqs, const LayerActs& acts, const double* inv_freq,
                            LayerGrads& g);

}  // namespace recode::ops
