// The CUDA library (librecode_cuda.so, beside the addon) is optional: it is opened with dlopen on first
// use, so the addon loads and the CPU backend works on machines without it, without a driver or without a
// GPU. Every failure is kept as a sentence for `recode doctor` and for errors that ask for device 'cuda'.
#pragma once

#include <string>

namespace recode::cuda {

struct Status {
  bool library_loaded = false;
  std::string library_path;  // where it was looked for / found
  std::string error;         // why the library or the devices are unavailable ("" when usable)
  int device_count = 0;
  std::string info_json;  // driver, runtime and device details from recode_cuda_query
};

const Status& status();          // probes once
bool available();                // library loaded and at least one device
void* symbol(const char* name);  // nullptr when the library is not loaded or lacks it

// Resolves `recode_cuda_<name>` or throws recode::Error(ERR_CUDA_UNAVAILABLE) saying why.
void* require_symbol(const char* name);

}  // namespace recode::cuda
