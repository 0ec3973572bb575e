// The `device` argument of the bindings: 'cpu' (default when absent), 'cuda' or 'emulated'.
#pragma once

#include <string>

#include "device/kernels.h"
#include "node/napi_util.h"

namespace recode {

inline Device parse_device(const Args& a, size_t i) {
  if (!a.has(i)) return Device::CPU;
  std::string d = a.string(i, "device");
  if (d == "cpu") return Device::CPU;
  if (d == "cuda") return Device::CUDA;
  if (d == "emulated") return Device::Emulated;
  a.fail(i, "(device) must be 'cpu', 'cuda' or 'emulated', got '" + d + "'");
}

}  // namespace recode
