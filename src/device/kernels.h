// Selecting a backend for an operation: 'cpu' (reference and fast CPU code), 'cuda' (librecode_cuda.so),
// or 'emulated' (the CUDA kernels run through the SIMT emulation, for tests without a GPU).
#pragma once

#include <string>

#include "device/cuda_loader.h"
#include "node/napi_util.h"

namespace recode {

enum class Device { CPU, CUDA, Emulated };

inline Device parse_device(const Args& a, size_t i) {
  if (!a.has(i)) return Device::CPU;
  std::string d = a.string(i, "device");
  if (d == "cpu") return Device::CPU;
  if (d == "cuda") return Device::CUDA;
  if (d == "emulated") return Device::Emulated;
  a.fail(i, "(device) must be 'cpu', 'cuda' or 'emulated', got '" + d + "'");
}

// Signature shared by every kernel entry point: ... , char* err, size_t err_len) -> int.
inline void check_kernel_status(int rc, const char* what, const char* err) {
  if (rc != 0) throw Error("ERR_KERNEL", std::string(what) + " failed: " + err);
}

// Looks up recode_cuda_<name> (device 'cuda') or returns the emulated entry point.
template <class Fn>
Fn kernel_entry(Device d, const char* name, Fn emulated) {
  if (d == Device::Emulated) return emulated;
  return reinterpret_cast<Fn>(cuda::require_symbol(name));
}

}  // namespace recode
