// Bindings for token log-probabilities (src/logprob/logprob.h); each returns a Promise (work on a libuv thread).
// Options objects (the fields of lib/rl/logprob.ts's inputs), then an optional cancel flag:
//   logprobLogits(device, { logits: Float32Array [T*V], positions: T, vocab: V, targets: Int32Array [T],
//                 temperature }, cancel?) -> { logp, entropy, lse } (Float32Array [T] each)
//   logprobLogitsBackward(device, { ...the same, lse, entropy, dlogp, dentropy? }, cancel?)
//     -> Float32Array dlogits [T*V]
//   logprobHidden(device, { hidden [T*H], weight [V*H], positions: T, hiddenSize: H, vocab: V, targets,
//                 temperature }, cancel?) -> { logp, entropy, lse }
//   logprobHiddenBackward(device, { ...the same, lse, entropy, dlogp, dentropy? }, cancel?)
//     -> { dhidden [T*H], dweight [V*H] }
#include <cmath>
#include <functional>
#include <string>

#include "device/kernels.h"
#include "node/device_arg.h"
#include "logprob/logprob.h"
#include "node/napi_util.h"

namespace recode {
namespace {

// A Promise-returning job: `work` runs on the worker thread, the result is the object of `outputs`.
class LogprobJob : public AsyncJob {
 public:
  using AsyncJob::AsyncJob;
  std::function<void()> work;
  std::vector<std::pair<std::string, Napi::Reference<Napi::Float32Array>>> outputs;
  bool single = false;  // resolve to the only output rather than an object

  // A fresh array, unseen by JavaScript until Result(): written in place.
  float* add_output(Napi::Env env, const char* name, size_t n) {
    auto arr = Napi::Float32Array::New(env, n);
    float* p = arr.Data();
    outputs.emplace_back(name, Napi::Persistent(arr));
    return p;
  }

 protected:
  void Run() override {
    cancel.throw_if_requested();
    work();
  }
  Napi::Value Result(Napi::Env env) override {
    if (single) return outputs[0].second.Value();
    Napi::Object o = Napi::Object::New(env);
    for (auto& [name, ref] : outputs) o.Set(name, ref.Value());
    return o;
  }
};

// The options every entry point shares, with copies of the arrays (see AsyncJob).
struct Common {
  Device device;
  int T = 0, V = 0, H = 0;
  const float* logits = nullptr;
  const float* hidden = nullptr;
  const float* weight = nullptr;
  const int32_t* targets = nullptr;
  float temperature = 1.f;
};

const float* floats(const Options& o, LogprobJob* job, const char* name, size_t len) {
  auto arr = o.typed<float>(name);
  if (arr.ElementLength() != len)
    o.fail(name, "must have " + std::to_string(len) + " values, got " + std::to_string(arr.ElementLength()));
  return job->input(arr);
}

void check_size(const Options& o, const char* name, int64_t n) {
  if (n > ((int64_t)1 << 33)) o.fail(name, "gives more than 2^33 elements");
}

Common common(const Args& a, const Options& o, LogprobJob* job, bool hidden) {
  Common c;
  c.device = parse_device(a, 0);
  c.T = (int)o.integer("positions", 1, 1 << 24);
  c.V = (int)o.integer("vocab", 1, 1 << 24);
  if (hidden) {
    c.H = (int)o.integer("hiddenSize", 1, 1 << 20);
    check_size(o, "vocab", (int64_t)c.V * c.H);
    check_size(o, "hiddenSize", (int64_t)c.T * c.H);
    c.hidden = floats(o, job, "hidden", (size_t)c.T * c.H);
    c.weight = floats(o, job, "weight", (size_t)c.V * c.H);
  } else {
    check_size(o, "vocab", (int64_t)c.T * c.V);
    c.logits = floats(o, job, "logits", (size_t)c.T * c.V);
  }
  auto tg = o.typed<int32_t>("targets");
  if ((int64_t)tg.ElementLength() != c.T) o.fail("targets", "must have T = " + std::to_string(c.T) + " entries");
  for (int t = 0; t < c.T; ++t)
    if (tg[t] < 0 || tg[t] >= c.V)
      o.fail("targets", "entry " + std::to_string(t) + " = " + std::to_string(tg[t]) + " is outside [0, " +
                            std::to_string(c.V) + ")");
  c.targets = job->input(tg);
  double t = o.number("temperature");
  if (!(t > 0) || !std::isfinite(t)) o.fail("temperature", "must be a finite number > 0");
  c.temperature = (float)t;
  return c;
}

// The backward passes' saved forward values and upstream gradients.
struct Upstream {
  const float* lse;
  const float* entropy;
  const float* dlogp;
  const float* dentropy;
};

Upstream upstream(const Options& o, LogprobJob* job, int T) {
  Upstream u;
  u.lse = floats(o, job, "lse", T);
  u.entropy = floats(o, job, "entropy", T);
  u.dlogp = floats(o, job, "dlogp", T);
  u.dentropy = o.has("dentropy") ? floats(o, job, "dentropy", T) : nullptr;
  return u;
}

Napi::Value logprob_logits(const Napi::CallbackInfo& info) {
  Args a{info, "logprobLogits"};
  auto job = std::make_unique<LogprobJob>(info.Env());
  Options o(a, 1);
  Common c = common(a, o, job.get(), false);
  job->set_cancel(a, 2);
  float* lp = job->add_output(info.Env(), "logp", c.T);
  float* ent = job->add_output(info.Env(), "entropy", c.T);
  float* lse = job->add_output(info.Env(), "lse", c.T);
  job->work = [=] { logprob::forward_logits_on(c.device, c.logits, c.T, c.V, c.targets, c.temperature, lp, ent, lse); };
  return AsyncJob::queue(std::move(job));
}

Napi::Value logprob_logits_backward(const Napi::CallbackInfo& info) {
  Args a{info, "logprobLogitsBackward"};
  auto job = std::make_unique<LogprobJob>(info.Env());
  Options o(a, 1);
  Common c = common(a, o, job.get(), false);
  Upstream u = upstream(o, job.get(), c.T);
  job->set_cancel(a, 2);
  float* dx = job->add_output(info.Env(), "dlogits", (size_t)c.T * c.V);
  job->single = true;
  job->work = [=] {
    logprob::backward_logits_on(c.device, c.logits, c.T, c.V, c.targets, c.temperature, u.lse, u.entropy, u.dlogp,
                                u.dentropy, dx);
  };
  return AsyncJob::queue(std::move(job));
}

Napi::Value logprob_hidden(const Napi::CallbackInfo& info) {
  Args a{info, "logprobHidden"};
  auto job = std::make_unique<LogprobJob>(info.Env());
  Options o(a, 1);
  Common c = common(a, o, job.get(), true);
  job->set_cancel(a, 2);
  float* lp = job->add_output(info.Env(), "logp", c.T);
  float* ent = job->add_output(info.Env(), "entropy", c.T);
  float* lse = job->add_output(info.Env(), "lse", c.T);
  job->work = [=] {
    logprob::forward_hidden_on(c.device, c.hidden, c.weight, c.T, c.H, c.V, c.targets, c.temperature, lp, ent, lse);
  };
  return AsyncJob::queue(std::move(job));
}

Napi::Value logprob_hidden_backward(const Napi::CallbackInfo& info) {
  Args a{info, "logprobHiddenBackward"};
  auto job = std::make_unique<LogprobJob>(info.Env());
  Options o(a, 1);
  Common c = common(a, o, job.get(), true);
  Upstream u = upstream(o, job.get(), c.T);
  job->set_cancel(a, 2);
  float* dh = job->add_output(info.Env(), "dhidden", (size_t)c.T * c.H);
  float* dw = job->add_output(info.Env(), "dweight", (size_t)c.V * c.H);
  job->work = [=] {
    logprob::backward_hidden_on(c.device, c.hidden, c.weight, c.T, c.H, c.V, c.targets, c.temperature, u.lse, u.entropy,
                                u.dlogp, u.dentropy, dh, dw);
  };
  return AsyncJob::queue(std::move(job));
}

}  // namespace

RECODE_EXPORT("logprobLogits", logprob_logits);
RECODE_EXPORT("logprobLogitsBackward", logprob_logits_backward);
RECODE_EXPORT("logprobHidden", logprob_hidden);
RECODE_EXPORT("logprobHiddenBackward", logprob_hidden_backward);

}  // namespace recode
