// Test and benchmark access to each CPU op, reference or fast path, on caller-owned Float32Arrays (sizes
// are checked here, so a wrong call is an ERR_INVALID_ARG, never a stray write). Synchronous: these are for
// small test inputs and for timing the kernels themselves.
//   opGemm(variant, C, A, B, M, N, K, transA, transB, accumulate)   C[M,N] (+)= op(A) op(B)^T
//   opLinearForward(variant, y, x, W, b|null, M, N, K, packed?: 'f32'|'bf16')     opLinearBackward(variant, dx, dW, db,
//   dy, x, W, M, N, K) opRmsnormForward(variant, out, rstd, x, w, N, C, eps)   opRmsnormBackward(variant, dx, dw, dout,
//   x, w, rstd, N, C, eps) opRopeForward(variant, out, x, pos, T, H, D, theta, scaling|null)   opRopeBackward(dx, pos,
//   T, H, D, theta, scaling|null) opSwigluForward(variant, out, gate, up)                 opSwigluBackward(variant,
//   dgate, dup, dout, gate, up) opEmbeddingForward(out, ids, table, T, C)               opEmbeddingBackward(dtable,
//   dout, ids, T, C) opAttentionForward(variant 'ref'|'flash'|'decode', out, lse, q, k, v, shape)
//   opAttentionBackward(variant, dq, dk, dv, dout, q, k, v, out, lse, shape)
//   opDecoderLayer(dims, weights, x, pos, dy|null) -> { y, dx, grads }     (forward + backward, one sequence)
#include <cmath>
#include <cstring>

#include <algorithm>
#include <chrono>

#include "core/cpu_features.h"
#include "node/napi_util.h"
#include "ops/ops.h"
#include "core/parallel.h"

namespace recode::ops {
double fma_peak_probe_avx2(int64_t iterations);
namespace {

float* f32(const Args& a, size_t i, const char* name, int64_t n) {
  auto arr = a.typed<float>(i, name);
  if ((int64_t)arr.ElementLength() != n)
    a.fail(i, std::string("(") + name + ") must have " + std::to_string(n) + " elements, got " +
                  std::to_string(arr.ElementLength()));
  return arr.Data();
}
float* f32_opt(const Args& a, size_t i, const char* name, int64_t n) { return a.has(i) ? f32(a, i, name, n) : nullptr; }
int dim(const Args& a, size_t i, const char* name) { return (int)a.integer(i, name, 1, 1 << 24); }
bool is_ref(const Args& a, size_t i) {
  std::string v = a.string(i, "variant");
  if (v != "ref" && v != "fast") a.fail(i, "(variant) must be 'ref' or 'fast'");
  return v == "ref";
}

Napi::Value op_gemm(const Napi::CallbackInfo& info) {
  Args a{info, "opGemm"};
  bool ref = is_ref(a, 0);
  int M = dim(a, 4, "M"), N = dim(a, 5, "N"), K = dim(a, 6, "K");
  bool ta = a.boolean(7, "transA"), tb = a.boolean(8, "transB"), acc = a.boolean(9, "accumulate");
  float* C = f32(a, 1, "C", (int64_t)M * N);
  const float* A = f32(a, 2, "A", (int64_t)M * K);
  const float* B = f32(a, 3, "B", (int64_t)N * K);
  // A is [M,K] (or [K,M] when transA); B is [N,K] (or [K,N] when transB)
  int64_t a_rs = ta ? 1 : K, a_cs = ta ? M : 1, b_rs = tb ? 1 : K, b_cs = tb ? N : 1;
  (ref ? gemm_ref : gemm)(C, N, A, a_rs, a_cs, B, b_rs, b_cs, M, N, K, acc);
  return info.Env().Undefined();
}

Napi::Value op_linear_forward(const Napi::CallbackInfo& info) {
  Args a{info, "opLinearForward"};
  bool ref = is_ref(a, 0);
  int M = dim(a, 5, "M"), N = dim(a, 6, "N"), K = dim(a, 7, "K");
  float* y = f32(a, 1, "y", (int64_t)M * N);
  const float* x = f32(a, 2, "x", (int64_t)M * K);
  const float* W = f32(a, 3, "W", (int64_t)N * K);
  const float* b = f32_opt(a, 4, "b", N);
  if (ref) {
    linear_forward_ref(y, x, W, b, M, N, K);
  } else if (a.has(8)) {  // packed weight: 'f32' or 'bf16' panels, as inference keeps them
    std::string fmt = a.string(8, "packed");
    if (fmt != "f32" && fmt != "bf16") a.fail(8, "(packed) must be 'f32' or 'bf16'");
    PackedWeight P = pack_weight(W, N, K, fmt == "bf16");
    linear_forward_packed(y, x, P, b, M);
  } else {
    linear_forward(y, x, W, b, M, N, K);
  }
  return info.Env().Undefined();
}

Napi::Value op_linear_backward(const Napi::CallbackInfo& info) {
  Args a{info, "opLinearBackward"};
  bool ref = is_ref(a, 0);
  int M = dim(a, 7, "M"), N = dim(a, 8, "N"), K = dim(a, 9, "K");
  float* dx = f32_opt(a, 1, "dx", (int64_t)M * K);
  float* dW = f32_opt(a, 2, "dW", (int64_t)N * K);
  float* db = f32_opt(a, 3, "db", N);
  const float* dy = f32(a, 4, "dy", (int64_t)M * N);
  const float* x = f32(a, 5, "x", (int64_t)M * K);
  const float* W = f32(a, 6, "W", (int64_t)N * K);
  (ref ? linear_backward_ref : linear_backward)(dx, dW, db, dy, x, W, M, N, K);
  return info.Env().Undefined();
}

Napi::Value op_rmsnorm_forward(const Napi::CallbackInfo& info) {
  Args a{info, "opRmsnormForward"};
  bool ref = is_ref(a, 0);
  int N = dim(a, 5, "N"), C = dim(a, 6, "C");
  float eps = (float)a.number(7, "eps");
  float* out = f32(a, 1, "out", (int64_t)N * C);
  float* rstd = f32_opt(a, 2, "rstd", N);
  const float* x = f32(a, 3, "x", (int64_t)N * C);
  const float* w = f32(a, 4, "w", C);
  (ref ? rmsnorm_forward_ref : rmsnorm_forward)(out, rstd, x, w, N, C, eps);
  return info.Env().Undefined();
}

Napi::Value op_rmsnorm_backward(const Napi::CallbackInfo& info) {
  Args a{info, "opRmsnormBackward"};
  bool ref = is_ref(a, 0);
  int N = dim(a, 7, "N"), C = dim(a, 8, "C");
  float eps = (float)a.number(9, "eps");
  float* dx = f32_opt(a, 1, "dx", (int64_t)N * C);
  float* dw = f32_opt(a, 2, "dw", C);
  const float* dout = f32(a, 3, "dout", (int64_t)N * C);
  const float* x = f32(a, 4, "x", (int64_t)N * C);
  const float* w = f32(a, 5, "w", C);
  if (ref) {
    rmsnorm_backward_ref(dx, dw, dout, x, w, N, C, eps);
  } else {
    const float* rstd = f32(a, 6, "rstd", N);
    rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C);
  }
  return info.Env().Undefined();
}

RopeScaling scaling_arg(const Args& a, size_t i) {
  RopeScaling s;
  if (!a.has(i)) return s;
  Napi::Object o = a.object(i, "scaling");
  auto num = [&](const char* k) {
    Napi::Value v = o.Get(k);
    if (!v.IsNumber()) a.fail(i, std::string("(scaling.") + k + ") must be a number");
    return v.As<Napi::Number>().DoubleValue();
  };
  s.llama3 = true;
  s.factor = num("factor");
  s.low_freq_factor = num("lowFreqFactor");
  s.high_freq_factor = num("highFreqFactor");
  s.original_max_position = num("originalMaxPosition");
  return s;
}

Napi::Value op_rope_forward(const Napi::CallbackInfo& info) {
  Args a{info, "opRopeForward"};
  bool ref = is_ref(a, 0);
  int T = dim(a, 4, "T"), H = dim(a, 5, "H"), D = dim(a, 6, "D");
  if (D % 2) a.fail(6, "(D) must be even");
  double theta = a.number(7, "theta");
  RopeScaling sc = scaling_arg(a, 8);
  float* out = f32(a, 1, "out", (int64_t)T * H * D);
  const float* x = f32(a, 2, "x", (int64_t)T * H * D);
  auto pos = a.typed<int32_t>(3, "pos");
  if ((int)pos.ElementLength() != T) a.fail(3, "(pos) must have T entries");
  if (ref) {
    std::vector<double> f(D / 2);
    rope_inv_freq_ref(f.data(), D, theta, sc);
    rope_forward_ref(out, x, pos.Data(), f.data(), T, H, D);
  } else {
    std::vector<double> f(D / 2);
    rope_inv_freq_ref(f.data(), D, theta, sc);
    std::memmove(out, x, sizeof(float) * T * H * D);
    rope_forward(out, pos.Data(), f.data(), T, H, D);
  }
  return info.Env().Undefined();
}

Napi::Value op_rope_backward(const Napi::CallbackInfo& info) {
  Args a{info, "opRopeBackward"};
  int T = dim(a, 2, "T"), H = dim(a, 3, "H"), D = dim(a, 4, "D");
  if (D % 2) a.fail(4, "(D) must be even");
  double theta = a.number(5, "theta");
  RopeScaling sc = scaling_arg(a, 6);
  float* dx = f32(a, 0, "dx", (int64_t)T * H * D);
  auto pos = a.typed<int32_t>(1, "pos");
  if ((int)pos.ElementLength() != T) a.fail(1, "(pos) must have T entries");
  std::vector<double> f(D / 2);
  rope_inv_freq_ref(f.data(), D, theta, sc);
  rope_backward(dx, pos.Data(), f.data(), T, H, D);
  return info.Env().Undefined();
}

Napi::Value op_swiglu_forward(const Napi::CallbackInfo& info) {
  Args a{info, "opSwigluForward"};
  bool ref = is_ref(a, 0);
  int64_t n = a.typed<float>(2, "gate").ElementLength();
  float* out = f32(a, 1, "out", n);
  const float* g = f32(a, 2, "gate", n);
  const float* u = f32(a, 3, "up", n);
  (ref ? swiglu_forward_ref : swiglu_forward)(out, g, u, n);
  return info.Env().Undefined();
}

Napi::Value op_swiglu_backward(const Napi::CallbackInfo& info) {
  Args a{info, "opSwigluBackward"};
  bool ref = is_ref(a, 0);
  int64_t n = a.typed<float>(3, "dout").ElementLength();
  float* dg = f32_opt(a, 1, "dgate", n);
  float* du = f32_opt(a, 2, "dup", n);
  const float* dout = f32(a, 3, "dout", n);
  const float* g = f32(a, 4, "gate", n);
  const float* u = f32(a, 5, "up", n);
  (ref ? swiglu_backward_ref : swiglu_backward)(dg, du, dout, g, u, n);
  return info.Env().Undefined();
}

Napi::Value op_embedding_forward(const Napi::CallbackInfo& info) {
  Args a{info, "opEmbeddingForward"};
  int T = dim(a, 3, "T"), C = dim(a, 4, "C");
  auto ids = a.typed<int32_t>(1, "ids");
  if ((int)ids.ElementLength() != T) a.fail(1, "(ids) must have T entries");
  auto table = a.typed<float>(2, "table");
  int64_t V = (int64_t)table.ElementLength() / C;
  if (V * C != (int64_t)table.ElementLength()) a.fail(2, "(table) length must be a multiple of C");
  for (int t = 0; t < T; ++t)
    if (ids[t] < 0 || ids[t] >= V) a.fail(1, "(ids) entries must be in [0, V)");
  embedding_forward(f32(a, 0, "out", (int64_t)T * C), ids.Data(), table.Data(), T, C);
  return info.Env().Undefined();
}

Napi::Value op_embedding_backward(const Napi::CallbackInfo& info) {
  Args a{info, "opEmbeddingBackward"};
  int T = dim(a, 3, "T"), C = dim(a, 4, "C");
  auto table = a.typed<float>(0, "dtable");
  int64_t V = (int64_t)table.ElementLength() / C;
  auto ids = a.typed<int32_t>(2, "ids");
  if ((int)ids.ElementLength() != T) a.fail(2, "(ids) must have T entries");
  for (int t = 0; t < T; ++t)
    if (ids[t] < 0 || ids[t] >= V) a.fail(2, "(ids) entries must be in [0, V)");
  embedding_backward(table.Data(), f32(a, 1, "dout", (int64_t)T * C), ids.Data(), T, C);
  return info.Env().Undefined();
}

AttnShape shape_arg(const Args& a, size_t i) {
  Napi::Object o = a.object(i, "shape");
  auto get = [&](const char* k, int lo) {
    Napi::Value v = o.Get(k);
    if (!v.IsNumber()) a.fail(i, std::string("(shape.") + k + ") must be a number");
    int x = v.As<Napi::Number>().Int32Value();
    if (x < lo) a.fail(i, std::string("(shape.") + k + ") is out of range");
    return x;
  };
  AttnShape s;
  s.T = get("T", 1);
  s.S = get("S", 1);
  s.H = get("H", 1);
  s.Hkv = get("Hkv", 1);
  s.D = get("D", 1);
  s.q_pos0 = get("qPos0", 0);
  if (s.H % s.Hkv) a.fail(i, "(shape.H) must be a multiple of Hkv");
  if (s.q_pos0 + s.T > s.S) a.fail(i, "(shape) needs qPos0 + T <= S");
  Napi::Value sc = o.Get("scale");
  s.scale = sc.IsNumber() ? sc.As<Napi::Number>().FloatValue() : 1.0f / std::sqrt((float)s.D);
  return s;
}

Napi::Value op_attention_forward(const Napi::CallbackInfo& info) {
  Args a{info, "opAttentionForward"};
  std::string variant = a.string(0, "variant");
  AttnShape s = shape_arg(a, 6);
  int64_t qn = (int64_t)s.T * s.H * s.D, kn = (int64_t)s.S * s.Hkv * s.D;
  float* out = f32(a, 1, "out", qn);
  float* lse = f32_opt(a, 2, "lse", (int64_t)s.T * s.H);
  const float* q = f32(a, 3, "q", qn);
  const float* k = f32(a, 4, "k", kn);
  const float* v = f32(a, 5, "v", kn);
  if (variant == "ref")
    attention_forward_ref(out, lse, q, k, v, s);
  else if (variant == "flash")
    attention_forward(out, lse, q, k, v, s);
  else if (variant == "decode")
    attention_decode(out, lse, q, k, v, s);
  else
    a.fail(0, "(variant) must be 'ref', 'flash' or 'decode'");
  return info.Env().Undefined();
}

Napi::Value op_attention_backward(const Napi::CallbackInfo& info) {
  Args a{info, "opAttentionBackward"};
  bool ref = is_ref(a, 0);
  AttnShape s = shape_arg(a, 10);
  int64_t qn = (int64_t)s.T * s.H * s.D, kn = (int64_t)s.S * s.Hkv * s.D;
  float* dq = f32(a, 1, "dq", qn);
  float* dk = f32(a, 2, "dk", kn);
  float* dv = f32(a, 3, "dv", kn);
  const float* dout = f32(a, 4, "dout", qn);
  const float* q = f32(a, 5, "q", qn);
  const float* k = f32(a, 6, "k", kn);
  const float* v = f32(a, 7, "v", kn);
  if (ref) {
    attention_backward_ref(dq, dk, dv, dout, q, k, v, s);
  } else {
    const float* out = f32(a, 8, "out", qn);
    const float* lse = f32(a, 9, "lse", (int64_t)s.T * s.H);
    attention_backward(dq, dk, dv, dout, q, k, v, out, lse, s);
  }
  return info.Env().Undefined();
}

// One decoder layer over one sequence (positions 0..T-1): forward, and backward of sum(y * dy).
Napi::Value op_decoder_layer(const Napi::CallbackInfo& info) {
  Args a{info, "opDecoderLayer"};
  Napi::Object o = a.object(0, "dims");
  auto geti = [&](const char* k) {
    Napi::Value v = o.Get(k);
    if (!v.IsNumber() || v.As<Napi::Number>().Int32Value() < 0)
      a.fail(0, std::string("(dims.") + k + ") must be a non-negative number");
    return v.As<Napi::Number>().Int32Value();
  };
  LayerDims d;
  d.C = geti("C");
  d.H = geti("H");
  d.Hkv = geti("Hkv");
  d.D = geti("D");
  d.F = geti("F");
  d.eps = o.Get("eps").As<Napi::Number>().FloatValue();
  d.qk_norm = o.Get("qkNorm").ToBoolean();
  double theta = o.Get("theta").As<Napi::Number>().DoubleValue();
  if (d.C < 1 || d.H < 1 || d.Hkv < 1 || d.D < 2 || d.F < 1 || d.H % d.Hkv || d.D % 2)
    a.fail(0, "(dims) are inconsistent");
  Napi::Object wo = a.object(1, "weights");
  auto wt = [&](const char* k, int64_t n, bool required) -> float* {
    Napi::Value v = wo.Get(k);
    if (v.IsUndefined() || v.IsNull()) {
      if (required) a.fail(1, std::string("(weights.") + k + ") is missing");
      return nullptr;
    }
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
        (int64_t)v.As<Napi::Float32Array>().ElementLength() != n)
      a.fail(1, std::string("(weights.") + k + ") must be a Float32Array of " + std::to_string(n));
    return v.As<Napi::Float32Array>().Data();
  };
  const int64_t C = d.C, qd = (int64_t)d.H * d.D, kd = (int64_t)d.Hkv * d.D, F = d.F;
  LayerWeights w;
  auto lin = [&](const char* wn, const char* bn, int64_t N, int64_t K) {
    Linear l;
    l.w = wt(wn, N * K, true);
    l.bias = wt(bn, N, false);
    l.N = (int)N;
    l.K = (int)K;
    return l;
  };
  w.input_norm = wt("input_norm", C, true);
  w.post_attention_norm = wt("post_attention_norm", C, true);
  w.q = lin("q_w", "q_b", qd, C);
  w.k = lin("k_w", "k_b", kd, C);
  w.v = lin("v_w", "v_b", kd, C);
  w.o = lin("o_w", "o_b", C, qd);
  w.gate = lin("gate_w", "gate_b", F, C);
  w.up = lin("up_w", "up_b", F, C);
  w.down = lin("down_w", "down_b", C, F);
  if (d.qk_norm) {
    w.q_norm = wt("q_norm", d.D, true);
    w.k_norm = wt("k_norm", d.D, true);
  }
  auto xa = a.typed<float>(2, "x");
  int T = (int)(xa.ElementLength() / C);
  if (T < 1 || (int64_t)T * C != (int64_t)xa.ElementLength()) a.fail(2, "(x) must be T x C");
  auto pos = a.typed<int32_t>(3, "pos");
  if ((int)pos.ElementLength() != T) a.fail(3, "(pos) must have T entries");
  const float* dy = f32_opt(a, 4, "dy", (int64_t)T * C);
  std::vector<double> inv_freq(d.D / 2);
  rope_inv_freq_ref(inv_freq.data(), d.D, theta, RopeScaling{});
  LayerActs acts;
  acts.resize(T, d, true);
  std::vector<AttnSeq> seqs(1);
  seqs[0].t = T;
  Napi::Env env = info.Env();
  auto y = Napi::Float32Array::New(env, (size_t)T * C);
  std::memcpy(y.Data(), xa.Data(), sizeof(float) * T * C);
  decoder_layer_forward(y.Data(), w, d, pos.Data(), T, seqs, acts, inv_freq.data());
  Napi::Object res = Napi::Object::New(env);
  res.Set("y", y);
  if (dy) {
    auto dx = Napi::Float32Array::New(env, (size_t)T * C);
    std::memcpy(dx.Data(), dy, sizeof(float) * T * C);
    Napi::Object grads = Napi::Object::New(env);
    auto grad = [&](const char* name, int64_t n) -> float* {
      auto g = Napi::Float32Array::New(env, n);
      std::memset(g.Data(), 0, sizeof(float) * n);
      grads.Set(name, g);
      return g.Data();
    };
    LayerGrads g;
    g.input_norm = grad("input_norm", C);
    g.post_attention_norm = grad("post_attention_norm", C);
    g.q_w = grad("q_w", qd * C);
    g.k_w = grad("k_w", kd * C);
    g.v_w = grad("v_w", kd * C);
    g.o_w = grad("o_w", C * qd);
    if (w.q.bias) g.q_b = grad("q_b", qd);
    if (w.k.bias) g.k_b = grad("k_b", kd);
    if (w.v.bias) g.v_b = grad("v_b", kd);
    g.gate_w = grad("gate_w", F * C);
    g.up_w = grad("up_w", F * C);
    g.down_w = grad("down_w", C * F);
    if (d.qk_norm) {
      g.q_norm = grad("q_norm", d.D);
      g.k_norm = grad("k_norm", d.D);
    }
    decoder_layer_backward(dx.Data(), w, d, pos.Data(), T, seqs, acts, inv_freq.data(), g);
    res.Set("dx", dx);
    res.Set("grads", grads);
  }
  return res;
}

// opFmaPeak(iterations, threads) -> GFLOP/s of back-to-back independent AVX2 FMAs on `threads` threads
// (benchmark: the measured fp32 FMA peak next to the clock-based estimate).
Napi::Value op_fma_peak(const Napi::CallbackInfo& info) {
  Args a{info, "opFmaPeak"};
  int64_t iters = a.integer(0, "iterations", 1, (int64_t)1 << 40);
  int threads = (int)a.integer(1, "threads", 1, 1024);
  if (detected_simd_level() != SimdLevel::AVX2) throw Error("ERR_INVALID_ARG", "opFmaPeak: this CPU has no AVX2/FMA");
  auto t0 = std::chrono::steady_clock::now();
  std::vector<double> flops(threads, 0.0);
  parallel_for(threads, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) flops[i] = fma_peak_probe_avx2(iters);
  });
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double total = 0;
  for (double f : flops) total += f;
  return Napi::Number::New(info.Env(), total / secs / 1e9);
}

// opGemmPackedTime(M, N, K, reps, bf16?) -> median seconds of C[M,N] = A[M,K] W^T with W packed once beforehand,
// the way inference runs every linear layer (benchmark: decode GEMV and prefill shapes).
Napi::Value op_gemm_packed_time(const Napi::CallbackInfo& info) {
  Args a{info, "opGemmPackedTime"};
  int M = dim(a, 0, "M"), N = dim(a, 1, "N"), K = dim(a, 2, "K");
  int reps = (int)a.integer(3, "reps", 1, 100000);
  bool bf16 = a.has(4) && a.boolean(4, "bf16");
  std::vector<float> A((size_t)M * K), W((size_t)N * K), C((size_t)M * N);
  for (size_t i = 0; i < A.size(); ++i) A[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  for (size_t i = 0; i < W.size(); ++i) W[i] = (float)((i * 40503u) % 1000) / 1000.0f - 0.5f;
  PackedWeight P = pack_weight(W.data(), N, K, bf16);
  gemm_packed(C.data(), N, A.data(), K, P, M, false);
  std::vector<double> t(reps);
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    gemm_packed(C.data(), N, A.data(), K, P, M, false);
    t[r] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::sort(t.begin(), t.end());
  return Napi::Number::New(info.Env(), t[reps / 2]);
}

}  // namespace

RECODE_EXPORT("opGemmPackedTime", op_gemm_packed_time);
RECODE_EXPORT("opFmaPeak", op_fma_peak);
RECODE_EXPORT("opGemm", op_gemm);
RECODE_EXPORT("opLinearForward", op_linear_forward);
RECODE_EXPORT("opLinearBackward", op_linear_backward);
RECODE_EXPORT("opRmsnormForward", op_rmsnorm_forward);
RECODE_EXPORT("opRmsnormBackward", op_rmsnorm_backward);
RECODE_EXPORT("opRopeForward", op_rope_forward);
RECODE_EXPORT("opRopeBackward", op_rope_backward);
RECODE_EXPORT("opSwigluForward", op_swiglu_forward);
RECODE_EXPORT("opSwigluBackward", op_swiglu_backward);
RECODE_EXPORT("opEmbeddingForward", op_embedding_forward);
RECODE_EXPORT("opEmbeddingBackward", op_embedding_backward);
RECODE_EXPORT("opAttentionForward", op_attention_forward);
RECODE_EXPORT("opAttentionBackward", op_attention_backward);
RECODE_EXPORT("opDecoderLayer", op_decoder_layer);

}  // namespace recode::ops
