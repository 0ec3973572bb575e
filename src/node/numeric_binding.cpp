// Conversions between float32 and the 16-bit storage types (bf16, fp16) for callers that hold reduced-
// precision tensors in JavaScript (Uint16Array of raw bits), e.g. bf16 logits or weights.
#include "node/napi_util.h"
#include "core/numeric.h"
#include "core/parallel.h"

namespace recode {
namespace {

template <class T, T (*convert)(float)>
Napi::Value from_f32(const Napi::CallbackInfo& info, const char* name) {
  Args a{info, name};
  auto in = a.typed<float>(0, "values");
  size_t n = in.ElementLength();
  auto out = Napi::Uint16Array::New(info.Env(), n);
  const float* src = in.Data();
  uint16_t* dst = out.Data();
  parallel_for((int64_t)n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] = convert(src[i]).bits;
  });
  return out;
}

template <class T, float (*convert)(T)>
Napi::Value to_f32(const Napi::CallbackInfo& info, const char* name) {
  Args a{info, name};
  auto in = a.typed<uint16_t>(0, "bits");
  size_t n = in.ElementLength();
  auto out = Napi::Float32Array::New(info.Env(), n);
  const uint16_t* src = in.Data();
  float* dst = out.Data();
  parallel_for((int64_t)n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] = convert(T{src[i]});
  });
  return out;
}

Napi::Value f32_to_bf16(const Napi::CallbackInfo& info) { return from_f32<bf16, float_to_bf16>(info, "f32ToBf16"); }
Napi::Value bf16_to_f32(const Napi::CallbackInfo& info) { return to_f32<bf16, bf16_to_float>(info, "bf16ToF32"); }
Napi::Value f32_to_f16(const Napi::CallbackInfo& info) { return from_f32<fp16, float_to_fp16>(info, "f32ToF16"); }
Napi::Value f16_to_f32(const Napi::CallbackInfo& info) { return to_f32<fp16, fp16_to_float>(info, "f16ToF32"); }

}  // namespace

RECODE_EXPORT("f32ToBf16", f32_to_bf16);
RECODE_EXPORT("bf16ToF32", bf16_to_f32);
RECODE_EXPORT("f32ToF16", f32_to_f16);
RECODE_EXPORT("f16ToF32", f16_to_f32);

}  // namespace recode
