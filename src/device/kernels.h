// The kernel table: every CUDA entry point of cuda/recode_kernels.h as a function pointer, for one device.
// Device 'cuda' resolves recode_cuda_<op> in librecode_cuda.so (a real GPU); 'emulated' points at recode_emu_<op>,
// the same kernel source compiled through the SIMT emulation, so CI runs every caller's code path without a GPU.
// The table is generated from the family headers' X-macros: there is no hand-written list to fall out of step,
// and each pointer has exactly the declared type, so a call with the wrong arguments does not compile.
#pragma once

#include <string>

#include "core/error.h"
#include "recode_kernels.h"

namespace recode {

// Where an operation runs: the CPU code (reference and fast paths), librecode_cuda.so, its emulated twin, or the
// counting device of `recode plan` (src/device/memory_count.h: allocations counted, nothing computed).
enum class Device { CPU, CUDA, Emulated, Counting };

const char* device_name(Device d);

struct Kernels {
#define RECODE_KERNEL_POINTER(name, params) int(*name) params = nullptr;
  RECODE_KERNEL_OPS(RECODE_KERNEL_POINTER)
#undef RECODE_KERNEL_POINTER

  Kernels() = default;
  // The table of device 'cuda', 'emulated' or 'counting' (a copy of one built once per process). Device 'cuda' throws
  // ERR_CUDA_UNAVAILABLE saying why when the library or a GPU is missing; Device::CPU is a caller's error.
  explicit Kernels(Device d);
};

// Every entry point returns 0 or a non-zero code with a message in err; this turns the latter into an Error.
inline void check_kernel_status(int rc, const char* what, const char* err) {
  if (rc != 0) throw Error("ERR_KERNEL", std::string(what) + " failed: " + err);
}

}  // namespace recode
