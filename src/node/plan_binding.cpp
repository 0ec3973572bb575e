// JavaScript surface of the memory plan (lib/model/plan.ts wraps it):
//   memoryPlan(config, { device: 'counting' | 'emulated' | 'cuda', files?, bf16, slots, context, prefillChunk,
//              promptTokens, completionTokens, microRows, referencePass, activationRecomputation, adapter? })
//     -> { generation: { peakBytes, parts }, training: { peakBytes, parts } }   (parts: bytes by category;
//        counting device only)
//   deviceMemoryStats(device, resetPeak?) -> { currentBytes, peakBytes }  (what device_alloc holds)
#include "model/memory_plan.h"
#include "node/model_handle.h"

namespace recode::model {
namespace {

Device plan_device(const Args& a, size_t i, const std::string& d) {
  if (d == "counting") return Device::Counting;
  if (d == "emulated") return Device::Emulated;
  if (d == "cuda") return Device::CUDA;
  a.fail(i, "(device) must be 'counting', 'emulated' or 'cuda', got '" + d + "'");
}

Napi::Object phase_object(Napi::Env env, const PlanPhase& p) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("peakBytes", (double)p.peak);
  Napi::Object parts = Napi::Object::New(env);
  for (int c = 0; c < kMemCategories; ++c) parts.Set(mem_category_name((MemCategory)c), (double)p.parts[c]);
  o.Set("parts", parts);
  return o;
}

Napi::Value memory_plan(const Napi::CallbackInfo& info) {
  Args a{info, "memoryPlan"};
  PlanWorkload w;
  w.cfg = model_config_arg(a);
  Options o(a, 1);
  Napi::Value dv = o.get("device");
  if (!dv.IsString()) o.fail("device", "must be 'counting', 'emulated' or 'cuda'");
  const Device device = plan_device(a, 1, dv.As<Napi::String>().Utf8Value());
  auto flag = [&](const char* name) {
    Napi::Value v = o.get(name);
    if (!v.IsBoolean()) o.fail(name, "must be a boolean");
    return v.As<Napi::Boolean>().Value();
  };
  w.bf16 = flag("bf16");
  w.slots = (int)o.integer("slots", 1, 4096);
  w.context = (int)o.integer("context", 2, 1 << 22);
  w.prefill_chunk = (int)o.integer("prefillChunk", 1, 1 << 22);
  w.prompt_tokens = (int)o.integer("promptTokens", 1, 1 << 22);
  w.completion_tokens = (int)o.integer("completionTokens", 1, 1 << 22);
  w.micro_rows = (int)o.integer("microRows", 1, 1 << 20);
  w.reference_pass = flag("referencePass");
  w.recompute = flag("activationRecomputation");
  w.adapter = adapter_spec(a, 1);
  std::unique_ptr<WeightStore> weights;
  if (o.has("files")) {
    Napi::Value fv = o.get("files");
    if (!fv.IsArray()) o.fail("files", "must be an array of safetensors paths");
    Napi::Array fa = fv.As<Napi::Array>();
    std::vector<std::string> files;
    for (uint32_t k = 0; k < fa.Length(); ++k) {
      Napi::Value f = fa.Get(k);
      if (!f.IsString()) o.fail("files", "must be an array of safetensors paths");
      files.push_back(f.As<Napi::String>().Utf8Value());
    }
    weights = std::make_unique<WeightStore>(files);
  }
  const PlanResult r = run_plan_workload(device, w, weights.get());
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("generation", phase_object(env, r.generation));
  out.Set("training", phase_object(env, r.training));
  return out;
}

Napi::Value device_memory_stats(const Napi::CallbackInfo& info) {
  Args a{info, "deviceMemoryStats"};
  const Device device = plan_device(a, 0, a.string(0, "device"));
  const bool reset = a.has(1) && a.boolean(1, "resetPeak");
  Kernels kern(device);
  size_t current = 0, peak = 0;
  char err[512] = {0};
  check_kernel_status(kern.device_memory_stats(&current, &peak, reset ? 1 : 0, err, sizeof err), "device_memory_stats",
                      err);
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("currentBytes", (double)current);
  out.Set("peakBytes", (double)peak);
  return out;
}

}  // namespace

RECODE_EXPORT("memoryPlan", memory_plan);
RECODE_EXPORT("deviceMemoryStats", device_memory_stats);

}  // namespace recode::model
