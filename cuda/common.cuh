// Shared by every kernel file in cuda/. Each .cu file compiles twice:
//   - by nvcc into librecode_cuda.so (RECODE_CUDA_BUILD), its entry points named recode_cuda_<name>;
//   - as host C++ inside the addon through the SIMT emulation (src/simt/simt.h, RECODE_SIMT_EMULATION),
//     its entry points named recode_emu_<name>, so CI runs the same kernels without a GPU.
// Kernel code therefore sticks to what src/simt/simt.h documents, launches with SIMT_LAUNCH and takes
// dynamic shared memory with SIMT_DYNAMIC_SHARED.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "recode_abi.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define RECODE_API(name) extern "C" RECODE_ABI_EXPORT int recode_cuda_##name
#define SIMT_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define SIMT_DYNAMIC_SHARED(type, name)                        \
  extern __shared__ __align__(16) unsigned char name##_raw_[]; \
  type* name = reinterpret_cast<type*>(name##_raw_)
using bf16 = __nv_bfloat16;
using fp16 = __half;
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(fp16 v) { return __half2float(v); }
__device__ __forceinline__ float to_float(float v) { return v; }
// Round to nearest even, as core/numeric.h's float_to_bf16 (the oracle). __float2bfloat16_rn turns every NaN into
// 0x7fff; a NaN keeps its sign and top payload here so that CPU, emulation and GPU agree bit for bit.
__host__ __device__ __forceinline__ bf16 to_bf16(float v) {
  if (v != v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    __nv_bfloat16_raw raw;
    raw.x = (unsigned short)((u >> 16) | 0x40u);
    return bf16(raw);
  }
  return __float2bfloat16_rn(v);
}
// a * b rounded on its own. nvcc fuses `x + a * b` into one FMA on a GPU and the emulation never does; where x and
// a * b nearly cancel, the two differ by far more than a rounding of the result, so sums the CPU oracle rounds
// term by term use this.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
#elif defined(RECODE_SIMT_EMULATION)
#include "simt/simt.h"
#include "core/numeric.h"
#define RECODE_API(name) extern "C" int recode_emu_##name
#define SIMT_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::recode_cuda_detail::emulated_launch((grid), (block), (smem), [=] { kernel(__VA_ARGS__); })
#define SIMT_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::simt::dynamic_shared_memory())
using bf16 = recode::bf16;
using fp16 = recode::fp16;
inline float to_float(bf16 v) { return recode::bf16_to_float(v); }
inline float to_float(fp16 v) { return recode::fp16_to_float(v); }
inline float to_float(float v) { return v; }
inline bf16 to_bf16(float v) { return recode::float_to_bf16(v); }
inline float mul_rn(float a, float b) { return a * b; }
namespace recode_cuda_detail {
// A kernel that faults in emulation throws; the entry point turns that into an error code and message.
inline void emulated_launch(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body) {
  simt::launch(grid, block, smem, body);
}
}  // namespace recode_cuda_detail
#else
#error "cuda/common.cuh: compile with nvcc or define RECODE_SIMT_EMULATION"
#endif

// Every entry point returns 0 on success or a non-zero code and writes a message into (err, err_len).
// RECODE_CUDA_CHECK returns from the entry point on a failed runtime call.
#define RECODE_CUDA_CHECK(call)                                                                        \
  do {                                                                                                 \
    cudaError_t recode_status_ = (call);                                                               \
    if (recode_status_ != cudaSuccess) {                                                               \
      if (err && err_len) snprintf(err, err_len, "%s: %s", #call, cudaGetErrorString(recode_status_)); \
      return (int)recode_status_;                                                                      \
    }                                                                                                  \
  } while (0)

// Turns exceptions thrown by the emulation (invalid launch, deadlock) into the entry point's error code.
#if defined(RECODE_SIMT_EMULATION)
#define RECODE_API_TRY try {
#define RECODE_API_CATCH                                        \
  }                                                             \
  catch (const std::exception& e) {                             \
    if (err && err_len) snprintf(err, err_len, "%s", e.what()); \
    return 999;                                                 \
  }
#else
#define RECODE_API_TRY
#define RECODE_API_CATCH
#endif

__host__ __device__ inline unsigned ceil_div(unsigned a, unsigned b) { return (a + b - 1) / b; }
