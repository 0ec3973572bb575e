// sampleRows(device, { logits, rows, vocab, temperature, topK, topP, minP, seed, rowIds, steps }, cancel?)
//   logits: Float32Array (fp32) or Uint16Array (bf16 bits), rows x vocab; temperature/topP/minP: Float32Array
//   [rows]; topK: Int32Array [rows]; seed: number or BigInt; rowIds, steps: Float64Array [rows] of integers.
//   -> Promise<{ tokens: Int32Array, logprobs: Float32Array, filteredLogprobs: Float32Array }>
//   The work is sampling::sample_rows_on (src/sampling/sampling_device.cpp) on a copy of the logits.
// philoxKat(counter: Uint32Array(4), key: Uint32Array(2)) -> Uint32Array(4): the raw generator, for the
// known-answer test.
#include <cmath>
#include <string>
#include <vector>

#include "device/kernels.h"
#include "node/device_arg.h"
#include "node/napi_util.h"
#include "philox.h"
#include "sampling/sampling.h"

namespace recode {
namespace {

uint64_t seed_arg(const Options& o) {
  Napi::Value v = o.get("seed");
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t s = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) o.fail("seed", "must be a BigInt in [0, 2^64)");
    return s;
  }
  return (uint64_t)o.integer("seed", 0, (int64_t)1 << 53);
}

std::vector<uint64_t> counters_arg(const Options& o, const char* name, int rows) {
  auto arr = o.typed<double>(name);
  if ((int64_t)arr.ElementLength() != rows) o.fail(name, "must have one entry per row");
  std::vector<uint64_t> out(rows);
  for (int r = 0; r < rows; ++r) {
    double d = arr[r];
    if (!(d >= 0 && d <= 9007199254740991.0) || d != std::floor(d))
      o.fail(name, "entry " + std::to_string(r) + " must be an integer in [0, 2^53)");
    out[r] = (uint64_t)d;
  }
  return out;
}

class SampleJob : public AsyncJob {
 public:
  using AsyncJob::AsyncJob;
  Device device = Device::CPU;
  const void* logits = nullptr;  // the job's copy
  bool is_bf16 = false;
  int rows = 0, vocab = 0;
  std::vector<sampling::Params> params;
  uint64_t seed = 0;
  std::vector<uint64_t> row_ids, steps;
  Napi::Reference<Napi::Int32Array> tokens_ref;
  Napi::Reference<Napi::Float32Array> logprobs_ref, filtered_ref;
  int32_t* tokens = nullptr;  // fresh arrays, unseen by JavaScript until Result(): written in place
  float* logprobs = nullptr;
  float* filtered = nullptr;

 protected:
  void Run() override {
    std::vector<sampling::Result> out(rows);
    sampling::sample_rows_on(device, logits, is_bf16, rows, vocab, params.data(), seed, row_ids.data(), steps.data(),
                             out.data(), cancel);
    for (int r = 0; r < rows; ++r) {
      tokens[r] = out[r].token;
      logprobs[r] = out[r].logprob;
      filtered[r] = out[r].filtered_logprob;
    }
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("tokens", tokens_ref.Value());
    o.Set("logprobs", logprobs_ref.Value());
    o.Set("filteredLogprobs", filtered_ref.Value());
    return o;
  }
};

Napi::Value sample_rows(const Napi::CallbackInfo& info) {
  Args a{info, "sampleRows"};
  Napi::Env env = info.Env();
  auto job = std::make_unique<SampleJob>(env);
  job->device = parse_device(a, 0);
  Options o(a, 1);
  Napi::Value lv = o.get("logits");
  if (!lv.IsTypedArray()) o.fail("logits", "must be a Float32Array or a Uint16Array of bf16 bits");
  auto ta = lv.As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_float32_array && ta.TypedArrayType() != napi_uint16_array)
    o.fail("logits", "must be a Float32Array or a Uint16Array of bf16 bits");
  if (is_detached(ta)) o.fail("logits", "is detached (its ArrayBuffer was transferred)");
  job->is_bf16 = ta.TypedArrayType() == napi_uint16_array;
  const int rows = job->rows = (int)o.integer("rows", 1, 1 << 24);
  job->vocab = (int)o.integer("vocab", 1, sampling::kMaxVocab);
  if ((int64_t)ta.ElementLength() != (int64_t)rows * job->vocab)
    o.fail("logits", "must hold rows * vocab = " + std::to_string((int64_t)rows * job->vocab) + " values, got " +
                         std::to_string(ta.ElementLength()));
  auto per_row = [&](auto typed, const char* name) {
    if ((int)typed.ElementLength() != rows) o.fail(name, "must have one entry per row");
    return typed;
  };
  auto temperature = per_row(o.typed<float>("temperature"), "temperature");
  auto top_k = per_row(o.typed<int32_t>("topK"), "topK");
  auto top_p = per_row(o.typed<float>("topP"), "topP");
  auto min_p = per_row(o.typed<float>("minP"), "minP");
  job->params.resize(rows);
  for (int r = 0; r < rows; ++r) {
    job->params[r] = {temperature[r], top_k[r], top_p[r], min_p[r]};
    sampling::check_params(job->params[r], r);
  }
  job->seed = seed_arg(o);
  job->row_ids = counters_arg(o, "rowIds", rows);
  job->steps = counters_arg(o, "steps", rows);
  job->set_cancel(a, 2);
  job->logits = job->is_bf16 ? (const void*)job->input(lv.As<Napi::Uint16Array>())
                             : (const void*)job->input(lv.As<Napi::Float32Array>());
  auto tokens = Napi::Int32Array::New(env, rows);
  auto logprobs = Napi::Float32Array::New(env, rows);
  auto filtered = Napi::Float32Array::New(env, rows);
  job->tokens = tokens.Data();
  job->logprobs = logprobs.Data();
  job->filtered = filtered.Data();
  job->tokens_ref = Napi::Persistent(tokens);
  job->logprobs_ref = Napi::Persistent(logprobs);
  job->filtered_ref = Napi::Persistent(filtered);
  return AsyncJob::queue(std::move(job));
}

Napi::Value philox_kat(const Napi::CallbackInfo& info) {
  Args a{info, "philoxKat"};
  auto c = a.typed<uint32_t>(0, "counter");
  auto k = a.typed<uint32_t>(1, "key");
  if (c.ElementLength() != 4 || k.ElementLength() != 2) a.fail(0, "(counter, key) must have 4 and 2 words");
  philox::U32x4 out = philox::philox4x32_10(philox::U32x4{{c[0], c[1], c[2], c[3]}}, k[0], k[1]);
  auto r = Napi::Uint32Array::New(info.Env(), 4);
  for (int i = 0; i < 4; ++i) r[i] = out.v[i];
  return r;
}

}  // namespace

RECODE_EXPORT("sampleRows", sample_rows);
RECODE_EXPORT("philoxKat", philox_kat);

}  // namespace recode
