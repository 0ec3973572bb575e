// Helpers shared by the transformer kernel files (gemm.cu, attention.cu, norm.cu, pointwise.cu): storage
// conversions for the two dtypes, the dtype switch of the entry points and argument checks that return an
// error code instead of launching a kernel on bad sizes.
#pragma once

#include "common.cuh"
#include "recode_cuda.h"

#if !defined(__CUDACC__) && !defined(__align__)
#define __align__(n) __attribute__((aligned(n)))
#endif

// Loop unrolling hint for nvcc (the host compiler of the emulation decides for itself).
#if defined(__CUDACC__)
#define RECODE_UNROLL _Pragma("unroll")
#else
#define RECODE_UNROLL
#endif

// Storage <- fp32 (round to nearest even for bf16).
template <class T>
__device__ __forceinline__ T store_as(float v);
template <>
__device__ __forceinline__ float store_as<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16 store_as<bf16>(float v) {
  return to_bf16(v);
}

// Entry-point argument check: writes "<op>: <message>" and returns 1 from the entry point.
#define RECODE_REQUIRE(cond, op, ...)                                                                  \
  do {                                                                                                 \
    if (!(cond)) {                                                                                     \
      if (err && err_len) {                                                                            \
        int used_ = snprintf(err, err_len, "%s: ", op);                                                \
        if (used_ > 0 && (size_t)used_ < err_len) snprintf(err + used_, err_len - used_, __VA_ARGS__); \
      }                                                                                                \
      return 1;                                                                                        \
    }                                                                                                  \
  } while (0)

#define RECODE_REQUIRE_DTYPE(dtype, op)                               \
  RECODE_REQUIRE((dtype) == RECODE_F32 || (dtype) == RECODE_BF16, op, \
                 "dtype must be RECODE_F32 (0) or RECODE_BF16 (1), got %d", (int)(dtype))

// Runs `call` with `T` bound to the storage type named by `dtype`.
#define RECODE_DISPATCH_DTYPE(dtype, ...) \
  do {                                    \
    if ((dtype) == RECODE_F32) {          \
      using T = float;                    \
      __VA_ARGS__;                        \
    } else {                              \
      using T = bf16;                     \
      __VA_ARGS__;                        \
    }                                     \
  } while (0)

#define RECODE_STREAM(stream) reinterpret_cast<cudaStream_t>(stream)

// The emulation ignores streams (launches are synchronous); keeps the variable "used" there.
#define RECODE_UNUSED(x) (void)(x)

// After a launch: reports launch failures (bad configuration, emulated faults surface as exceptions).
#define RECODE_LAUNCH_CHECK() RECODE_CUDA_CHECK(cudaGetLastError())

// 16 bytes moved as one vector load/store (8 bf16 or 4 floats) when both addresses are 16-byte aligned.
struct __align__(16) Bits128 { uint32_t w[4]; };
static inline bool aligned16(const void* p) { return ((uintptr_t)p & 15u) == 0; }
// Vector load/store; the emulation goes through memcpy so host compilers see no strict-aliasing violation.
__device__ __forceinline__ Bits128 load128(const void* p) {
#if defined(__CUDACC__)
  return *reinterpret_cast<const Bits128*>(p);
#else
  Bits128 v;
  std::memcpy(&v, p, 16);
  return v;
#endif
}
__device__ __forceinline__ void store128(void* p, const Bits128& v) {
#if defined(__CUDACC__)
  *reinterpret_cast<Bits128*>(p) = v;
#else
  std::memcpy(p, &v, 16);
#endif
}
// Element i (0..7) of a vector holding 8 bf16 values (little-endian lanes, as in memory).
__device__ __forceinline__ bf16 bf16_lane(const Bits128& v, int i) {
  uint16_t bits = (uint16_t)(v.w[i >> 1] >> ((i & 1) * 16));
#if defined(__CUDACC__)
  __nv_bfloat16_raw raw;
  raw.x = bits;
  return __nv_bfloat16(raw);
#else
  return bf16{bits};
#endif
}

static inline unsigned grid_for(size_t n, unsigned block, unsigned max_blocks = 65535u * 16u) {
  size_t g = (n + block - 1) / block;
  if (g > max_blocks) g = max_blocks;
  if (g == 0) g = 1;
  return (unsigned)g;
}
