// JavaScript surface of full fine-tuning (lib/model/train.ts wraps it):
//   trainerCreate(model, { adapter?, activationRecomputation? }) -> handle           (float32 master weights or
//   adapters, gradients, moments) trainerSetAdaptersEnabled(handle, enabled)             (off: the frozen base, for the
//   KL reference) trainerMergedWeight(handle, i) -> { name, shape, data } | undefined   (adapter i merged into its base
//   weight) trainerStep(handle, counts, tokens, weights, cancel?) -> Promise<{ logp: Float32Array, loss }>  (ONE job)
//   trainerForward(handle, counts, tokens, cancel?) -> Promise<Float32Array logp>   (keeps the activations)
//   trainerBackward(handle, weights, cancel?) -> Promise<loss>                     (consumes them)
//   trainerApplyAdamW(handle, { lr, beta1, beta2, eps, weightDecay, maxGradNorm }) -> Promise<gradNorm>
//   trainerGradients(handle) -> [{ name, shape, grad: Float32Array }]   (copies; for tests and inspection)
//   trainerParameters(handle) -> [{ name, shape, data: Float32Array, decay }]  (copies of the master weights)
//   trainerState(handle) -> { stepsTaken, tensors: [{ name, shape, data, expAvg, expAvgSq, decay }] }  (copies)
//   trainerSetState(handle, { stepsTaken?, tensors: [{ name, data?, expAvg?, expAvgSq? }] })  (re-packs once)
//   trainerZeroGrad(handle), trainerDispose(handle)
//   trainerReduceGradients(handle)   (sums the gradients over MPI ranks in place, the same bits on every rank;
//                                     synchronous, on the thread that initialised MPI)
//   trainerInitNccl(handle, uniqueId: Uint8Array(128), rank, size)  (the CUDA trainer joins an NCCL communicator;
//                                     trainerReduceGradients then sums its device gradients through NCCL)
//   trainerSetForwardIndex(handle, i) (the next training forward draws dropout stream i of this update)
//   trainerSetZero1(handle, on)       (AdamW moments sharded over the MPI ranks; trainerState then gathers them:
//                                     every rank must call it)
#include <algorithm>
#include <cmath>
#include <cstring>

#include "dist/mpi_loader.h"
#include "model/projections.h"
#include "model/train_step.h"
#include "node/model_handle.h"

namespace recode::model {
namespace {

struct TrainerHolder {
  std::shared_ptr<Trainer> trainer;
};

std::shared_ptr<Trainer> trainer_of(const Args& a, size_t i) {
  Napi::Value v = a.at(i);
  if (!v.IsExternal()) a.fail(i, "(trainer) must be a trainer handle");
  auto& h = *v.As<Napi::External<TrainerHolder>>().Data();
  if (!h.trainer) throw Error("ERR_INVALID_ARG", std::string(a.fn) + ": the trainer was disposed");
  return h.trainer;
}

}  // namespace

// options.adapter: { type: 'lora' | 'dora', r, alpha, dropout, seed, targetModules: string[] } (absent or
// type 'none': full fine-tuning). lib/train/config/validate.ts validates the same fields with friendlier messages.
AdapterSpec adapter_spec(const Args& a, size_t i) {
  AdapterSpec spec;
  if (!a.has(i)) return spec;
  Napi::Object o = a.object(i, "options");
  Napi::Value av = o.Get("adapter");
  if (av.IsUndefined() || av.IsNull()) return spec;
  if (!av.IsObject()) a.fail(i, "(options.adapter) must be an object");
  Napi::Object ad = av.As<Napi::Object>();
  Napi::Value tv = ad.Get("type");
  const std::string type = tv.IsString() ? tv.As<Napi::String>().Utf8Value() : "";
  if (type == "none") return spec;
  if (type == "lora")
    spec.kind = AdapterSpec::Kind::LoRA;
  else if (type == "dora")
    spec.kind = AdapterSpec::Kind::DoRA;
  else
    a.fail(i, "(options.adapter.type) must be 'none', 'lora' or 'dora'");
  auto number = [&](const char* name, double lo, double hi, bool integer) {
    Napi::Value v = ad.Get(name);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!(d >= lo && d <= hi) || (integer && d != std::floor(d)))
      a.fail(i, std::string("(options.adapter.") + name + ") must be " + (integer ? "an integer" : "a number") +
                    " in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return d;
  };
  spec.rank = (int)number("r", 1, 65536, true);
  spec.alpha = number("alpha", 1e-9, 1e9, false);
  spec.dropout = number("dropout", 0, 0.99, false);
  spec.seed = (uint64_t)number("seed", 0, 9007199254740991.0, true);
  Napi::Value mv = ad.Get("targetModules");
  if (!mv.IsArray() || mv.As<Napi::Array>().Length() == 0)
    a.fail(i, "(options.adapter.targetModules) must be a non-empty array of projection names");
  Napi::Array mods = mv.As<Napi::Array>();
  for (uint32_t k = 0; k < mods.Length(); ++k) {
    Napi::Value m = mods.Get(k);
    const std::string name = m.IsString() ? m.As<Napi::String>().Utf8Value() : "";
    if (model::projection_index(name.c_str()) < 0) {
      std::string all;
      for (const char* p : model::kProjections) all += (all.empty() ? "" : ", ") + std::string(p);
      a.fail(i, "(options.adapter.targetModules[" + std::to_string(k) + "]) must be one of " + all);
    }
    if (std::find(spec.targets.begin(), spec.targets.end(), name) == spec.targets.end()) spec.targets.push_back(name);
  }
  return spec;
}

namespace {

Napi::Value trainer_create(const Napi::CallbackInfo& info) {
  Args a{info, "trainerCreate"};
  auto backend = backend_from_handle(a, 0);
  const AdapterSpec spec = adapter_spec(a, 1);
  bool recompute = false;
  if (a.has(1)) {
    Napi::Value rv = a.object(1, "options").Get("activationRecomputation");
    if (!rv.IsUndefined() && !rv.IsBoolean()) a.fail(1, "(options.activationRecomputation) must be a boolean");
    recompute = rv.IsBoolean() && rv.As<Napi::Boolean>().Value();
  }
  std::shared_ptr<Trainer> trainer = make_trainer(std::move(backend), spec);
  if (recompute) trainer->set_activation_recomputation(true);
  auto* h = new TrainerHolder{std::move(trainer)};
  return Napi::External<TrainerHolder>::New(info.Env(), h, [](Napi::Env, TrainerHolder* p) { delete p; });
}

// trainerSetAdaptersEnabled(handle, enabled): adapters off = the frozen base (the KL reference policy).
Napi::Value trainer_set_adapters_enabled(const Napi::CallbackInfo& info) {
  Args a{info, "trainerSetAdaptersEnabled"};
  auto t = trainer_of(a, 0);
  t->set_adapters_enabled(a.boolean(1, "enabled"));
  return info.Env().Undefined();
}

// Sequence lengths (argument i, at least one, each positive) into `out`; returns their sum.
int64_t sequence_counts(const Args& a, size_t i, const Napi::Int32Array& counts, std::vector<int>& out) {
  if (counts.ElementLength() == 0) a.fail(i, "(counts) must hold at least one sequence");
  int64_t total = 0;
  for (size_t k = 0; k < counts.ElementLength(); ++k) {
    if (counts[k] <= 0) a.fail(i, "(counts) entries must be positive");
    out.push_back(counts[k]);
    total += counts[k];
  }
  return total;
}

class TrainStepJob : public AsyncJob {
 public:
  TrainStepJob(Napi::Env env, std::shared_ptr<Trainer> t) : AsyncJob(env), trainer_(std::move(t)) {}
  std::vector<int> counts;
  const int32_t* tokens = nullptr;
  const float* weights = nullptr;
  size_t total = 0;

 protected:
  void Run() override {
    logp_.resize(total);
    loss_ = trainer_->step(counts, tokens, weights, logp_.data(), cancel);
  }
  Napi::Value Result(Napi::Env env) override {
    auto lp = Napi::Float32Array::New(env, logp_.size());
    std::memcpy(lp.Data(), logp_.data(), logp_.size() * sizeof(float));
    Napi::Object o = Napi::Object::New(env);
    o.Set("logp", lp);
    o.Set("loss", loss_);
    return o;
  }

 private:
  std::shared_ptr<Trainer> trainer_;
  std::vector<float> logp_;
  double loss_ = 0;
};

Napi::Value trainer_step(const Napi::CallbackInfo& info) {
  Args a{info, "trainerStep"};
  auto t = trainer_of(a, 0);
  auto counts = a.typed<int32_t>(1, "counts");
  auto tokens = a.typed<int32_t>(2, "tokens");
  auto weights = a.typed<float>(3, "weights");
  auto job = std::make_unique<TrainStepJob>(info.Env(), t);
  const int64_t total = sequence_counts(a, 1, counts, job->counts);
  if ((int64_t)tokens.ElementLength() != total) a.fail(2, "(tokens) must hold sum(counts) ids");
  if ((int64_t)weights.ElementLength() != total) a.fail(3, "(weights) must hold one weight per token (sum(counts))");
  job->tokens = job->input(tokens);  // copies: see AsyncJob
  job->weights = job->input(weights);
  job->total = (size_t)total;
  job->set_cancel(a, 4);
  return AsyncJob::queue(std::move(job));
}

class ForwardJob : public AsyncJob {
 public:
  ForwardJob(Napi::Env env, std::shared_ptr<Trainer> t) : AsyncJob(env), trainer_(std::move(t)) {}
  std::vector<int> counts;
  const int32_t* tokens = nullptr;
  size_t total = 0;

 protected:
  void Run() override {
    logp_.resize(total);
    trainer_->forward(counts, tokens, logp_.data(), cancel);
  }
  Napi::Value Result(Napi::Env env) override {
    auto lp = Napi::Float32Array::New(env, logp_.size());
    std::memcpy(lp.Data(), logp_.data(), logp_.size() * sizeof(float));
    return lp;
  }

 private:
  std::shared_ptr<Trainer> trainer_;
  std::vector<float> logp_;
};

Napi::Value trainer_forward(const Napi::CallbackInfo& info) {
  Args a{info, "trainerForward"};
  auto t = trainer_of(a, 0);
  auto counts = a.typed<int32_t>(1, "counts");
  auto tokens = a.typed<int32_t>(2, "tokens");
  auto job = std::make_unique<ForwardJob>(info.Env(), t);
  const int64_t total = sequence_counts(a, 1, counts, job->counts);
  if ((int64_t)tokens.ElementLength() != total) a.fail(2, "(tokens) must hold sum(counts) ids");
  job->tokens = job->input(tokens);  // a copy: see AsyncJob
  job->total = (size_t)total;
  job->set_cancel(a, 3);
  return AsyncJob::queue(std::move(job));
}

class BackwardJob : public AsyncJob {
 public:
  BackwardJob(Napi::Env env, std::shared_ptr<Trainer> t) : AsyncJob(env), trainer_(std::move(t)) {}
  const float* weights = nullptr;
  size_t total = 0;

 protected:
  void Run() override { loss_ = trainer_->backward(weights, total, cancel); }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, loss_); }

 private:
  std::shared_ptr<Trainer> trainer_;
  double loss_ = 0;
};

Napi::Value trainer_backward(const Napi::CallbackInfo& info) {
  Args a{info, "trainerBackward"};
  auto t = trainer_of(a, 0);
  auto weights = a.typed<float>(1, "weights");
  auto job = std::make_unique<BackwardJob>(info.Env(), t);
  job->weights = job->input(weights);  // a copy: see AsyncJob
  job->total = weights.ElementLength();
  job->set_cancel(a, 2);
  return AsyncJob::queue(std::move(job));
}

class AdamWJob : public AsyncJob {
 public:
  AdamWJob(Napi::Env env, std::shared_ptr<Trainer> t, AdamWOptions o)
      : AsyncJob(env), trainer_(std::move(t)), opts_(o) {}

 protected:
  void Run() override { norm_ = trainer_->apply_adamw(opts_); }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, norm_); }

 private:
  std::shared_ptr<Trainer> trainer_;
  AdamWOptions opts_;
  double norm_ = 0;
};

Napi::Value trainer_apply_adamw(const Napi::CallbackInfo& info) {
  Args a{info, "trainerApplyAdamW"};
  auto t = trainer_of(a, 0);
  Napi::Object o = a.object(1, "options");
  auto field = [&](const char* name, double lo, double hi, bool inf_ok) {
    Napi::Value v = o.Get(name);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!(d >= lo && d <= hi) || (!inf_ok && !std::isfinite(d)))
      a.fail(1, std::string("(options.") + name + ") must be a number in [" + std::to_string(lo) + ", " +
                    std::to_string(hi) + "]");
    return d;
  };
  AdamWOptions opts;
  opts.lr = field("lr", 0, 1e3, false);
  opts.beta1 = field("beta1", 0, 0.999999999, false);
  opts.beta2 = field("beta2", 0, 0.999999999, false);
  opts.eps = field("eps", 0, 1, false);
  opts.weight_decay = field("weightDecay", 0, 1e3, false);
  opts.max_grad_norm = field("maxGradNorm", 0, INFINITY, true);
  auto job = std::make_unique<AdamWJob>(info.Env(), t, opts);
  return AsyncJob::queue(std::move(job));
}

// { name, shape } of one trainer tensor plus a Float32Array copy of each requested array (JS name, source).
Napi::Object tensor_object(Napi::Env env, const TrainTensor& t,
                           std::initializer_list<std::pair<const char*, const std::vector<float>*>> arrays) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", t.name);
  Napi::Array shape = Napi::Array::New(env, t.shape.size());
  for (size_t j = 0; j < t.shape.size(); ++j) shape.Set(j, (double)t.shape[j]);
  o.Set("shape", shape);
  for (const auto& [key, src] : arrays) {
    auto d = Napi::Float32Array::New(env, src->size());
    std::memcpy(d.Data(), src->data(), src->size() * sizeof(float));
    o.Set(key, d);
  }
  return o;
}

// trainerGradients(handle) -> [{ name, shape, grad: Float32Array }]: copies of the accumulated gradients.
Napi::Value trainer_gradients(const Napi::CallbackInfo& info) {
  Args a{info, "trainerGradients"};
  auto t = trainer_of(a, 0);
  const auto& ts = t->tensors();
  Napi::Array out = Napi::Array::New(info.Env(), ts.size());
  for (size_t i = 0; i < ts.size(); ++i) out.Set(i, tensor_object(info.Env(), ts[i], {{"grad", &ts[i].grad}}));
  return out;
}

// trainerParameters(handle) -> [{ name, shape, data: Float32Array, decay }]: copies of the master weights.
Napi::Value trainer_parameters(const Napi::CallbackInfo& info) {
  Args a{info, "trainerParameters"};
  auto t = trainer_of(a, 0);
  const auto& ts = t->tensors();
  Napi::Array out = Napi::Array::New(info.Env(), ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    Napi::Object o = tensor_object(info.Env(), ts[i], {{"data", ts[i].param}});
    o.Set("decay", ts[i].decay);
    out.Set(i, o);
  }
  return out;
}

// trainerState(handle) -> { stepsTaken, tensors: [{ name, shape, data, expAvg, expAvgSq, decay }] }.
Napi::Value trainer_state(const Napi::CallbackInfo& info) {
  Args a{info, "trainerState"};
  auto t = trainer_of(a, 0);
  t->gather_moments();  // ZeRO-1: every rank's shard (a collective); no-op otherwise
  struct Release {
    Trainer* t;
    ~Release() { t->release_moments(); }
  } release{t.get()};
  const auto& ts = t->tensors();
  Napi::Array list = Napi::Array::New(info.Env(), ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    Napi::Object o = tensor_object(
        info.Env(), ts[i], {{"data", ts[i].param}, {"expAvg", &ts[i].exp_avg}, {"expAvgSq", &ts[i].exp_avg_sq}});
    o.Set("decay", ts[i].decay);
    list.Set(i, o);
  }
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("stepsTaken", (double)t->steps_taken());
  out.Set("tensors", list);
  return out;
}

// Every named tensor must exist and every array given must have the tensor's size: checked before anything
// changes, so a bad state leaves the trainer as it was.
Napi::Value trainer_set_state(const Napi::CallbackInfo& info) {
  Args a{info, "trainerSetState"};
  auto t = trainer_of(a, 0);
  Napi::Object state = a.object(1, "state");
  const auto& ts = t->tensors();
  int64_t steps = -1;
  Napi::Value sv = state.Get("stepsTaken");
  if (!sv.IsUndefined()) {
    double d = sv.IsNumber() ? sv.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= 9e15) || d != std::floor(d)) a.fail(1, "(state.stepsTaken) must be a non-negative integer");
    steps = (int64_t)d;
  }
  Napi::Value lv = state.Get("tensors");
  if (!lv.IsArray()) a.fail(1, "(state.tensors) must be an array");
  Napi::Array list = lv.As<Napi::Array>();
  std::vector<Trainer::TensorUpdate> updates;
  for (uint32_t i = 0; i < list.Length(); ++i) {
    Napi::Value ev = list.Get(i);
    if (!ev.IsObject()) a.fail(1, "(state.tensors[" + std::to_string(i) + "]) must be an object");
    Napi::Object e = ev.As<Napi::Object>();
    Napi::Value nv = e.Get("name");
    std::string name = nv.IsString() ? nv.As<Napi::String>().Utf8Value() : "";
    size_t index = ts.size();
    for (size_t k = 0; k < ts.size(); ++k)
      if (ts[k].name == name) index = k;
    if (index == ts.size())
      a.fail(1, "(state.tensors[" + std::to_string(i) + "].name) is not a parameter of this model: " + name);
    auto array = [&](const char* field) -> const float* {
      Napi::Value v = e.Get(field);
      if (v.IsUndefined()) return nullptr;
      if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        a.fail(1, "(state.tensors[" + std::to_string(i) + "]." + field + ") must be a Float32Array");
      auto f = v.As<Napi::Float32Array>();
      if (f.ElementLength() != ts[index].grad.size())
        a.fail(1, "(state.tensors[" + std::to_string(i) + "]." + field + ") of " + name + " must hold " +
                      std::to_string(ts[index].grad.size()) + " values, got " + std::to_string(f.ElementLength()));
      return f.Data();
    };
    updates.push_back({index, array("data"), array("expAvg"), array("expAvgSq")});
  }
  t->set_tensors(updates, steps);
  return info.Env().Undefined();
}

// trainerMergedWeight(handle, i) -> { name, shape, data } of adapted module i, or undefined past the last one.
Napi::Value trainer_merged_weight(const Napi::CallbackInfo& info) {
  Args a{info, "trainerMergedWeight"};
  auto t = trainer_of(a, 0);
  const int64_t i = a.integer(1, "index", 0, 1ll << 40);
  if ((size_t)i >= t->adapted_modules()) return info.Env().Undefined();
  std::vector<float> data;
  std::vector<int64_t> shape;
  const std::string name = t->merged_weight((size_t)i, data, shape);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("name", name);
  Napi::Array sh = Napi::Array::New(info.Env(), shape.size());
  for (size_t j = 0; j < shape.size(); ++j) sh.Set(j, (double)shape[j]);
  o.Set("shape", sh);
  auto d = Napi::Float32Array::New(info.Env(), data.size());
  std::memcpy(d.Data(), data.data(), data.size() * sizeof(float));
  o.Set("data", d);
  return o;
}

Napi::Value trainer_zero_grad(const Napi::CallbackInfo& info) {
  Args a{info, "trainerZeroGrad"};
  trainer_of(a, 0)->zero_grad();
  return info.Env().Undefined();
}

Napi::Value trainer_dispose(const Napi::CallbackInfo& info) {
  Args a{info, "trainerDispose"};
  Napi::Value v = a.at(0);
  if (!v.IsExternal()) a.fail(0, "(trainer) must be a trainer handle");
  v.As<Napi::External<TrainerHolder>>().Data()->trainer.reset();  // running jobs hold their own reference
  return info.Env().Undefined();
}

}  // namespace

Napi::Value trainer_reduce_gradients(const Napi::CallbackInfo& info) {
  Args a{info, "trainerReduceGradients"};
  auto t = trainer_of(a, 0);
  t->reduce_gradients([](float* buf, int64_t n) { mpi::allreduce_sum_identical(buf, n); });
  return info.Env().Undefined();
}

Napi::Value trainer_init_nccl(const Napi::CallbackInfo& info) {
  Args a{info, "trainerInitNccl"};
  auto t = trainer_of(a, 0);
  Napi::Value v = a.at(1);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
      v.As<Napi::Uint8Array>().ElementLength() != 128)
    a.fail(1, "(uniqueId) must be a Uint8Array of 128 bytes (ncclUniqueId)");
  const int size = (int)a.integer(3, "size", 1, 1 << 20);
  const int rank = (int)a.integer(2, "rank", 0, size - 1);
  t->init_nccl(v.As<Napi::Uint8Array>().Data(), rank, size);
  return info.Env().Undefined();
}

Napi::Value trainer_set_forward_index(const Napi::CallbackInfo& info) {
  Args a{info, "trainerSetForwardIndex"};
  auto t = trainer_of(a, 0);
  t->set_forward_index((int)a.integer(1, "index", 0, 1 << 30));
  return info.Env().Undefined();
}

Napi::Value trainer_set_zero1(const Napi::CallbackInfo& info) {
  Args a{info, "trainerSetZero1"};
  auto t = trainer_of(a, 0);
  t->set_zero1(a.boolean(1, "on"));
  return info.Env().Undefined();
}

RECODE_EXPORT("trainerReduceGradients", trainer_reduce_gradients);
RECODE_EXPORT("trainerSetZero1", trainer_set_zero1);
RECODE_EXPORT("trainerSetForwardIndex", trainer_set_forward_index);
RECODE_EXPORT("trainerInitNccl", trainer_init_nccl);
RECODE_EXPORT("trainerCreate", trainer_create);
RECODE_EXPORT("trainerStep", trainer_step);
RECODE_EXPORT("trainerForward", trainer_forward);
RECODE_EXPORT("trainerBackward", trainer_backward);
RECODE_EXPORT("trainerApplyAdamW", trainer_apply_adamw);
RECODE_EXPORT("trainerGradients", trainer_gradients);
RECODE_EXPORT("trainerParameters", trainer_parameters);
RECODE_EXPORT("trainerZeroGrad", trainer_zero_grad);
RECODE_EXPORT("trainerState", trainer_state);
RECODE_EXPORT("trainerSetState", trainer_set_state);
RECODE_EXPORT("trainerDispose", trainer_dispose);
RECODE_EXPORT("trainerSetAdaptersEnabled", trainer_set_adapters_enabled);
RECODE_EXPORT("trainerMergedWeight", trainer_merged_weight);

}  // namespace recode::model
