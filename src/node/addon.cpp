// Addon entry: installs every function that binding files registered with RECODE_EXPORT.
#include <napi.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "node/napi_util.h"

namespace {

Napi::Value call_registered(const Napi::CallbackInfo& info) {
  auto fn = reinterpret_cast<recode::ExportFn>(info.Data());
  return recode::guard(info, fn);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
#if defined(__GLIBC__)
  // The kernels allocate scratch of a few MB per call (a layer's activations and gradients). glibc serves blocks
  // that large with mmap and unmaps them on free, so every training step paid page faults and zero-fills for all
  // of them again; from the heap, freed blocks are reused.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
#endif
  for (const auto& entry : recode::export_registry()) {
    exports.Set(entry.name, Napi::Function::New(env, call_registered, entry.name, reinterpret_cast<void*>(entry.fn)));
  }
  return exports;
}

}  // namespace

NODE_API_MODULE(recode, Init)
