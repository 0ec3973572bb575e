// Bindings for token log-probabilities (src/logprob/logprob.h); each returns a Promise (work on a libuv thread).
//   logprobLogits(device, logits: Float32Array [T*V], T, V, targets: Int32Array [T], temperature, cancel?)
//     -> { logp, entropy, lse } (Float32Array [T] each)
//   logprobLogitsBackward(device, logits, T, V, targets, temperature, lse, entropy, dlogp, dentropy|null, cancel?)
//     -> Float32Array dlogits [T*V]
//   logprobHidden(device, hidden [T*H], weight [V*H], T, H, V, targets, temperature, cancel?) -> { logp, entropy, lse }
//   logprobHiddenBackward(device, hidden, weight, T, H, V, targets, temperature, lse, entropy, dlogp,
//                         dentropy|null, cancel?) -> { dhidden [T*H], dweight [V*H] }
#include <cmath>
#include <functional>
#include <string>

#include "device/kernels.h"
#include "node/device_arg.h"
#include "logprob/logprob.h"

namespace recode {
namespace {

// A Promise-returning job: `work` runs on the worker thread, the result is the object of `outputs`.
class LogprobJob : public AsyncJob {
 public:
  using AsyncJob::AsyncJob;
  std::function<void()> work;
  std::vector<std::pair<std::string, Napi::Reference<Napi::Float32Array>>> outputs;
  bool single = false;  // resolve to the only output rather than an object

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

struct Common {
  Device device;
  int T, V, H = 0;
  const float* logits = nullptr;
  const float* hidden = nullptr;
  const float* weight = nullptr;
  const int32_t* targets = nullptr;
  float temperature = 1.f;
};

const float* floats(const Args& a, LogprobJob* job, size_t i, const char* name, size_t len) {
  auto arr = a.typed<float>(i, name);
  if (arr.ElementLength() != len)
    a.fail(i, std::string("(") + name + ") must have " + std::to_string(len) + " values, got " + std::to_string(arr.ElementLength()));
  job->keep(arr);
  return arr.Data();
}

const int32_t* targets_arg(const Args& a, LogprobJob* job, size_t i, int T, int V) {
  auto arr = a.typed<int32_t>(i, "targets");
  if ((int64_t)arr.ElementLength() != T) a.fail(i, "(targets) must have T = " + std::to_string(T) + " entries");
  for (int t = 0; t < T; ++t)
    if (arr[t] < 0 || arr[t] >= V)
      a.fail(i, "(targets) entry " + std::to_string(t) + " = " + std::to_string(arr[t]) + " is outside [0, " + std::to_string(V) + ")");
  job->keep(arr);
  return arr.Data();
}

float temperature_arg(const Args& a, size_t i) {
  double t = a.number(i, "temperature");
  if (!(t > 0) || !std::isfinite(t)) a.fail(i, "(temperature) must be a finite number > 0");
  return (float)t;
}

void check_size(const Args& a, size_t i, int64_t n) {
  if (n > ((int64_t)1 << 33)) a.fail(i, "(sizes) give more than 2^33 elements");
}

Napi::Value logprob_logits(const Napi::CallbackInfo& info) {
  Args a{info, "logprobLogits"};
  auto job = std::make_unique<LogprobJob>(info.Env());
  Device d = parse_device(a, 0);
  int T = (int)a.integer(2, "T", 1, 1 << 24), V = (int)a.integer(3, "V", 1, 1 << 24);
  check_size(a, 3, (int64_t)T * V);
  const float* x = floats(a, job.get(), 1, "logits", (size_t)T * V);
  const int32_t* tg = targets_arg(a, job.get(), 4, T, V);
  float temp = temperature_arg(a, 5);
  job->set_cancel(a, 6);
  float* lp = job->add_output(info.Env(), "logp", T);
  float* ent = job->add_output(info.Env(), "entropy", T);
  float* lse = job->add_output(info.Env(), "lse", T);
  auto entry = d == Device::CPU ? nullptr : Kernels(d).logprob_logits_forward;
  job->work = [=] {
    if (!entry) return logprob::forward_logits(x, T, V, tg, temp, lp, ent, lse);
    char err[512] = {0};
    check_kernel_status(entry(x, T, V, tg, temp, lp, ent, lse, err, sizeof err), "logprob_logits_forward", err);
  };
  return AsyncJob::queue(std::move(job));
}

Napi::Value logprob_logits_backward(const Napi::CallbackInfo& info) {
  Args a{info, "logprobLogitsBackward"};
  auto job = std::make_unique<LogprobJob>(info.Env());
  Device d = parse_device(a, 0);
  int T = (int)a.integer(2, "T", 1, 1 << 24), V = (int)a.integer(3, "V", 1, 1 << 24);
  check_size(a, 3, (int64_t)T * V);
  const float* x = floats(a, job.get(), 1, "logits", (size_t)T * V);
  const int32_t* tg = targets_arg(a, job.get(), 4, T, V);
  float temp = temperature_arg(a, 5);
  const float* lse = floats(a, job.get(), 6, "lse", T);
  const float* ent = floats(a, job.get(), 7, "entropy", T);
  const float* dl = floats(a, job.get(), 8, "dlogp", T);
  const float* de = a.has(9) ? floats(a, job.get(), 9, "dentropy", T) : nullptr;
  job->set_cancel(a, 10);
  float* dx = job->add_output(info.Env(), "dlogits", (size_t)T * V);
  job->single = true;
  auto entry = d == Device::CPU ? nullptr : Kernels(d).logprob_logits_backward;
  job->work = [=] {
    if (!entry) return logprob::backward_logits(x, T, V, tg, temp, lse, ent, dl, de, dx);
    char err[512] = {0};
    check_kernel_status(entry(x, T, V, tg, temp, lse, ent, dl, de, dx, err, sizeof err), "logprob_logits_backward", err);
  };
  return AsyncJob::queue(std::move(job));
}

Napi::Value logprob_hidden(const Napi::CallbackInfo& info) {
  Args a{info, "logprobHidden"};
  auto job = std::make_unique<LogprobJob>(info.Env());
  Device d = parse_device(a, 0);
  int T = (int)a.integer(3, "T", 1, 1 << 24), H = (int)a.integer(4, "H", 1, 1 << 20), V = (int)a.integer(5, "V", 1, 1 << 24);
  check_size(a, 5, (int64_t)V * H);
  check_size(a, 4, (int64_t)T * H);
  const float* h = floats(a, job.get(), 1, "hidden", (size_t)T * H);
  const float* w = floats(a, job.get(), 2, "weight", (size_t)V * H);
  const int32_t* tg = targets_arg(a, job.get(), 6, T, V);
  float temp = temperature_arg(a, 7);
  job->set_cancel(a, 8);
  float* lp = job->add_output(info.Env(), "logp", T);
  float* ent = job->add_output(info.Env(), "entropy", T);
  float* lse = job->add_output(info.Env(), "lse", T);
  auto entry = d == Device::CPU ? nullptr : Kernels(d).logprob_hidden_forward;
  job->work = [=] {
    if (!entry) return logprob::forward_hidden(h, w, T, H, V, tg, temp, lp, ent, lse);
    char err[512] = {0};
    check_kernel_status(entry(h, w, T, H, V, tg, temp, lp, ent, lse, err, sizeof err), "logprob_hidden_forward", err);
  };
  return AsyncJob::queue(std::move(job));
}

Napi::Value logprob_hidden_backward(const Napi::CallbackInfo& info) {
  Args a{info, "logprobHiddenBackward"};
  auto job = std::make_unique<LogprobJob>(info.Env());
  Device d = parse_device(a, 0);
  int T = (int)a.integer(3, "T", 1, 1 << 24), H = (int)a.integer(4, "H", 1, 1 << 20), V = (int)a.integer(5, "V", 1, 1 << 24);
  check_size(a, 5, (int64_t)V * H);
  check_size(a, 4, (int64_t)T * H);
  const float* h = floats(a, job.get(), 1, "hidden", (size_t)T * H);
  const float* w = floats(a, job.get(), 2, "weight", (size_t)V * H);
  const int32_t* tg = targets_arg(a, job.get(), 6, T, V);
  float temp = temperature_arg(a, 7);
  const float* lse = floats(a, job.get(), 8, "lse", T);
  const float* ent = floats(a, job.get(), 9, "entropy", T);
  const float* dl = floats(a, job.get(), 10, "dlogp", T);
  const float* de = a.has(11) ? floats(a, job.get(), 11, "dentropy", T) : nullptr;
  job->set_cancel(a, 12);
  float* dh = job->add_output(info.Env(), "dhidden", (size_t)T * H);
  float* dw = job->add_output(info.Env(), "dweight", (size_t)V * H);
  auto entry = d == Device::CPU ? nullptr : Kernels(d).logprob_hidden_backward;
  job->work = [=] {
    if (!entry) return logprob::backward_hidden(h, w, T, H, V, tg, temp, lse, ent, dl, de, dh, dw);
    char err[512] = {0};
    check_kernel_status(entry(h, w, T, H, V, tg, temp, lse, ent, dl, de, dh, dw, err, sizeof err),
                        "logprob_hidden_backward", err);
  };
  return AsyncJob::queue(std::move(job));
}

}  // namespace

RECODE_EXPORT("logprobLogits", logprob_logits);
RECODE_EXPORT("logprobLogitsBackward", logprob_logits_backward);
RECODE_EXPORT("logprobHidden", logprob_hidden);
RECODE_EXPORT("logprobHiddenBackward", logprob_hidden_backward);

}  // namespace recode
