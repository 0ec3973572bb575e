// JavaScript access to the transformer kernels (cuda/gemm.cu, attention.cu, norm.cu, pointwise.cu) for tests and
// benchmarks: cudaOps<Op>(device, options) on 'emulated' (SIMT emulation) or 'cuda' (librecode_cuda.so).
// Each call copies its host inputs to device memory, runs the op through the C ABI of cuda/recode_cuda.h and
// copies the outputs back. Options name every tensor and size; dtype 'f32' takes Float32Array tensors and
// 'bf16' takes Uint16Array tensors holding bf16 bits (statistics such as lse/rstd and weight gradients are
// always Float32Array; token ids and positions Int32Array). Every argument is checked before any device work:
// bad input throws ERR_INVALID_ARG naming the option, never reaches a kernel.
// The model code calls the C ABI directly with resident device tensors; this layer is for checking the kernels.
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/numeric.h"

#include "device/kernels.h"
#include "node/device_arg.h"
#include "recode_cuda.h"

namespace recode {
namespace {

enum class ElemType { F32, BF16, I32 };
constexpr int64_t kMaxDim = 1 << 24;
constexpr size_t kMaxElements = (size_t)1 << 31;

const char* elem_type_name(ElemType t) {
  return t == ElemType::F32 ? "Float32Array" : t == ElemType::BF16 ? "Uint16Array (bf16 bits)" : "Int32Array";
}

// One call's context: the options object, the device's memory functions, and the device buffers it owns.
class OpCall {
 public:
  OpCall(const Napi::CallbackInfo& info, const char* fn) : info_(info), fn_(fn), args_{info, fn} {
    device_ = parse_device(args_, 0);
    if (device_ == Device::CPU)
      args_.fail(0, "(device) must be 'emulated' or 'cuda' (the CPU kernels live in the model code)");
    opt_ = args_.object(1, "options");
    kern_ = Kernels(device_);
    set_misalign();
  }
  ~OpCall() {
    char err[256];
    for (void* p : owned_) kern_.device_free(p, err, sizeof err);
  }
  OpCall(const OpCall&) = delete;
  OpCall& operator=(const OpCall&) = delete;

  Device device() const { return device_; }
  Napi::Env env() const { return info_.Env(); }

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw Error("ERR_INVALID_ARG", std::string(fn_) + ": (options." + field + ") " + what);
  }
  bool has(const char* name) const {
    if (!opt_.Has(name)) return false;
    Napi::Value v = opt_.Get(name);
    return !v.IsUndefined() && !v.IsNull();
  }
  int64_t integer(const char* name, int64_t lo, int64_t hi) const {
    if (!has(name)) fail(name, "is missing");
    Napi::Value v = opt_.Get(name);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!std::isfinite(d) || d != std::floor(d) || d < (double)lo || d > (double)hi)
      fail(name, "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return (int64_t)d;
  }
  int64_t integer_or(const char* name, int64_t lo, int64_t hi, int64_t fallback) const {
    return has(name) ? integer(name, lo, hi) : fallback;
  }
  double number_or(const char* name, double fallback) const {
    if (!has(name)) return fallback;
    Napi::Value v = opt_.Get(name);
    if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue())) fail(name, "must be a finite number");
    return v.As<Napi::Number>().DoubleValue();
  }
  bool flag(const char* name, bool fallback) const {
    if (!has(name)) return fallback;
    Napi::Value v = opt_.Get(name);
    if (!v.IsBoolean()) fail(name, "must be a boolean");
    return v.As<Napi::Boolean>().Value();
  }
  // dtype option: 'f32' (default) or 'bf16'.
  int dtype(const char* name = "dtype") const {
    if (!has(name)) return RECODE_F32;
    Napi::Value v = opt_.Get(name);
    std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
    if (s == "f32") return RECODE_F32;
    if (s == "bf16") return RECODE_BF16;
    fail(name, "must be 'f32' or 'bf16'");
  }
  static ElemType elem_of(int dtype) { return dtype == RECODE_BF16 ? ElemType::BF16 : ElemType::F32; }
  static size_t elem_bytes(ElemType t) { return t == ElemType::BF16 ? 2 : 4; }

  // The typed array option `name` of type `t` with exactly `n` elements.
  Napi::TypedArray array(const char* name, ElemType t, size_t n) const {
    if (!has(name)) fail(name, "is missing");
    Napi::Value v = opt_.Get(name);
    napi_typedarray_type want = t == ElemType::F32    ? napi_float32_array
                                : t == ElemType::BF16 ? napi_uint16_array
                                                      : napi_int32_array;
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != want)
      fail(name, std::string("must be a ") + elem_type_name(t));
    Napi::TypedArray a = v.As<Napi::TypedArray>();
    if (a.ElementLength() != n)
      fail(name, "must have " + std::to_string(n) + " elements, got " + std::to_string(a.ElementLength()));
    return a;
  }
  // Element count of the typed array option `name` of type `t` (checked), for ops sized by their input.
  size_t length(const char* name, ElemType t) const {
    if (!has(name)) fail(name, "is missing");
    Napi::Value v = opt_.Get(name);
    if (!v.IsTypedArray()) fail(name, std::string("must be a ") + elem_type_name(t));
    size_t n = v.As<Napi::TypedArray>().ElementLength();
    array(name, t, n);
    if (n > kMaxElements) fail(name, "has more than 2^31 elements");
    return n;
  }
  static void* data(Napi::TypedArray a) { return static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset(); }

  void* alloc(size_t bytes) {
    void* p = nullptr;
    char err[512] = {0};
    check_kernel_status(kern_.device_alloc(bytes + 16, &p, err, sizeof err), "device_alloc", err);
    owned_.push_back(p);
    // options.misalign: tensors start 4 bytes into their allocation, as sub-views of a larger buffer may,
    // so the kernels' scalar (non-vector) load paths get exercised.
    return misalign_ ? static_cast<uint8_t*>(p) + 4 : p;
  }
  void set_misalign() { misalign_ = flag("misalign", false); }
  // Device copy of option `name` (checked as above).
  void* input(const char* name, ElemType t, size_t n) {
    Napi::TypedArray a = array(name, t, n);
    void* p = alloc(n * elem_bytes(t));
    char err[512] = {0};
    check_kernel_status(kern_.copy_to_device(p, data(a), n * elem_bytes(t), err, sizeof err), "copy_to_device", err);
    return p;
  }
  // Device buffer for an output: the initial values of option `name` when given (for accumulating ops),
  // else zeros (zero = true: buffers the kernel always adds into) or poison (all bits set: NaN in fp32 and
  // bf16), so an element a kernel fails to write shows up as NaN in the tests.
  void* output(const char* name, ElemType t, size_t n, bool zero = false) {
    if (name && has(name)) return input(name, t, n);
    void* p = alloc(n * elem_bytes(t));
    char err[512] = {0};
    check_kernel_status(kern_.device_memset(p, zero ? 0 : 0xff, n * elem_bytes(t), nullptr, err, sizeof err),
                        "device_memset", err);
    return p;
  }
  // Host typed array holding a device buffer's contents.
  Napi::Value fetch(const void* p, ElemType t, size_t n) {
    Napi::Env e = env();
    Napi::TypedArray out;
    void* dst;
    if (t == ElemType::F32) {
      auto a = Napi::Float32Array::New(e, n);
      dst = a.Data();
      out = a;
    } else if (t == ElemType::BF16) {
      auto a = Napi::Uint16Array::New(e, n);
      dst = a.Data();
      out = a;
    } else {
      auto a = Napi::Int32Array::New(e, n);
      dst = a.Data();
      out = a;
    }
    char err[512] = {0};
    check_kernel_status(kern_.copy_to_host(dst, p, n * elem_bytes(t), err, sizeof err), "copy_to_host", err);
    return out;
  }
  const Kernels& kernels() const { return kern_; }

 private:
  const Napi::CallbackInfo& info_;
  const char* fn_;
  Args args_;
  Device device_;
  Napi::Object opt_;
  Kernels kern_;
  std::vector<void*> owned_;
  bool misalign_ = false;
};

size_t checked_product(OpCall& c, const char* what, std::initializer_list<int64_t> dims) {
  size_t n = 1;
  for (int64_t d : dims) {
    n *= (size_t)d;
    if (n > kMaxElements) c.fail(what, "describes a tensor larger than 2^31 elements");
  }
  return n;
}

#define RUN_KERNEL(c, name, ...)                                           \
  do {                                                                     \
    char err_[1024] = {0};                                                 \
    auto fn_ = (c).kernels().name;                                         \
    check_kernel_status(fn_(__VA_ARGS__, err_, sizeof err_), #name, err_); \
  } while (0)

// ---- GEMM ---------------------------------------------------------------------------------------------------

// cudaOpsGemm(device, {M, N, K, dtype, outDtype, a [M*K], b [N*K], bias? f32 [N], out? (initial C: accumulate)})
Napi::Value gemm(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsGemm");
  int M = (int)c.integer("M", 0, kMaxDim), N = (int)c.integer("N", 0, kMaxDim), K = (int)c.integer("K", 0, kMaxDim);
  int dt = c.dtype(), odt = c.dtype("outDtype");
  auto in = OpCall::elem_of(dt), out_t = OpCall::elem_of(odt);
  size_t nA = checked_product(c, "M", {M, K}), nB = checked_product(c, "N", {N, K}),
         nC = checked_product(c, "M", {M, N});
  void* A = c.input("a", in, nA);
  void* B = c.input("b", in, nB);
  float* bias = c.has("bias") ? (float*)c.input("bias", ElemType::F32, N) : nullptr;
  bool acc = c.has("out");
  void* C = c.output("out", out_t, nC);
  RUN_KERNEL(c, gemm_forward, M, N, K, A, B, bias, C, dt, odt, acc ? 1 : 0, nullptr);
  return c.fetch(C, out_t, nC);
}

// cudaOpsGemmBackwardInput(device, {M, N, K, dtype, outDtype, dC [M*N], b [N*K], out? [M*K]}) -> dA
Napi::Value gemm_backward_input(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsGemmBackwardInput");
  int M = (int)c.integer("M", 0, kMaxDim), N = (int)c.integer("N", 0, kMaxDim), K = (int)c.integer("K", 0, kMaxDim);
  int dt = c.dtype(), odt = c.dtype("outDtype");
  auto in = OpCall::elem_of(dt), out_t = OpCall::elem_of(odt);
  size_t nC = checked_product(c, "M", {M, N}), nB = checked_product(c, "N", {N, K}),
         nA = checked_product(c, "M", {M, K});
  void* dC = c.input("dC", in, nC);
  void* B = c.input("b", in, nB);
  bool acc = c.has("out");
  void* dA = c.output("out", out_t, nA);
  RUN_KERNEL(c, gemm_backward_input, M, N, K, dC, B, dA, dt, odt, acc ? 1 : 0, nullptr);
  return c.fetch(dA, out_t, nA);
}

// cudaOpsGemmBackwardWeight(device, {M, N, K, dtype, outDtype, dC [M*N], a [M*K], out? [N*K], dbias? f32 [N]
// (initial values; given => computed)}) -> {dB, dbias}
Napi::Value gemm_backward_weight(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsGemmBackwardWeight");
  int M = (int)c.integer("M", 0, kMaxDim), N = (int)c.integer("N", 0, kMaxDim), K = (int)c.integer("K", 0, kMaxDim);
  int dt = c.dtype(), odt = c.dtype("outDtype");
  auto in = OpCall::elem_of(dt), out_t = OpCall::elem_of(odt);
  size_t nC = checked_product(c, "M", {M, N}), nA = checked_product(c, "M", {M, K}),
         nB = checked_product(c, "N", {N, K});
  void* dC = c.input("dC", in, nC);
  void* A = c.input("a", in, nA);
  bool acc = c.has("out");
  void* dB = c.output("out", out_t, nB);
  float* dbias = c.has("dbias") ? (float*)c.input("dbias", ElemType::F32, N) : nullptr;
  RUN_KERNEL(c, gemm_backward_weight, M, N, K, dC, A, dB, dbias, dt, odt, acc ? 1 : 0, nullptr);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("dB", c.fetch(dB, out_t, nB));
  if (dbias) o.Set("dbias", c.fetch(dbias, ElemType::F32, N));
  return o;
}

// ---- attention ------------------------------------------------------------------------------------------------

struct AttnShape {
  int B, T, Hq, Hkv, D;
  size_t nq, nk, nl;
};

AttnShape attn_shape(OpCall& c) {
  AttnShape s;
  s.B = (int)c.integer("B", 1, 65535);
  s.T = (int)c.integer("T", 1, 1 << 20);
  s.Hq = (int)c.integer("Hq", 1, 1024);
  s.Hkv = (int)c.integer("Hkv", 1, 1024);
  s.D = (int)c.integer("D", 1, 1024);
  if (s.D != 16 && s.D != 32 && s.D != 64 && s.D != 128) c.fail("D", "must be 16, 32, 64 or 128");
  if (s.Hq % s.Hkv) c.fail("Hq", "must be a multiple of Hkv");
  s.nq = checked_product(c, "T", {s.B, s.T, s.Hq, s.D});
  s.nk = checked_product(c, "T", {s.B, s.T, s.Hkv, s.D});
  s.nl = checked_product(c, "T", {s.B, s.Hq, s.T});
  return s;
}

// cudaOpsAttentionForward(device, {B, T, Hq, Hkv, D, dtype, q, k, v, scale? (1/sqrt(D)), causal? (true)})
// -> {o, lse}
Napi::Value attention_forward(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsAttentionForward");
  AttnShape s = attn_shape(c);
  int dt = c.dtype();
  auto et = OpCall::elem_of(dt);
  float scale = (float)c.number_or("scale", 1.0 / std::sqrt((double)s.D));
  bool causal = c.flag("causal", true);
  void* q = c.input("q", et, s.nq);
  void* k = c.input("k", et, s.nk);
  void* v = c.input("v", et, s.nk);
  void* o = c.output(nullptr, et, s.nq);
  float* lse = (float*)c.output(nullptr, ElemType::F32, s.nl);
  RUN_KERNEL(c, attention_forward, s.B, s.T, s.Hq, s.Hkv, s.D, q, k, v, o, lse, scale, causal ? 1 : 0, dt, nullptr);
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("o", c.fetch(o, et, s.nq));
  r.Set("lse", c.fetch(lse, ElemType::F32, s.nl));
  return r;
}

// cudaOpsAttentionBackward(device, {B, T, Hq, Hkv, D, dtype, q, k, v, o, lse, dout, scale?, causal?})
// -> {dq, dk, dv}
Napi::Value attention_backward(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsAttentionBackward");
  AttnShape s = attn_shape(c);
  int dt = c.dtype();
  auto et = OpCall::elem_of(dt);
  float scale = (float)c.number_or("scale", 1.0 / std::sqrt((double)s.D));
  bool causal = c.flag("causal", true);
  void* q = c.input("q", et, s.nq);
  void* k = c.input("k", et, s.nk);
  void* v = c.input("v", et, s.nk);
  void* o = c.input("o", et, s.nq);
  float* lse = (float*)c.input("lse", ElemType::F32, s.nl);
  void* dout = c.input("dout", et, s.nq);
  void* dq = c.output(nullptr, et, s.nq);
  void* dk = c.output(nullptr, et, s.nk);
  void* dv = c.output(nullptr, et, s.nk);
  float* scratch = (float*)c.output(nullptr, ElemType::F32, s.nl);
  RUN_KERNEL(c, attention_backward, s.B, s.T, s.Hq, s.Hkv, s.D, q, k, v, o, lse, dout, dq, dk, dv, scratch, scale,
             causal ? 1 : 0, dt, nullptr);
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("dq", c.fetch(dq, et, s.nq));
  r.Set("dk", c.fetch(dk, et, s.nk));
  r.Set("dv", c.fetch(dv, et, s.nk));
  return r;
}

// cudaOpsKvCacheWrite(device, {B, T, Hkv, D, capacity, dtype, k, v [B*T*Hkv*D], start Int32Array [B],
// kCache?, vCache? [B*Hkv*capacity*D] (initial contents)}) -> {kCache, vCache}
Napi::Value kv_cache_write(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsKvCacheWrite");
  int B = (int)c.integer("B", 1, 65535), T = (int)c.integer("T", 1, 1 << 20), Hkv = (int)c.integer("Hkv", 1, 1024);
  int D = (int)c.integer("D", 1, 1024), cap = (int)c.integer("capacity", 1, 1 << 24);
  int dt = c.dtype();
  auto et = OpCall::elem_of(dt);
  size_t nk = checked_product(c, "T", {B, T, Hkv, D}), nc = checked_product(c, "capacity", {B, Hkv, cap, D});
  Napi::TypedArray start_arr = c.array("start", ElemType::I32, B);
  const int32_t* st = static_cast<const int32_t*>(OpCall::data(start_arr));
  for (int b = 0; b < B; ++b)
    if (st[b] < 0 || (int64_t)st[b] + T > cap)
      c.fail("start", "entry " + std::to_string(b) + " puts tokens outside the cache capacity");
  void* k = c.input("k", et, nk);
  void* v = c.input("v", et, nk);
  int* start = (int*)c.input("start", ElemType::I32, B);
  void* kc = c.output("kCache", et, nc, true);
  void* vc = c.output("vCache", et, nc, true);
  RUN_KERNEL(c, kv_cache_write, B, T, Hkv, D, cap, k, v, start, kc, vc, dt, nullptr);
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("kCache", c.fetch(kc, et, nc));
  r.Set("vCache", c.fetch(vc, et, nc));
  return r;
}

// cudaOpsAttentionDecode(device, {B, Hq, Hkv, D, capacity, dtype, q [B*Hq*D], kCache, vCache, contextLens
// Int32Array [B] (1..capacity), scale?, numSplits? (default recode_decode_num_splits)}) -> o [B*Hq*D]
Napi::Value attention_decode(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsAttentionDecode");
  int B = (int)c.integer("B", 1, 65535), Hq = (int)c.integer("Hq", 1, 1024), Hkv = (int)c.integer("Hkv", 1, 1024);
  int D = (int)c.integer("D", 1, 1024), cap = (int)c.integer("capacity", 1, 1 << 24);
  if (D != 16 && D != 32 && D != 64 && D != 128) c.fail("D", "must be 16, 32, 64 or 128");
  if (Hq % Hkv || Hq / Hkv > 16) c.fail("Hq", "must be a multiple of Hkv, at most 16 times it");
  int dt = c.dtype();
  auto et = OpCall::elem_of(dt);
  float scale = (float)c.number_or("scale", 1.0 / std::sqrt((double)D));
  size_t nq = checked_product(c, "Hq", {B, Hq, D}), nc = checked_product(c, "capacity", {B, Hkv, cap, D});
  Napi::TypedArray lens_arr = c.array("contextLens", ElemType::I32, B);
  const int32_t* lens = static_cast<const int32_t*>(OpCall::data(lens_arr));
  int max_ctx = 0;
  for (int b = 0; b < B; ++b) {
    if (lens[b] < 1 || lens[b] > cap) c.fail("contextLens", "entry " + std::to_string(b) + " must be in 1..capacity");
    max_ctx = std::max(max_ctx, (int)lens[b]);
  }
  int splits = (int)c.integer_or("numSplits", 1, 1024, recode_decode_num_splits(B, Hkv, max_ctx));
  void* q = c.input("q", et, nq);
  void* kc = c.input("kCache", et, nc);
  void* vc = c.input("vCache", et, nc);
  int* ctx = (int*)c.input("contextLens", ElemType::I32, B);
  void* o = c.output(nullptr, et, nq);
  float* scratch = splits > 1 ? (float*)c.output(nullptr, ElemType::F32, (size_t)B * Hq * splits * (D + 2)) : nullptr;
  RUN_KERNEL(c, attention_decode, B, Hq, Hkv, D, cap, q, kc, vc, ctx, o, scale, splits, scratch, dt, nullptr);
  return c.fetch(o, et, nq);
}

// ---- norm -----------------------------------------------------------------------------------------------------

// cudaOpsRmsnormForward(device, {rows, dim, dtype, x, weight, eps}) -> {y, rstd}
Napi::Value rmsnorm_forward(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsRmsnormForward");
  int rows = (int)c.integer("rows", 1, 1 << 24), dim = (int)c.integer("dim", 1, 1 << 20);
  int dt = c.dtype();
  auto et = OpCall::elem_of(dt);
  double eps = c.number_or("eps", 1e-6);
  if (eps < 0) c.fail("eps", "must be >= 0");
  size_t n = checked_product(c, "rows", {rows, dim});
  void* x = c.input("x", et, n);
  void* w = c.input("weight", et, dim);
  void* y = c.output(nullptr, et, n);
  float* rstd = (float*)c.output(nullptr, ElemType::F32, rows);
  RUN_KERNEL(c, rmsnorm_forward, rows, dim, x, w, (float)eps, y, rstd, dt, nullptr);
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("y", c.fetch(y, et, n));
  r.Set("rstd", c.fetch(rstd, ElemType::F32, rows));
  return r;
}

// cudaOpsRmsnormBackward(device, {rows, dim, dtype, x, weight, rstd, dy, dx? (initial: accumulate), dweight?
// (initial f32), twoStage? (true: scratch partials)}) -> {dx, dweight}
Napi::Value rmsnorm_backward(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsRmsnormBackward");
  int rows = (int)c.integer("rows", 1, 1 << 24), dim = (int)c.integer("dim", 1, 1 << 20);
  int dt = c.dtype();
  auto et = OpCall::elem_of(dt);
  bool two_stage = c.flag("twoStage", true);
  size_t n = checked_product(c, "rows", {rows, dim});
  void* x = c.input("x", et, n);
  void* w = c.input("weight", et, dim);
  float* rstd = (float*)c.input("rstd", ElemType::F32, rows);
  void* dy = c.input("dy", et, n);
  bool acc = c.has("dx");
  void* dx = c.output("dx", et, n);
  float* dw = (float*)c.output("dweight", ElemType::F32, dim, true);
  float* scratch = two_stage ? (float*)c.output(nullptr, ElemType::F32, (size_t)RECODE_REDUCE_PARTS * dim) : nullptr;
  RUN_KERNEL(c, rmsnorm_backward, rows, dim, x, w, rstd, dy, dx, dw, scratch, acc ? 1 : 0, dt, nullptr);
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("dx", c.fetch(dx, et, n));
  r.Set("dweight", c.fetch(dw, ElemType::F32, dim));
  return r;
}

Napi::Value rope(const Napi::CallbackInfo& info, const char* fn, bool backward) {
  OpCall c(info, fn);
  int tokens = (int)c.integer("tokens", 1, 1 << 24), heads = (int)c.integer("heads", 1, 1024);
  int D = (int)c.integer("D", 2, 1024);
  if (D % 2) c.fail("D", "must be even");
  int dt = c.dtype();
  auto et = OpCall::elem_of(dt);
  size_t n = checked_product(c, "tokens", {tokens, heads, D});
  void* x = c.input("x", et, n);
  int* pos = (int*)c.input("positions", ElemType::I32, tokens);
  float* inv = (float*)c.input("invFreq", ElemType::F32, D / 2);
  bool in_place = c.flag("inPlace", false);
  void* y = in_place ? x : c.output(nullptr, et, n);
  if (backward)
    RUN_KERNEL(c, rope_backward, tokens, heads, D, x, y, pos, inv, dt, nullptr);
  else
    RUN_KERNEL(c, rope_forward, tokens, heads, D, x, y, pos, inv, dt, nullptr);
  return c.fetch(y, et, n);
}
// cudaOpsRopeForward / cudaOpsRopeBackward(device, {tokens, heads, D, dtype, x, positions Int32Array [tokens],
// invFreq Float32Array [D/2], inPlace?}) -> y (for the backward, x is dy and y is dx)
Napi::Value rope_forward(const Napi::CallbackInfo& info) { return rope(info, "cudaOpsRopeForward", false); }
Napi::Value rope_backward(const Napi::CallbackInfo& info) { return rope(info, "cudaOpsRopeBackward", true); }

// ---- pointwise ------------------------------------------------------------------------------------------------

// cudaOpsSwigluForward(device, {dtype, gate, up}) -> out
Napi::Value swiglu_forward(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsSwigluForward");
  int dt = c.dtype();
  auto et = OpCall::elem_of(dt);
  size_t n = c.length("gate", et);
  void* g = c.input("gate", et, n);
  void* u = c.input("up", et, n);
  void* o = c.output(nullptr, et, n);
  RUN_KERNEL(c, swiglu_forward, n, g, u, o, dt, nullptr);
  return c.fetch(o, et, n);
}

// cudaOpsSwigluBackward(device, {dtype, gate, up, dout}) -> {dgate, dup}
Napi::Value swiglu_backward(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsSwigluBackward");
  int dt = c.dtype();
  auto et = OpCall::elem_of(dt);
  size_t n = c.length("gate", et);
  void* g = c.input("gate", et, n);
  void* u = c.input("up", et, n);
  void* d = c.input("dout", et, n);
  void* dg = c.output(nullptr, et, n);
  void* du = c.output(nullptr, et, n);
  RUN_KERNEL(c, swiglu_backward, n, g, u, d, dg, du, dt, nullptr);
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("dgate", c.fetch(dg, et, n));
  r.Set("dup", c.fetch(du, et, n));
  return r;
}

// Token ids must lie in [0, vocab): checked here, since the kernels cannot report bad device contents.
void check_ids(OpCall& c, int vocab, size_t tokens) {
  Napi::TypedArray a = c.array("ids", ElemType::I32, tokens);
  const int32_t* ids = static_cast<const int32_t*>(OpCall::data(a));
  for (size_t t = 0; t < tokens; ++t)
    if (ids[t] < 0 || ids[t] >= vocab)
      c.fail("ids", "entry " + std::to_string(t) + " is " + std::to_string(ids[t]) + ", outside [0, vocab)");
}

// cudaOpsEmbeddingForward(device, {dim, vocab, dtype, ids Int32Array, table [vocab*dim]}) -> out [tokens*dim]
Napi::Value embedding_forward(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsEmbeddingForward");
  int dim = (int)c.integer("dim", 1, 1 << 20), vocab = (int)c.integer("vocab", 1, 1 << 24);
  int dt = c.dtype();
  auto et = OpCall::elem_of(dt);
  size_t tokens = c.length("ids", ElemType::I32);
  if (tokens > (1u << 22)) c.fail("ids", "has too many tokens");
  check_ids(c, vocab, tokens);
  size_t n = checked_product(c, "ids", {(int64_t)tokens, dim});
  void* ids = c.input("ids", ElemType::I32, tokens);
  void* table = c.input("table", et, checked_product(c, "vocab", {vocab, dim}));
  void* out = c.output(nullptr, et, n);
  RUN_KERNEL(c, embedding_forward, (int)tokens, dim, vocab, (const int*)ids, table, out, dt, nullptr);
  return c.fetch(out, et, n);
}

// cudaOpsEmbeddingBackward(device, {dim, vocab, dtype, ids, dout [tokens*dim], dtable? f32 (initial)}) -> dtable
Napi::Value embedding_backward(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsEmbeddingBackward");
  int dim = (int)c.integer("dim", 1, 1 << 20), vocab = (int)c.integer("vocab", 1, 1 << 24);
  int dt = c.dtype();
  auto et = OpCall::elem_of(dt);
  size_t tokens = c.length("ids", ElemType::I32);
  if (tokens > (1u << 22)) c.fail("ids", "has too many tokens");
  check_ids(c, vocab, tokens);
  size_t nt = checked_product(c, "vocab", {vocab, dim});
  void* ids = c.input("ids", ElemType::I32, tokens);
  void* dout = c.input("dout", et, checked_product(c, "ids", {(int64_t)tokens, dim}));
  float* dtable = (float*)c.output("dtable", ElemType::F32, nt, true);
  RUN_KERNEL(c, embedding_backward, (int)tokens, dim, vocab, (const int*)ids, dout, dtable, dt, nullptr);
  return c.fetch(dtable, ElemType::F32, nt);
}

// cudaOpsResidualAdd(device, {dtype, a, b}) -> a + b
Napi::Value residual_add(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsResidualAdd");
  int dt = c.dtype();
  auto et = OpCall::elem_of(dt);
  size_t n = c.length("a", et);
  void* a = c.input("a", et, n);
  void* b = c.input("b", et, n);
  void* o = c.output(nullptr, et, n);
  RUN_KERNEL(c, residual_add, n, a, b, o, dt, nullptr);
  return c.fetch(o, et, n);
}

// cudaOpsCast(device, {x: Float32Array -> bf16 bits as Uint16Array, or Uint16Array (bf16) -> Float32Array})
Napi::Value cast(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsCast");
  if (!c.has("x")) c.fail("x", "is missing");
  bool from_f32 = info[1].As<Napi::Object>().Get("x").IsTypedArray() &&
                  info[1].As<Napi::Object>().Get("x").As<Napi::TypedArray>().TypedArrayType() == napi_float32_array;
  ElemType src = from_f32 ? ElemType::F32 : ElemType::BF16, dst = from_f32 ? ElemType::BF16 : ElemType::F32;
  size_t n = c.length("x", src);
  void* x = c.input("x", src, n);
  void* y = c.output(nullptr, dst, n);
  if (from_f32)
    RUN_KERNEL(c, cast_f32_to_bf16, n, (const float*)x, y, nullptr);
  else
    RUN_KERNEL(c, cast_bf16_to_f32, n, x, (float*)y, nullptr);
  return c.fetch(y, dst, n);
}

// cudaOpsSumSquares(device, {g Float32Array, init? number}) -> init + sum(g^2) (fp32, deterministic)
Napi::Value sum_squares(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsSumSquares");
  size_t n = c.length("g", ElemType::F32);
  void* g = c.input("g", ElemType::F32, n);
  float* out = (float*)c.output(nullptr, ElemType::F32, 1);
  float init = (float)c.number_or("init", 0.0);
  char err[512] = {0};
  auto to_dev = c.kernels().copy_to_device;
  check_kernel_status(to_dev(out, &init, sizeof init, err, sizeof err), "copy_to_device", err);
  float* scratch = (float*)c.output(nullptr, ElemType::F32, RECODE_REDUCE_PARTS);
  RUN_KERNEL(c, sum_squares, n, (const float*)g, out, scratch, nullptr);
  Napi::Value r = c.fetch(out, ElemType::F32, 1);
  return Napi::Number::New(info.Env(), r.As<Napi::Float32Array>()[0]);
}

// cudaOpsAdamw(device, {param, grad, m, v (Float32Array, same length), lr, beta1, beta2, eps, weightDecay,
// step, gradScale?, bf16Copy?}) -> {param, m, v, paramBf16?}
Napi::Value adamw(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsAdamw");
  size_t n = c.length("param", ElemType::F32);
  double lr = c.number_or("lr", 1e-3), b1 = c.number_or("beta1", 0.9), b2 = c.number_or("beta2", 0.999);
  double eps = c.number_or("eps", 1e-8), wd = c.number_or("weightDecay", 0.0), gs = c.number_or("gradScale", 1.0);
  if (!(b1 >= 0 && b1 < 1)) c.fail("beta1", "must be in [0, 1)");
  if (!(b2 >= 0 && b2 < 1)) c.fail("beta2", "must be in [0, 1)");
  if (!(eps > 0)) c.fail("eps", "must be > 0");
  int step = (int)c.integer("step", 1, 1 << 30);
  bool copy = c.flag("bf16Copy", false);
  float* p = (float*)c.input("param", ElemType::F32, n);
  float* g = (float*)c.input("grad", ElemType::F32, n);
  float* m = (float*)c.input("m", ElemType::F32, n);
  float* v = (float*)c.input("v", ElemType::F32, n);
  void* pb = copy ? c.output(nullptr, ElemType::BF16, n) : nullptr;
  RUN_KERNEL(c, adamw_update, n, p, g, m, v, pb, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, step,
             (float)gs, nullptr);
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("param", c.fetch(p, ElemType::F32, n));
  r.Set("m", c.fetch(m, ElemType::F32, n));
  r.Set("v", c.fetch(v, ElemType::F32, n));
  if (pb) r.Set("paramBf16", c.fetch(pb, ElemType::BF16, n));
  return r;
}

// ---- timing on device-resident data (benchmarks) ----------------------------------------------------------

// Device buffer of n elements of type t filled with reproducible values in [-1, 1).
void* random_device(OpCall& c, ElemType t, size_t n, uint32_t seed) {
  std::vector<uint8_t> host(n * OpCall::elem_bytes(t));
  uint32_t x = seed * 2654435761u + 1u;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    float v = (float)(x >> 8) / (float)(1u << 23) - 1.0f;
    if (t == ElemType::F32)
      std::memcpy(&host[i * 4], &v, 4);
    else {
      uint16_t b = float_to_bf16(v).bits;
      std::memcpy(&host[i * 2], &b, 2);
    }
  }
  void* p = c.alloc(host.size());
  char err[512] = {0};
  auto to_dev = c.kernels().copy_to_device;
  check_kernel_status(to_dev(p, host.data(), host.size(), err, sizeof err), "copy_to_device", err);
  return p;
}

// cudaOpsTime(device, {op: 'attention_forward'|'gemm_forward'|'attention_decode', iterations, warmup?, dtype,
// sizes...}) -> seconds per call (median-free plain mean of `iterations` back-to-back launches after warm-up,
// synchronised at both ends; the data stays on the device, so no copies are timed).
Napi::Value time_op(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsTime");
  if (!c.has("op")) c.fail("op", "is missing");
  Napi::Value opv = info[1].As<Napi::Object>().Get("op");
  std::string op = opv.IsString() ? opv.As<Napi::String>().Utf8Value() : "";
  int iterations = (int)c.integer("iterations", 1, 100000), warmup = (int)c.integer_or("warmup", 0, 1000, 1);
  int dt = c.dtype();
  auto et = OpCall::elem_of(dt);
  auto sync = c.kernels().device_sync;
  std::function<void()> run;
  if (op == "attention_forward") {
    AttnShape s = attn_shape(c);
    bool causal = c.flag("causal", true);
    float scale = 1.0f / std::sqrt((float)s.D);
    void *q = random_device(c, et, s.nq, 1), *k = random_device(c, et, s.nk, 2), *v = random_device(c, et, s.nk, 3);
    void* o = c.output(nullptr, et, s.nq);
    float* lse = (float*)c.output(nullptr, ElemType::F32, s.nl);
    run = [&c, s, q, k, v, o, lse, scale, causal, dt] {
      RUN_KERNEL(c, attention_forward, s.B, s.T, s.Hq, s.Hkv, s.D, q, k, v, o, lse, scale, causal ? 1 : 0, dt, nullptr);
    };
  } else if (op == "attention_backward") {
    AttnShape s = attn_shape(c);
    float scale = 1.0f / std::sqrt((float)s.D);
    void *q = random_device(c, et, s.nq, 1), *k = random_device(c, et, s.nk, 2), *v = random_device(c, et, s.nk, 3);
    void *o = c.output(nullptr, et, s.nq), *dout = random_device(c, et, s.nq, 4);
    void *dq = c.output(nullptr, et, s.nq), *dk = c.output(nullptr, et, s.nk), *dv = c.output(nullptr, et, s.nk);
    float* lse = (float*)c.output(nullptr, ElemType::F32, s.nl);
    float* scratch = (float*)c.output(nullptr, ElemType::F32, s.nl);
    RUN_KERNEL(c, attention_forward, s.B, s.T, s.Hq, s.Hkv, s.D, q, k, v, o, lse, scale, 1, dt, nullptr);
    run = [&c, s, q, k, v, o, lse, dout, dq, dk, dv, scratch, scale, dt] {
      RUN_KERNEL(c, attention_backward, s.B, s.T, s.Hq, s.Hkv, s.D, q, k, v, o, lse, dout, dq, dk, dv, scratch, scale,
                 1, dt, nullptr);
    };
  } else if (op == "gemm_forward") {
    int M = (int)c.integer("M", 1, kMaxDim), N = (int)c.integer("N", 1, kMaxDim), K = (int)c.integer("K", 1, kMaxDim);
    void* A = random_device(c, et, checked_product(c, "M", {M, K}), 5);
    void* B = random_device(c, et, checked_product(c, "N", {N, K}), 6);
    void* C = c.output(nullptr, et, checked_product(c, "M", {M, N}));
    run = [&c, M, N, K, A, B, C, dt] { RUN_KERNEL(c, gemm_forward, M, N, K, A, B, nullptr, C, dt, dt, 0, nullptr); };
  } else if (op == "attention_decode") {
    int B = (int)c.integer("B", 1, 65535), Hq = (int)c.integer("Hq", 1, 1024), Hkv = (int)c.integer("Hkv", 1, 1024);
    int D = (int)c.integer("D", 16, 128), ctx = (int)c.integer("context", 1, 1 << 22);
    if (D != 16 && D != 32 && D != 64 && D != 128) c.fail("D", "must be 16, 32, 64 or 128");
    if (Hq % Hkv || Hq / Hkv > 16) c.fail("Hq", "must be a multiple of Hkv, at most 16 times it");
    int splits = (int)c.integer_or("numSplits", 1, 1024, recode_decode_num_splits(B, Hkv, ctx));
    size_t nc = checked_product(c, "context", {B, Hkv, ctx, D});
    void *q = random_device(c, et, (size_t)B * Hq * D, 7), *kc = random_device(c, et, nc, 8),
         *vc = random_device(c, et, nc, 9);
    std::vector<int32_t> lens(B, ctx);
    int* d_lens = (int*)c.alloc(B * sizeof(int32_t));
    char err[512] = {0};
    auto to_dev = c.kernels().copy_to_device;
    check_kernel_status(to_dev(d_lens, lens.data(), B * sizeof(int32_t), err, sizeof err), "copy_to_device", err);
    void* o = c.output(nullptr, et, (size_t)B * Hq * D);
    float* scratch = (float*)c.output(nullptr, ElemType::F32, (size_t)B * Hq * splits * (D + 2));
    float scale = 1.0f / std::sqrt((float)D);
    run = [&c, B, Hq, Hkv, D, ctx, q, kc, vc, d_lens, o, scale, splits, scratch, dt] {
      RUN_KERNEL(c, attention_decode, B, Hq, Hkv, D, ctx, q, kc, vc, d_lens, o, scale, splits, scratch, dt, nullptr);
    };
  } else {
    c.fail("op", "must be 'attention_forward', 'attention_backward', 'gemm_forward' or 'attention_decode'");
  }
  char err[512] = {0};
  for (int i = 0; i < warmup; ++i) run();
  check_kernel_status(sync(err, sizeof err), "device_sync", err);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) run();
  check_kernel_status(sync(err, sizeof err), "device_sync", err);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Napi::Number::New(info.Env(), seconds / iterations);
}

// cudaOpsWmmaConformance(device, {a, b: Uint16Array(256) bf16, c: Float32Array(256), alpha}) -> Float32Array
// (16 x 256): alpha * (A B + C) for the 16 layout combinations (see cuda/wmma_conformance.cu).
Napi::Value wmma_conformance(const Napi::CallbackInfo& info) {
  OpCall c(info, "cudaOpsWmmaConformance");
  Napi::TypedArray a = c.array("a", ElemType::BF16, 256), b = c.array("b", ElemType::BF16, 256);
  Napi::TypedArray cc = c.array("c", ElemType::F32, 256);
  float alpha = (float)c.number_or("alpha", 1.0);
  auto out = Napi::Float32Array::New(info.Env(), 16 * 256);
  char err[512] = {0};
  auto fn = c.kernels().wmma_conformance;
  check_kernel_status(fn(OpCall::data(a), OpCall::data(b), static_cast<const float*>(OpCall::data(cc)), out.Data(),
                         alpha, err, sizeof err),
                      "wmma_conformance", err);
  return out;
}

}  // namespace

RECODE_EXPORT("cudaOpsGemm", gemm);
RECODE_EXPORT("cudaOpsGemmBackwardInput", gemm_backward_input);
RECODE_EXPORT("cudaOpsGemmBackwardWeight", gemm_backward_weight);
RECODE_EXPORT("cudaOpsAttentionForward", attention_forward);
RECODE_EXPORT("cudaOpsAttentionBackward", attention_backward);
RECODE_EXPORT("cudaOpsKvCacheWrite", kv_cache_write);
RECODE_EXPORT("cudaOpsAttentionDecode", attention_decode);
RECODE_EXPORT("cudaOpsRmsnormForward", rmsnorm_forward);
RECODE_EXPORT("cudaOpsRmsnormBackward", rmsnorm_backward);
RECODE_EXPORT("cudaOpsRopeForward", rope_forward);
RECODE_EXPORT("cudaOpsRopeBackward", rope_backward);
RECODE_EXPORT("cudaOpsSwigluForward", swiglu_forward);
RECODE_EXPORT("cudaOpsSwigluBackward", swiglu_backward);
RECODE_EXPORT("cudaOpsEmbeddingForward", embedding_forward);
RECODE_EXPORT("cudaOpsEmbeddingBackward", embedding_backward);
RECODE_EXPORT("cudaOpsResidualAdd", residual_add);
RECODE_EXPORT("cudaOpsCast", cast);
RECODE_EXPORT("cudaOpsSumSquares", sum_squares);
RECODE_EXPORT("cudaOpsAdamw", adamw);
RECODE_EXPORT("cudaOpsTime", time_op);
RECODE_EXPORT("cudaOpsWmmaConformance", wmma_conformance);

}  // namespace recode
