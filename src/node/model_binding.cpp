// JavaScript surface of the native model (lib/model/*.ts wraps it):
//   modelLoad(config, files, { device, slots, context, roundBf16 }) -> Promise<handle>  (loads off the loop)
//   modelInfo(handle) -> { device, slots, context, weightBytes, kvCacheBytes, slotLengths }
//   modelStep(handle, slots, counts, tokens, mode, sampling?, cancel?) -> Promise   (ONE job per batched step)
//       mode 'last' | 'all': Float32Array logits; mode 'sample': { tokens: Int32Array, logprobs: Float32Array }
//       sampling = { params: Float32Array [rows x 4: temperature, topK, topP, minP], seed, rowIds: Float64Array,
//                    steps: Float64Array }
//   modelResetSlot(handle, slot), modelDispose(handle)
#include <cmath>
#include <memory>

#include "model/model.h"
#include "node/model_handle.h"
#include "core/safetensors.h"
#include "sampling/sampling.h"

namespace recode::model {
namespace {

struct Holder {
  std::shared_ptr<Backend> backend;
};

Holder& holder(const Args& a, size_t i) {
  Napi::Value v = a.at(i);
  if (!v.IsExternal()) a.fail(i, "(model) must be a model handle");
  return *v.As<Napi::External<Holder>>().Data();
}

std::shared_ptr<Backend> backend_of(const Args& a, size_t i) {
  Holder& h = holder(a, i);
  if (!h.backend) throw Error("ERR_INVALID_ARG", std::string(a.fn) + ": the model was disposed");
  return h.backend;
}

int int_field(const Args& a, Napi::Object o, const char* name, int lo, int hi) {
  Napi::Value v = o.Get(name);
  if (!v.IsNumber()) a.fail(0, std::string("(config.") + name + ") must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != std::floor(d) || d < lo || d > hi)
    a.fail(0, std::string("(config.") + name + ") must be an integer in [" + std::to_string(lo) + ", " +
                  std::to_string(hi) + "]");
  return (int)d;
}
double num_field(const Args& a, Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue()))
    a.fail(0, std::string("(config.") + name + ") must be a finite number");
  return v.As<Napi::Number>().DoubleValue();
}
bool bool_field(const Args& a, Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  if (!v.IsBoolean()) a.fail(0, std::string("(config.") + name + ") must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

class LoadJob : public AsyncJob {
 public:
  LoadJob(Napi::Env env, std::string device, ModelConfig cfg, std::vector<std::string> files, int slots, int context,
          bool bf16)
      : AsyncJob(env),
        device_(std::move(device)),
        cfg_(std::move(cfg)),
        files_(std::move(files)),
        slots_(slots),
        context_(context),
        bf16_(bf16) {}

 protected:
  void Run() override {
    WeightStore ws(files_);
    backend_ = make_backend(device_, cfg_, ws, slots_, context_, bf16_);
  }
  Napi::Value Result(Napi::Env env) override {
    auto* h = new Holder{std::move(backend_)};
    return Napi::External<Holder>::New(env, h, [](Napi::Env, Holder* p) { delete p; });
  }

 private:
  std::string device_;
  ModelConfig cfg_;
  std::vector<std::string> files_;
  int slots_, context_;
  bool bf16_;
  std::shared_ptr<Backend> backend_;
};

}  // namespace

ModelConfig model_config_arg(const Args& a) {
  Napi::Object c = a.object(0, "config");
  ModelConfig cfg;
  Napi::Value arch = c.Get("arch");
  if (!arch.IsString()) a.fail(0, "(config.arch) must be a string");
  cfg.arch = arch.As<Napi::String>().Utf8Value();
  if (cfg.arch != "qwen2" && cfg.arch != "llama" && cfg.arch != "qwen3")
    a.fail(0, "(config.arch) must be qwen2, llama or qwen3");
  cfg.vocab = int_field(a, c, "vocab", 1, 1 << 24);
  cfg.hidden = int_field(a, c, "hidden", 1, 1 << 16);
  cfg.layers = int_field(a, c, "layers", 1, 1024);
  cfg.heads = int_field(a, c, "heads", 1, 1024);
  cfg.kv_heads = int_field(a, c, "kvHeads", 1, 1024);
  cfg.head_dim = int_field(a, c, "headDim", 2, 1024);
  cfg.intermediate = int_field(a, c, "intermediate", 1, 1 << 18);
  if (cfg.heads % cfg.kv_heads) a.fail(0, "(config.heads) must be a multiple of config.kvHeads");
  if (cfg.head_dim % 2) a.fail(0, "(config.headDim) must be even");
  cfg.eps = num_field(a, c, "eps");
  cfg.rope_theta = num_field(a, c, "ropeTheta");
  cfg.tie_embeddings = bool_field(a, c, "tieEmbeddings");
  cfg.qkv_bias = bool_field(a, c, "qkvBias");
  cfg.o_bias = bool_field(a, c, "oBias");
  cfg.mlp_bias = bool_field(a, c, "mlpBias");
  cfg.qk_norm = bool_field(a, c, "qkNorm");
  Napi::Value rs = c.Get("ropeScaling");
  if (rs.IsObject()) {
    Napi::Object r = rs.As<Napi::Object>();
    cfg.rope_scaling.llama3 = true;
    cfg.rope_scaling.factor = num_field(a, r, "factor");
    cfg.rope_scaling.low_freq_factor = num_field(a, r, "lowFreqFactor");
    cfg.rope_scaling.high_freq_factor = num_field(a, r, "highFreqFactor");
    cfg.rope_scaling.original_max_position = num_field(a, r, "originalMaxPosition");
  } else if (!rs.IsUndefined() && !rs.IsNull()) {
    a.fail(0, "(config.ropeScaling) must be null or an object");
  }
  return cfg;
}

namespace {

Napi::Value model_load(const Napi::CallbackInfo& info) {
  Args a{info, "modelLoad"};
  ModelConfig cfg = model_config_arg(a);
  Napi::Array fa = a.array(1, "files");
  std::vector<std::string> files;
  for (uint32_t i = 0; i < fa.Length(); ++i) {
    Napi::Value v = fa.Get(i);
    if (!v.IsString()) a.fail(1, "(files) must be strings");
    files.push_back(v.As<Napi::String>().Utf8Value());
  }
  Napi::Object opt = a.object(2, "options");
  int slots = int_field(a, opt, "slots", 1, 4096);
  int context = int_field(a, opt, "context", 1, 1 << 22);
  bool bf16 = bool_field(a, opt, "roundBf16");
  Napi::Value dev = opt.Get("device");
  std::string device = dev.IsString() ? dev.As<Napi::String>().Utf8Value() : "cpu";
  auto job =
      std::make_unique<LoadJob>(info.Env(), std::move(device), std::move(cfg), std::move(files), slots, context, bf16);
  return AsyncJob::queue(std::move(job));
}

Napi::Value model_info(const Napi::CallbackInfo& info) {
  Args a{info, "modelInfo"};
  auto b = backend_of(a, 0);
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("device", b->device());
  o.Set("slots", b->slots());
  o.Set("context", b->context());
  o.Set("weightBytes", (double)b->weight_bytes());
  o.Set("kvCacheBytes", (double)b->kv_cache_bytes());
  Napi::Array lens = Napi::Array::New(env, b->slots());
  for (int i = 0; i < b->slots(); ++i) lens.Set(i, b->slot_length(i));
  o.Set("slotLengths", lens);
  return o;
}

enum class Mode { Last, All, Sample };

class StepJob : public AsyncJob {
 public:
  StepJob(Napi::Env env, std::shared_ptr<Backend> b) : AsyncJob(env), backend_(std::move(b)) {}
  std::vector<StepSeq> seqs;
  const int32_t* tokens = nullptr;
  Mode mode = Mode::Last;
  std::vector<sampling::Params> params;
  uint64_t seed = 0;
  std::vector<uint64_t> row_ids, steps;

 protected:
  void Run() override {
    int T = 0;
    for (const auto& s : seqs) T += s.n;
    const int V = backend_->config().vocab;
    size_t rows = mode == Mode::All ? (size_t)T : seqs.size();
    logits_.resize(rows * V);
    backend_->forward(seqs, tokens, mode == Mode::All, logits_.data(), cancel);
    if (mode == Mode::Sample) {
      results_.resize(seqs.size());
      sampling::sample_rows(logits_.data(), (int)seqs.size(), V, params.data(), seed, row_ids.data(), steps.data(),
                            results_.data());
    }
  }
  Napi::Value Result(Napi::Env env) override {
    if (mode != Mode::Sample) {
      auto out = Napi::Float32Array::New(env, logits_.size());
      std::memcpy(out.Data(), logits_.data(), logits_.size() * sizeof(float));
      return out;
    }
    auto tok = Napi::Int32Array::New(env, results_.size());
    auto lp = Napi::Float32Array::New(env, results_.size());
    for (size_t i = 0; i < results_.size(); ++i) {
      tok[i] = results_[i].token;
      lp[i] = results_[i].logprob;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("tokens", tok);
    o.Set("logprobs", lp);
    return o;
  }

 private:
  std::shared_ptr<Backend> backend_;
  std::vector<float> logits_;
  std::vector<sampling::Result> results_;
};

Napi::Value model_step(const Napi::CallbackInfo& info) {
  Args a{info, "modelStep"};
  auto b = backend_of(a, 0);
  auto slots = a.typed<int32_t>(1, "slots");
  auto counts = a.typed<int32_t>(2, "counts");
  auto tokens = a.typed<int32_t>(3, "tokens");
  std::string mode = a.string(4, "mode");
  size_t n = slots.ElementLength();
  if (n == 0 || counts.ElementLength() != n) a.fail(2, "(counts) must have one entry per slot (and at least one)");
  auto job = std::make_unique<StepJob>(info.Env(), b);
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    if (counts[i] <= 0) a.fail(2, "(counts) entries must be positive");
    job->seqs.push_back({slots[i], counts[i]});
    total += counts[i];
  }
  if ((int64_t)tokens.ElementLength() != total) a.fail(3, "(tokens) must hold sum(counts) ids");
  job->tokens = job->input(tokens);  // a copy: see AsyncJob
  if (mode == "last")
    job->mode = Mode::Last;
  else if (mode == "all")
    job->mode = Mode::All;
  else if (mode == "sample")
    job->mode = Mode::Sample;
  else
    a.fail(4, "(mode) must be 'last', 'all' or 'sample'");
  if (job->mode == Mode::Sample) {
    Napi::Object s = a.object(5, "sampling");
    Napi::Value pv = s.Get("params"), rv = s.Get("rowIds"), sv = s.Get("steps"), seed = s.Get("seed");
    if (!pv.IsTypedArray() || pv.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
        pv.As<Napi::Float32Array>().ElementLength() != n * 4)
      a.fail(5, "(sampling.params) must be a Float32Array of rows x 4");
    if (!rv.IsTypedArray() || rv.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
        rv.As<Napi::Float64Array>().ElementLength() != n)
      a.fail(5, "(sampling.rowIds) must be a Float64Array with one entry per row");
    if (!sv.IsTypedArray() || sv.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
        sv.As<Napi::Float64Array>().ElementLength() != n)
      a.fail(5, "(sampling.steps) must be a Float64Array with one entry per row");
    if (!seed.IsNumber()) a.fail(5, "(sampling.seed) must be a number");
    double sd = seed.As<Napi::Number>().DoubleValue();
    if (!(sd >= 0 && sd < 9007199254740992.0) || sd != std::floor(sd))
      a.fail(5, "(sampling.seed) must be an integer in [0, 2^53)");
    job->seed = (uint64_t)sd;
    auto P = pv.As<Napi::Float32Array>();
    auto R = rv.As<Napi::Float64Array>();
    auto S = sv.As<Napi::Float64Array>();
    for (size_t i = 0; i < n; ++i) {
      sampling::Params p;
      p.temperature = P[i * 4];
      p.top_k = (int)P[i * 4 + 1];
      p.top_p = P[i * 4 + 2];
      p.min_p = P[i * 4 + 3];
      sampling::check_params(p, (int)i);
      job->params.push_back(p);
      job->row_ids.push_back((uint64_t)R[i]);
      job->steps.push_back((uint64_t)S[i]);
    }
    job->set_cancel(a, 6);
  } else {
    job->set_cancel(a, 5);
  }
  return AsyncJob::queue(std::move(job));
}

Napi::Value model_reset_slot(const Napi::CallbackInfo& info) {
  Args a{info, "modelResetSlot"};
  auto b = backend_of(a, 0);
  int slot = (int)a.integer(1, "slot", 0, b->slots() - 1);
  b->reset_slot(slot);
  return info.Env().Undefined();
}

Napi::Value model_dispose(const Napi::CallbackInfo& info) {
  Args a{info, "modelDispose"};
  holder(a, 0).backend.reset();  // running jobs hold their own reference
  return info.Env().Undefined();
}

// safetensorsHeader(path) -> [{ name, dtype, shape, begin, end }]: maps and validates the file (ERR_MODEL).
Napi::Value safetensors_header(const Napi::CallbackInfo& info) {
  Args a{info, "safetensorsHeader"};
  SafetensorsFile f(a.string(0, "path"));
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env, f.tensors().size());
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const TensorInfo& t = f.tensors()[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", t.name);
    o.Set("dtype", dtype_name(t.dtype));
    Napi::Array shape = Napi::Array::New(env, t.shape.size());
    for (size_t j = 0; j < t.shape.size(); ++j) shape.Set(j, (double)t.shape[j]);
    o.Set("shape", shape);
    o.Set("begin", (double)t.begin);
    o.Set("end", (double)t.end);
    out.Set(i, o);
  }
  return out;
}

}  // namespace

std::shared_ptr<Backend> backend_from_handle(const Args& a, size_t i) { return backend_of(a, i); }

RECODE_EXPORT("safetensorsHeader", safetensors_header);
RECODE_EXPORT("modelLoad", model_load);
RECODE_EXPORT("modelInfo", model_info);
RECODE_EXPORT("modelStep", model_step);
RECODE_EXPORT("modelResetSlot", model_reset_slot);
RECODE_EXPORT("modelDispose", model_dispose);

}  // namespace recode::model
