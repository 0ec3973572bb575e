// Addon entry: installs every function that binding files registered with RECODE_EXPORT.
#include <napi.h>

#include "napi_util.h"

namespace {

Napi::Value call_registered(const Napi::CallbackInfo& info) {
  auto fn = reinterpret_cast<recode::ExportFn>(info.Data());
  return recode::guard(info, fn);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  for (const auto& entry : recode::export_registry()) {
    exports.Set(entry.name, Napi::Function::New(env, call_registered, entry.name, reinterpret_cast<void*>(entry.fn)));
  }
  return exports;
}

}  // namespace

NODE_API_MODULE(recode, Init)
