// sampleRows(device, logits, rows, vocab, temperature, topK, topP, minP, seed, rowIds, steps, cancel?)
//   logits: Float32Array (fp32) or Uint16Array (bf16 bits), rows x vocab; temperature/topP/minP: Float32Array
//   [rows]; topK: Int32Array [rows]; seed: number or BigInt; rowIds, steps: Float64Array [rows] of integers.
//   -> Promise<{ tokens: Int32Array, logprobs: Float32Array, filteredLogprobs: Float32Array }>
// philoxKat(counter: Uint32Array(4), key: Uint32Array(2)) -> Uint32Array(4): the raw generator, for the
// known-answer test.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "device/kernels.h"
#include "node/device_arg.h"
#include "philox.h"
#include "sampling/sampling.h"
#include "sampling_core.h"

namespace recode {
namespace {

using SampleEntry = decltype(Kernels::sample_rows);

uint64_t seed_arg(const Args& a, size_t i) {
  Napi::Value v = a.at(i);
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t s = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) a.fail(i, "(seed) must be a BigInt in [0, 2^64)");
    return s;
  }
  return (uint64_t)a.integer(i, "seed", 0, (int64_t)1 << 53);
}

std::vector<uint64_t> counters_arg(const Args& a, size_t i, const char* name, int rows) {
  auto arr = a.typed<double>(i, name);
  if ((int64_t)arr.ElementLength() != rows) a.fail(i, std::string("(") + name + ") must have one entry per row");
  std::vector<uint64_t> out(rows);
  for (int r = 0; r < rows; ++r) {
    double d = arr[r];
    if (!(d >= 0 && d <= 9007199254740991.0) || d != std::floor(d))
      a.fail(i, std::string("(") + name + ") entry " + std::to_string(r) + " must be an integer in [0, 2^53)");
    out[r] = (uint64_t)d;
  }
  return out;
}

[[noreturn]] void throw_row(int status, int row, int index) {
  std::string where = "sample: logits row " + std::to_string(row);
  if (status == sampling::kRowNaN) throw Error("ERR_INVALID_ARG", where + " holds NaN at index " + std::to_string(index));
  if (status == sampling::kRowPosInf)
    throw Error("ERR_INVALID_ARG", where + " holds +Infinity at index " + std::to_string(index));
  throw Error("ERR_INVALID_ARG", where + " is entirely -Infinity (no token can be sampled)");
}

class SampleJob : public AsyncJob {
 public:
  using AsyncJob::AsyncJob;
  Device device = Device::CPU;
  const void* logits = nullptr;
  bool is_bf16 = false;
  int rows = 0, vocab = 0;
  std::vector<float> temperature, top_p, min_p;
  std::vector<int> top_k;
  uint64_t seed = 0;
  std::vector<uint64_t> row_ids, steps;
  SampleEntry entry = nullptr;
  Napi::Reference<Napi::Int32Array> tokens_ref;
  Napi::Reference<Napi::Float32Array> logprobs_ref, filtered_ref;
  int32_t* tokens = nullptr;
  float* logprobs = nullptr;
  float* filtered = nullptr;

 protected:
  void Run() override {
    cancel.throw_if_requested();
    if (device == Device::CPU) {
      std::vector<sampling::Params> params(rows);
      for (int r = 0; r < rows; ++r) params[r] = {temperature[r], top_k[r], top_p[r], min_p[r]};
      std::vector<sampling::Result> out(rows);
      const int chunk = 256;  // rows between cancellation checks
      for (int r0 = 0; r0 < rows; r0 += chunk) {
        cancel.throw_if_requested();
        int n = std::min(chunk, rows - r0);
        try {
          if (is_bf16)
            sampling::sample_rows((const bf16*)logits + (size_t)r0 * vocab, n, vocab, params.data() + r0, seed,
                                  row_ids.data() + r0, steps.data() + r0, out.data() + r0);
          else
            sampling::sample_rows((const float*)logits + (size_t)r0 * vocab, n, vocab, params.data() + r0, seed,
                                  row_ids.data() + r0, steps.data() + r0, out.data() + r0);
        } catch (const Error& e) {  // the C++ API numbers rows within the chunk: name the caller's row
          std::string msg = e.what();
          size_t at = msg.find("row ");
          if (r0 > 0 && at != std::string::npos) {
            size_t end = msg.find_first_not_of("0123456789", at + 4);
            int local = std::stoi(msg.substr(at + 4, end - at - 4));
            msg = msg.substr(0, at + 4) + std::to_string(local + r0) + msg.substr(end);
          }
          throw Error(e.code, msg);
        }
      }
      for (int r = 0; r < rows; ++r) {
        tokens[r] = out[r].token;
        logprobs[r] = out[r].logprob;
        filtered[r] = out[r].filtered_logprob;
      }
      return;
    }
    std::vector<int32_t> status(rows), bad(rows);
    char err[512] = {0};
    int rc = entry(logits, is_bf16 ? 1 : 0, rows, vocab, temperature.data(), top_k.data(), top_p.data(), min_p.data(),
                   seed, row_ids.data(), steps.data(), tokens, logprobs, filtered, status.data(), bad.data(), err,
                   sizeof err);
    check_kernel_status(rc, "sample_rows", err);
    for (int r = 0; r < rows; ++r)
      if (status[r] != sampling::kRowOk) throw_row(status[r], r, bad[r]);
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
  Napi::Value lv = a.at(1);
  if (!lv.IsTypedArray()) a.fail(1, "(logits) must be a Float32Array or a Uint16Array of bf16 bits");
  auto ta = lv.As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_float32_array && ta.TypedArrayType() != napi_uint16_array)
    a.fail(1, "(logits) must be a Float32Array or a Uint16Array of bf16 bits");
  job->is_bf16 = ta.TypedArrayType() == napi_uint16_array;
  job->rows = (int)a.integer(2, "rows", 1, 1 << 24);
  job->vocab = (int)a.integer(3, "vocab", 1, sampling::kMaxVocab);
  if ((int64_t)ta.ElementLength() != (int64_t)job->rows * job->vocab)
    a.fail(1, "(logits) must hold rows * vocab = " + std::to_string((int64_t)job->rows * job->vocab) +
                  " values, got " + std::to_string(ta.ElementLength()));
  job->logits = (const uint8_t*)ta.ArrayBuffer().Data() + ta.ByteOffset();
  int rows = job->rows;
  auto per_row_f = [&](size_t i, const char* name) {
    auto arr = a.typed<float>(i, name);
    if ((int)arr.ElementLength() != rows) a.fail(i, std::string("(") + name + ") must have one entry per row");
    return std::vector<float>(arr.Data(), arr.Data() + rows);
  };
  job->temperature = per_row_f(4, "temperature");
  auto k = a.typed<int32_t>(5, "topK");
  if ((int)k.ElementLength() != rows) a.fail(5, "(topK) must have one entry per row");
  job->top_k.assign(k.Data(), k.Data() + rows);
  job->top_p = per_row_f(6, "topP");
  job->min_p = per_row_f(7, "minP");
  for (int r = 0; r < rows; ++r)
    sampling::check_params({job->temperature[r], job->top_k[r], job->top_p[r], job->min_p[r]}, r);
  job->seed = seed_arg(a, 8);
  job->row_ids = counters_arg(a, 9, "rowIds", rows);
  job->steps = counters_arg(a, 10, "steps", rows);
  job->set_cancel(a, 11);
  if (job->device != Device::CPU) job->entry = Kernels(job->device).sample_rows;
  auto tokens = Napi::Int32Array::New(env, job->rows);
  auto logprobs = Napi::Float32Array::New(env, job->rows);
  auto filtered = Napi::Float32Array::New(env, job->rows);
  job->tokens = tokens.Data();
  job->logprobs = logprobs.Data();
  job->filtered = filtered.Data();
  job->tokens_ref = Napi::Persistent(tokens);
  job->logprobs_ref = Napi::Persistent(logprobs);
  job->filtered_ref = Napi::Persistent(filtered);
  job->keep(info[1]);
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
