#include "device/kernels.h"

#include "device/cuda_loader.h"
#include "device/memory_count.h"

namespace recode {

const char* device_name(Device d) {
  return d == Device::CUDA ? "cuda" : d == Device::Emulated ? "emulated" : d == Device::Counting ? "counting" : "cpu";
}

namespace {

Kernels emulated_table() {
  Kernels k;
#define RECODE_KERNEL_EMULATED(name, params) k.name = &recode_emu_##name;
  RECODE_KERNEL_OPS(RECODE_KERNEL_EMULATED)
#undef RECODE_KERNEL_EMULATED
  return k;
}

// Resolves every entry point at once, so a library from another build fails here, naming the missing symbol,
// rather than halfway through a training step.
Kernels cuda_table() {
  Kernels k;
#define RECODE_KERNEL_CUDA(name, params) k.name = reinterpret_cast<decltype(k.name)>(cuda::require_symbol(#name));
  RECODE_KERNEL_OPS(RECODE_KERNEL_CUDA)
#undef RECODE_KERNEL_CUDA
  return k;
}

}  // namespace

Kernels::Kernels(Device d) {
  if (d == Device::Emulated) {
    static const Kernels emulated = emulated_table();
    *this = emulated;
  } else if (d == Device::Counting) {
    static const Kernels counting = counting_table();
    *this = counting;
  } else if (d == Device::CUDA) {
    static const Kernels gpu = cuda_table();  // a throw leaves it unset: the next call tries again
    *this = gpu;
  } else {
    throw Error("ERR_INVALID_ARG", "kernel table: device 'cpu' has no CUDA kernels");
  }
}

}  // namespace recode
