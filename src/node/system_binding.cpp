// Machine facts for `recode doctor` and the knobs tests use to cover every code path.
#include <thread>

#include "core/cpu_features.h"
#include "device/cuda_loader.h"
#include "node/napi_util.h"
#include "core/parallel.h"

namespace recode {
namespace {

Napi::Value system_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("cpuModel", cpu_model_name());
  o.Set("hardwareThreads", (double)std::thread::hardware_concurrency());
  o.Set("threads", num_threads());
  o.Set("simdDetected", simd_level_name(detected_simd_level()));
  o.Set("simdActive", simd_level_name(simd_level()));
  const cuda::Status& s = cuda::status();
  Napi::Object c = Napi::Object::New(env);
  c.Set("libraryLoaded", s.library_loaded);
  c.Set("libraryPath", s.library_path);
  c.Set("available", cuda::available());
  c.Set("deviceCount", s.device_count);
  c.Set("reason", s.error);
  c.Set("infoJson", s.info_json);
  o.Set("cuda", c);
#if defined(__VERSION__)
  o.Set("compiler", __VERSION__);
#endif
  return o;
}

Napi::Value set_threads(const Napi::CallbackInfo& info) {
  Args a{info, "setNumThreads"};
  set_num_threads((int)a.integer(0, "threads", 1, 1024));
  return Napi::Number::New(info.Env(), num_threads());
}

Napi::Value set_simd(const Napi::CallbackInfo& info) {
  Args a{info, "setSimdLevel"};
  std::string level = a.string(0, "level");
  if (level == "baseline")
    set_simd_level(SimdLevel::Baseline);
  else if (level == "avx2" || level == "auto")
    set_simd_level(SimdLevel::AVX2);
  else
    a.fail(0, "(level) must be 'baseline', 'avx2' or 'auto'");
  return Napi::String::New(info.Env(), simd_level_name(simd_level()));
}

}  // namespace

RECODE_EXPORT("systemInfo", system_info);
RECODE_EXPORT("setNumThreads", set_threads);
RECODE_EXPORT("setSimdLevel", set_simd);

}  // namespace recode
