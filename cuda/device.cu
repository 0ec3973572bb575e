// Device discovery for `recode doctor` and backend selection. Host code only (no kernels), so it has no
// emulated twin. With the CUDA runtime linked statically this loads and answers without a driver: the
// runtime reports cudaErrorInsufficientDriver or cudaErrorNoDevice instead of crashing.
#include "common.cuh"
#include "recode_device.h"

#include <string>

extern "C" int recode_cuda_query(char* json, size_t json_len, int* device_count, char* err, size_t err_len) {
  *device_count = 0;
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  std::string out = "{\"driverVersion\":" + std::to_string(driver) + ",\"runtimeVersion\":" + std::to_string(runtime);
  int count = 0;
  cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    out += ",\"devices\":[]}";
    snprintf(json, json_len, "%s", out.c_str());
    const char* hint =
        rc == cudaErrorInsufficientDriver
            ? (driver == 0 ? " (no NVIDIA driver is installed or loaded)"
                           : " (the driver is older than this build's CUDA runtime; CUDA 13 needs driver 580 or newer)")
        : rc == cudaErrorNoDevice ? " (no CUDA-capable device is visible; check CUDA_VISIBLE_DEVICES)"
                                  : "";
    snprintf(err, err_len, "cudaGetDeviceCount failed: %s%s", cudaGetErrorString(rc), hint);
    return (int)rc;
  }
  out += ",\"devices\":[";
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    if (i) out += ",";
    std::string name = p.name;
    for (auto& c : name)
      if (c == '"' || c == '\\') c = ' ';
    out += "{\"index\":" + std::to_string(i) + ",\"name\":\"" + name + "\",\"computeCapability\":\"" +
           std::to_string(p.major) + "." + std::to_string(p.minor) +
           "\",\"memoryBytes\":" + std::to_string((unsigned long long)p.totalGlobalMem) +
           ",\"multiprocessors\":" + std::to_string(p.multiProcessorCount) + "}";
  }
  out += "]}";
  snprintf(json, json_len, "%s", out.c_str());
  *device_count = count;
  return 0;
}
