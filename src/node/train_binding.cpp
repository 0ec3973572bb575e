// Bindings for the training building blocks: AdamW over many tensors (sync and async), gradient norm and
// clipping, LoRA/DoRA forward/backward for one linear layer, and the dropout mask / Philox generator they use.
// Every size is checked here, so a wrong buffer is a JavaScript error (ERR_INVALID_ARG), never a crash.
#include <cmath>
#include <string>
#include <vector>

#include "train/adapters.h"
#include "philox.h"
#include "node/napi_util.h"
#include "ops/ops.h"
#include "train/optim.h"

namespace recode {
namespace {

[[noreturn]] void bad(const char* fn, const std::string& what) {
  throw Error("ERR_INVALID_ARG", std::string(fn) + ": " + what);
}

Napi::Value get(Napi::Object o, const char* name) { return o.Get(name); }

bool present(Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  return !v.IsUndefined() && !v.IsNull();
}

double num_prop(const char* fn, Napi::Object o, const char* name, bool required, double fallback) {
  Napi::Value v = get(o, name);
  if (v.IsUndefined() || v.IsNull()) {
    if (required) bad(fn, std::string(name) + " is required");
    return fallback;
  }
  if (!v.IsNumber()) bad(fn, std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) bad(fn, std::string(name) + " must be finite, got " + number_text(d));
  return d;
}

int64_t int_prop(const char* fn, Napi::Object o, const char* name, int64_t lo, int64_t hi) {
  double d = num_prop(fn, o, name, true, 0);
  if (d != std::floor(d) || d < (double)lo || d > (double)hi)
    bad(fn, std::string(name) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                "], got " + number_text(d));
  return (int64_t)d;
}

template <class T>
Napi::TypedArrayOf<T> typed_value(const char* fn, Napi::Value v, const std::string& name, napi_typedarray_type kind,
                                  const char* kind_name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != kind) bad(fn, name + " must be a " + kind_name);
  if (is_detached(v.As<Napi::TypedArray>())) bad(fn, name + " is detached (its ArrayBuffer was transferred)");
  return v.As<Napi::TypedArrayOf<T>>();
}

Napi::Float32Array f32(const char* fn, Napi::Value v, const std::string& name, int64_t expected) {
  auto a = typed_value<float>(fn, v, name, napi_float32_array, "Float32Array");
  if (expected >= 0 && (int64_t)a.ElementLength() != expected)
    bad(fn, name + " must have " + std::to_string(expected) + " elements, got " + std::to_string(a.ElementLength()));
  return a;
}

float* f32_prop(const char* fn, Napi::Object o, const char* name, int64_t expected, bool required) {
  if (!present(o, name)) {
    if (required) bad(fn, std::string(name) + " is required");
    return nullptr;
  }
  return f32(fn, o.Get(name), name, expected).Data();
}

std::vector<Napi::Float32Array> f32_list(const char* fn, Napi::Value v, const char* name) {
  if (!v.IsArray()) bad(fn, std::string(name) + " must be an array of Float32Array");
  Napi::Array arr = v.As<Napi::Array>();
  std::vector<Napi::Float32Array> out;
  for (uint32_t i = 0; i < arr.Length(); ++i)
    out.push_back(f32(fn, arr.Get(i), std::string(name) + "[" + std::to_string(i) + "]", -1));
  return out;
}

// ---- AdamW ------------------------------------------------------------------------------------------------

struct AdamWCall {
  AdamWHyper hyper;
  std::vector<ParamSlot> slots;
  float grad_scale = 1.0f;
  bool reference = false;
  // The JS arrays the slots point into, per tensor (bf16 empty when absent).
  struct Arrays {
    Napi::Float32Array param, grad, exp_avg, exp_avg_sq;
    Napi::Uint16Array bf16;
  };
  std::vector<Arrays> arrays;
};

AdamWCall parse_adamw(const Napi::CallbackInfo& info, const char* fn) {
  Args a{info, fn};
  AdamWCall call;
  auto params = f32_list(fn, a.at(0), "params");
  auto grads = f32_list(fn, a.at(1), "grads");
  auto m = f32_list(fn, a.at(2), "expAvg");
  auto v = f32_list(fn, a.at(3), "expAvgSq");
  size_t n = params.size();
  if (grads.size() != n || m.size() != n || v.size() != n)
    bad(fn, "params, grads, expAvg and expAvgSq must have the same number of tensors");
  Napi::Object h = a.object(4, "hyper");
  call.hyper.lr = num_prop(fn, h, "lr", true, 0);
  call.hyper.beta1 = num_prop(fn, h, "beta1", false, 0.9);
  call.hyper.beta2 = num_prop(fn, h, "beta2", false, 0.999);
  call.hyper.eps = num_prop(fn, h, "eps", false, 1e-8);
  call.hyper.weight_decay = num_prop(fn, h, "weightDecay", false, 0.0);
  call.hyper.step = int_prop(fn, h, "step", 1, (int64_t)1 << 40);
  if (call.hyper.lr < 0) bad(fn, "lr must be >= 0");
  if (!(call.hyper.beta1 >= 0 && call.hyper.beta1 < 1)) bad(fn, "beta1 must be in [0, 1)");
  if (!(call.hyper.beta2 >= 0 && call.hyper.beta2 < 1)) bad(fn, "beta2 must be in [0, 1)");
  if (!(call.hyper.eps > 0)) bad(fn, "eps must be > 0");
  if (call.hyper.weight_decay < 0) bad(fn, "weightDecay must be >= 0");
  Napi::Array decay, bf16;
  if (a.has(5)) {
    Napi::Object o = a.object(5, "options");
    call.grad_scale = (float)num_prop(fn, o, "gradScale", false, 1.0);
    if (present(o, "reference")) {
      if (!o.Get("reference").IsBoolean()) bad(fn, "options.reference must be a boolean");
      call.reference = o.Get("reference").As<Napi::Boolean>().Value();
    }
    if (present(o, "decay")) {
      if (!o.Get("decay").IsArray() || o.Get("decay").As<Napi::Array>().Length() != n)
        bad(fn, "options.decay must be an array of booleans, one per tensor");
      decay = o.Get("decay").As<Napi::Array>();
    }
    if (present(o, "bf16")) {
      if (!o.Get("bf16").IsArray() || o.Get("bf16").As<Napi::Array>().Length() != n)
        bad(fn, "options.bf16 must be an array with one Uint16Array (or null) per tensor");
      bf16 = o.Get("bf16").As<Napi::Array>();
    }
  }
  for (size_t i = 0; i < n; ++i) {
    int64_t count = (int64_t)params[i].ElementLength();
    std::string idx = "[" + std::to_string(i) + "]";
    if ((int64_t)grads[i].ElementLength() != count || (int64_t)m[i].ElementLength() != count ||
        (int64_t)v[i].ElementLength() != count)
      bad(fn, "tensor " + idx + ": params, grads, expAvg and expAvgSq must have the same length (" +
                  std::to_string(count) + ")");
    ParamSlot s;
    Napi::Uint16Array bf16_array;
    s.param = params[i].Data();
    s.grad = grads[i].Data();
    s.exp_avg = m[i].Data();
    s.exp_avg_sq = v[i].Data();
    s.count = count;
    if (!decay.IsEmpty()) {
      Napi::Value d = decay.Get((uint32_t)i);
      if (!d.IsBoolean()) bad(fn, "options.decay" + idx + " must be a boolean");
      s.decay = d.As<Napi::Boolean>().Value();
    }
    if (!bf16.IsEmpty()) {
      Napi::Value b = bf16.Get((uint32_t)i);
      if (!b.IsNull() && !b.IsUndefined()) {
        auto arr = typed_value<uint16_t>(fn, b, "options.bf16" + idx, napi_uint16_array, "Uint16Array");
        if ((int64_t)arr.ElementLength() != count)
          bad(fn, "options.bf16" + idx + " must have " + std::to_string(count) + " elements");
        s.bf16_out = arr.Data();
        bf16_array = arr;
      }
    }
    // The four arrays of one tensor must not share memory with each other.
    const float* ptrs[4] = {s.param, s.grad, s.exp_avg, s.exp_avg_sq};
    for (int p = 0; p < 4; ++p)
      for (int q = p + 1; q < 4; ++q)
        if (count > 0 && ptrs[p] < ptrs[q] + count && ptrs[q] < ptrs[p] + count)
          bad(fn, "tensor " + idx + ": params, grads, expAvg and expAvgSq must be distinct buffers");
    call.slots.push_back(s);
    call.arrays.push_back({params[i], grads[i], m[i], v[i], bf16_array});
  }
  return call;
}

void run_adamw(const AdamWCall& c) {
  if (c.reference) {
    for (const ParamSlot& s : c.slots) adamw_step_reference(c.hyper, s, c.grad_scale);
  } else {
    adamw_step(c.hyper, c.slots, c.grad_scale);
  }
}

Napi::Value adamw_step_js(const Napi::CallbackInfo& info) {
  AdamWCall c = parse_adamw(info, "adamwStep");
  run_adamw(c);
  return info.Env().Undefined();
}

// Updates in place from a worker: each slot points into the job's own copies, copied back on success (AsyncJob).
class AdamWJob : public AsyncJob {
 public:
  AdamWJob(Napi::Env env, const char* fn, AdamWCall call) : AsyncJob(env), call_(std::move(call)) {
    for (size_t i = 0; i < call_.slots.size(); ++i) {
      ParamSlot& s = call_.slots[i];
      const AdamWCall::Arrays& a = call_.arrays[i];
      const std::string idx = "[" + std::to_string(i) + "]";
      s.param = output(a.param, fn, "params" + idx, true);
      s.grad = input(a.grad);
      s.exp_avg = output(a.exp_avg, fn, "expAvg" + idx, true);
      s.exp_avg_sq = output(a.exp_avg_sq, fn, "expAvgSq" + idx, true);
      if (s.bf16_out) s.bf16_out = output(a.bf16, fn, "options.bf16" + idx, true);
    }
    call_.arrays.clear();
  }

 protected:
  void Run() override {
    cancel.throw_if_requested();
    run_adamw(call_);
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  AdamWCall call_;
};

Napi::Value adamw_step_async(const Napi::CallbackInfo& info) {
  AdamWCall c = parse_adamw(info, "adamwStepAsync");
  auto job = std::make_unique<AdamWJob>(info.Env(), "adamwStepAsync", std::move(c));
  Args a{info, "adamwStepAsync"};
  job->set_cancel(a, 6);
  return AsyncJob::queue(std::move(job));
}

// ---- gradient norm ----------------------------------------------------------------------------------------

Napi::Value grad_norm_sq_js(const Napi::CallbackInfo& info) {
  Args a{info, "gradNormSq"};
  auto grads = f32_list("gradNormSq", a.at(0), "grads");
  std::vector<const float*> ptrs;
  std::vector<int64_t> counts;
  for (auto& g : grads) {
    ptrs.push_back(g.Data());
    counts.push_back((int64_t)g.ElementLength());
  }
  return Napi::Number::New(info.Env(), grad_norm_sq(ptrs, counts));
}

Napi::Value clip_grad_norm_js(const Napi::CallbackInfo& info) {
  Args a{info, "clipGradNorm"};
  auto grads = f32_list("clipGradNorm", a.at(0), "grads");
  double max_norm = a.number(1, "maxNorm");
  if (!(max_norm > 0) || !std::isfinite(max_norm)) a.fail(1, "(maxNorm) must be a positive finite number");
  std::vector<float*> ptrs;
  std::vector<int64_t> counts;
  for (auto& g : grads) {
    ptrs.push_back(g.Data());
    counts.push_back((int64_t)g.ElementLength());
  }
  return Napi::Number::New(info.Env(), clip_grad_norm(ptrs, counts, max_norm));
}

// ---- adapters ---------------------------------------------------------------------------------------------

AdapterShape parse_shape(const char* fn, Napi::Object d) {
  AdapterShape sh;
  sh.rows = int_prop(fn, d, "rows", 1, (int64_t)1 << 31);
  sh.in = int_prop(fn, d, "in", 1, (int64_t)1 << 20);
  sh.out = int_prop(fn, d, "out", 1, (int64_t)1 << 20);
  sh.rank = int_prop(fn, d, "rank", 1, (int64_t)1 << 14);
  if (sh.rows * sh.in > ((int64_t)1 << 32) || sh.rows * sh.out > ((int64_t)1 << 32))
    bad(fn, "rows x features is too large");
  return sh;
}

AdapterWeights parse_weights(const char* fn, const AdapterShape& sh, Napi::Object o) {
  AdapterWeights w;
  w.weight = f32_prop(fn, o, "weight", sh.out * sh.in, true);
  w.bias = f32_prop(fn, o, "bias", sh.out, false);
  w.lora_a = f32_prop(fn, o, "loraA", sh.rank * sh.in, true);
  w.lora_b = f32_prop(fn, o, "loraB", sh.out * sh.rank, true);
  w.magnitude = f32_prop(fn, o, "magnitude", sh.out, false);
  w.scaling = (float)num_prop(fn, o, "scaling", true, 1.0);
  w.dropout = (float)num_prop(fn, o, "dropout", false, 0.0);
  if (!(w.dropout >= 0.0f && w.dropout < 1.0f)) bad(fn, "dropout must be in [0, 1)");
  double seed = num_prop(fn, o, "seed", false, 0), offset = num_prop(fn, o, "offset", false, 0);
  if (seed < 0 || seed != std::floor(seed) || seed > 9007199254740991.0)
    bad(fn, "seed must be an integer in [0, 2^53)");
  if (offset < 0 || offset != std::floor(offset) || offset > 9007199254740991.0)
    bad(fn, "offset must be an integer in [0, 2^53)");
  w.seed = (uint64_t)seed;
  w.offset = (uint64_t)offset;
  return w;
}

AdapterSaved parse_saved(const char* fn, const AdapterShape& sh, const AdapterWeights& w, Napi::Object o) {
  AdapterSaved s;
  s.lora_hidden = f32_prop(fn, o, "loraHidden", sh.rows * sh.rank, true);
  if (w.magnitude) {
    s.weight_norm = f32_prop(fn, o, "weightNorm", sh.out, true);
    s.dropped_base = f32_prop(fn, o, "droppedBase", sh.rows * sh.out, true);
  }
  return s;
}

// adapterForward(x, dims, weights, y, saved)
Napi::Value adapter_forward_js(const Napi::CallbackInfo& info) {
  const char* fn = "adapterForward";
  Args a{info, fn};
  AdapterShape sh = parse_shape(fn, a.object(1, "dims"));
  float* x = f32(fn, a.at(0), "x", sh.rows * sh.in).Data();
  AdapterWeights w = parse_weights(fn, sh, a.object(2, "weights"));
  float* y = f32(fn, a.at(3), "y", sh.rows * sh.out).Data();
  AdapterSaved s = parse_saved(fn, sh, w, a.object(4, "saved"));
  adapter_forward(sh, w, x, y, s);
  return info.Env().Undefined();
}

// adapterBackward(x, dy, dims, weights, saved, grads)
Napi::Value adapter_backward_js(const Napi::CallbackInfo& info) {
  const char* fn = "adapterBackward";
  Args a{info, fn};
  AdapterShape sh = parse_shape(fn, a.object(2, "dims"));
  float* x = f32(fn, a.at(0), "x", sh.rows * sh.in).Data();
  float* dy = f32(fn, a.at(1), "dy", sh.rows * sh.out).Data();
  AdapterWeights w = parse_weights(fn, sh, a.object(3, "weights"));
  AdapterSaved s = parse_saved(fn, sh, w, a.object(4, "saved"));
  Napi::Object g = a.object(5, "grads");
  AdapterGrads grads;
  grads.input = f32_prop(fn, g, "input", sh.rows * sh.in, false);
  grads.lora_a = f32_prop(fn, g, "loraA", sh.rank * sh.in, true);
  grads.lora_b = f32_prop(fn, g, "loraB", sh.out * sh.rank, true);
  grads.magnitude = f32_prop(fn, g, "magnitude", sh.out, w.magnitude != nullptr);
  if (present(g, "accumulate")) {
    if (!g.Get("accumulate").IsBoolean()) bad(fn, "grads.accumulate must be a boolean");
    grads.accumulate = g.Get("accumulate").As<Napi::Boolean>().Value();
  }
  adapter_backward(sh, w, x, dy, s, grads);
  return info.Env().Undefined();
}

// doraWeightNorm(dims, weights, out)
Napi::Value dora_weight_norm_js(const Napi::CallbackInfo& info) {
  const char* fn = "doraWeightNorm";
  Args a{info, fn};
  AdapterShape sh = parse_shape(fn, a.object(0, "dims"));
  AdapterWeights w = parse_weights(fn, sh, a.object(1, "weights"));
  float* out = f32(fn, a.at(2), "out", sh.out).Data();
  dora_weight_norm(sh, w, out);
  return info.Env().Undefined();
}

// adapterMerge(dims, weights, out [out*in])
Napi::Value adapter_merge_js(const Napi::CallbackInfo& info) {
  const char* fn = "adapterMerge";
  Args a{info, fn};
  AdapterShape sh = parse_shape(fn, a.object(0, "dims"));
  AdapterWeights w = parse_weights(fn, sh, a.object(1, "weights"));
  float* out = f32(fn, a.at(2), "out", sh.out * sh.in).Data();
  adapter_merge(sh, w, out);
  return info.Env().Undefined();
}

// adapterLinear(x, dy, dims, weights) -> { y, dx, loraA, loraB, magnitude?, weightNorm?, merged }: the trainer's
// fast adapted linear (src/ops/adapter_linear.cpp) forward and backward, its DoRA norm and merged weight, for the
// tests that hold it to the plain reference above.
Napi::Value adapter_linear_js(const Napi::CallbackInfo& info) {
  const char* fn = "adapterLinear";
  Args a{info, fn};
  AdapterShape sh = parse_shape(fn, a.object(2, "dims"));
  const float* x = f32(fn, a.at(0), "x", sh.rows * sh.in).Data();
  const float* dy = f32(fn, a.at(1), "dy", sh.rows * sh.out).Data();
  AdapterWeights w = parse_weights(fn, sh, a.object(3, "weights"));
  const int M = (int)sh.rows, N = (int)sh.out, K = (int)sh.in, r = (int)sh.rank;
  Napi::Env env = info.Env();
  auto array = [&](size_t n) { return Napi::Float32Array::New(env, n); };
  Napi::Float32Array y = array((size_t)M * N), dx = array((size_t)M * K), da = array((size_t)r * K),
                     db = array((size_t)N * r), merged = array((size_t)N * K);
  Napi::Float32Array dm = array(w.magnitude ? N : 0), norm = array(w.magnitude ? N : 0);
  ops::LinearAdapter ad;
  ad.a = w.lora_a;
  ad.b = w.lora_b;
  ad.magnitude = w.magnitude;
  ad.weight_norm = w.magnitude ? norm.Data() : nullptr;
  ad.grad_a = da.Data();
  ad.grad_b = db.Data();
  ad.grad_magnitude = w.magnitude ? dm.Data() : nullptr;
  ad.rank = r;
  ad.scaling = w.scaling;
  ad.dropout = w.dropout;
  ad.seed = w.seed;
  ad.offset = w.offset;
  ops::Linear L;
  L.w = w.weight;
  L.bias = w.bias;
  L.N = N;
  L.K = K;
  L.adapter = &ad;
  if (w.magnitude) ops::adapter_weight_norm(norm.Data(), w.weight, ad, N, K);
  ops::AdapterActs acts;
  ops::adapter_linear_forward(y.Data(), x, L, M, acts);
  ops::adapter_linear_backward(dx.Data(), dy, x, L, M, acts);  // gradients accumulate into the zeroed arrays
  ops::adapter_merged_weight(merged.Data(), nullptr, w.weight, ad, N, K);
  Napi::Object o = Napi::Object::New(env);
  o.Set("y", y);
  o.Set("dx", dx);
  o.Set("loraA", da);
  o.Set("loraB", db);
  if (w.magnitude) {
    o.Set("magnitude", dm);
    o.Set("weightNorm", norm);
  }
  o.Set("merged", merged);
  return o;
}

// dropoutMask(count, p, seed, offset) -> Uint8Array (1 = kept)
Napi::Value dropout_mask_js(const Napi::CallbackInfo& info) {
  Args a{info, "dropoutMask"};
  int64_t count = a.integer(0, "count", 0, (int64_t)1 << 30);
  double p = a.number(1, "p");
  if (!(p >= 0 && p < 1)) a.fail(1, "(p) must be in [0, 1)");
  int64_t seed = a.integer(2, "seed", 0, ((int64_t)1 << 53) - 1);
  int64_t offset = a.integer(3, "offset", 0, ((int64_t)1 << 53) - 1);
  auto mask = Napi::Uint8Array::New(info.Env(), (size_t)count);
  uint8_t* bits = mask.Data();
  for (int64_t i = 0; i < count; ++i)
    bits[i] = dropout_keep((uint64_t)seed, (uint64_t)offset + (uint64_t)i, (float)p) ? 1 : 0;
  return mask;
}

// philox4x32(counter: Uint32Array(4), key: Uint32Array(2)) -> Uint32Array(4)
Napi::Value philox_js(const Napi::CallbackInfo& info) {
  Args a{info, "philox4x32"};
  auto ctr = a.typed<uint32_t>(0, "counter");
  auto key = a.typed<uint32_t>(1, "key");
  if (ctr.ElementLength() != 4) a.fail(0, "(counter) must have 4 elements");
  if (key.ElementLength() != 2) a.fail(1, "(key) must have 2 elements");
  auto out = Napi::Uint32Array::New(info.Env(), 4);
  const uint32_t* c = ctr.Data();
  const philox::U32x4 r = philox::philox4x32_10(philox::U32x4{{c[0], c[1], c[2], c[3]}}, key.Data()[0], key.Data()[1]);
  for (int i = 0; i < 4; ++i) out.Data()[i] = r.v[i];
  return out;
}

}  // namespace

RECODE_EXPORT("adamwStep", adamw_step_js);
RECODE_EXPORT("adamwStepAsync", adamw_step_async);
RECODE_EXPORT("gradNormSq", grad_norm_sq_js);
RECODE_EXPORT("clipGradNorm", clip_grad_norm_js);
RECODE_EXPORT("adapterForward", adapter_forward_js);
RECODE_EXPORT("adapterBackward", adapter_backward_js);
RECODE_EXPORT("doraWeightNorm", dora_weight_norm_js);
RECODE_EXPORT("adapterMerge", adapter_merge_js);
RECODE_EXPORT("adapterLinear", adapter_linear_js);
RECODE_EXPORT("dropoutMask", dropout_mask_js);
RECODE_EXPORT("philox4x32", philox_js);

}  // namespace recode
