#include "device/cuda_loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "core/error.h"
#include "recode_device.h"

namespace recode::cuda {
namespace {

void* g_handle = nullptr;

std::string addon_directory() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&addon_directory), &info) && info.dli_fname) {
    std::string path = info.dli_fname;
    auto slash = path.rfind('/');
    if (slash != std::string::npos) return path.substr(0, slash);
  }
  return ".";
}

Status probe() {
  Status s;
  const char* device = std::getenv("RECODE_DEVICE");
  if (device && std::string(device) == "cpu") {
    s.error = "CUDA disabled by RECODE_DEVICE=cpu";
    return s;
  }
  const char* override_path = std::getenv("RECODE_CUDA_LIBRARY");
  s.library_path = override_path ? override_path : addon_directory() + "/librecode_cuda.so";
  g_handle = dlopen(s.library_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!g_handle) {
    const char* why = dlerror();
    s.error = "the CUDA library could not be loaded (" + std::string(why ? why : "unknown reason") +
              "); this build or prebuild has no CUDA support, or it was built without nvcc";
    return s;
  }
  s.library_loaded = true;
  auto query = reinterpret_cast<decltype(&recode_cuda_query)>(dlsym(g_handle, "recode_cuda_query"));
  if (!query) {
    s.error = "the CUDA library at " + s.library_path + " lacks recode_cuda_query (mismatched build)";
    return s;
  }
  std::string json(16384, '\0');
  char err[512] = {0};
  int count = 0;
  int rc = query(json.data(), json.size(), &count, err, sizeof err);
  json.resize(json.find('\0') == std::string::npos ? json.size() : json.find('\0'));
  s.info_json = json;
  s.device_count = count;
  if (rc != 0) {
    s.error = err;
  } else if (count == 0) {
    s.error = "the CUDA driver reports no devices";
  }
  return s;
}

}  // namespace

const Status& status() {
  static Status s = probe();
  return s;
}

bool available() { return status().library_loaded && status().device_count > 0 && status().error.empty(); }

void* symbol(const char* name) {
  if (!status().library_loaded) return nullptr;
  return dlsym(g_handle, name);
}

void* require_symbol(const char* name) {
  if (!available()) throw Error("ERR_CUDA_UNAVAILABLE", "device 'cuda' requested but unavailable: " + status().error);
  std::string full = std::string("recode_cuda_") + name;
  void* p = symbol(full.c_str());
  if (!p) throw Error("ERR_CUDA_UNAVAILABLE", "the CUDA library lacks " + full + " (mismatched build)");
  return p;
}

}  // namespace recode::cuda
