/* C ABI of device discovery (cuda/device.cu): host code only, so it exists in librecode_cuda.so alone (no
 * emulated twin). src/device/cuda_loader.cpp calls it right after dlopen. */
#ifndef RECODE_DEVICE_H
#define RECODE_DEVICE_H

#include "recode_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes {"driverVersion", "runtimeVersion", "devices": [...]} as JSON and the device count; non-zero with a
 * reason in err when no device is usable. */
RECODE_ABI_EXPORT int recode_cuda_query(char* json, size_t json_len, int* device_count, char* err, size_t err_len);
typedef int (*recode_cuda_query_fn)(char* json, size_t json_len, int* device_count, char* err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* RECODE_DEVICE_H */
