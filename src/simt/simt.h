// SIMT emulation: runs the project's CUDA kernels (cuda/*.cu) as host C++ so that CI, which has no GPU,
// executes the very same kernel source and compares it with the CPU reference.
//
// Model. A launch runs its thread blocks on the addon's worker threads, one block at a time per OS thread.
// Inside a block every CUDA thread is a fiber (its own stack, cooperative switching), so a block of 1024
// threads costs 1024 small stacks, not 1024 OS threads. Fibers switch only at synchronisation points:
//   - __syncthreads(): a real barrier; a fiber waits until every live thread of its block has arrived
//     (threads that already returned count as arrived, as on current GPUs);
//   - warp collectives (__shfl*_sync, __ballot_sync, __any_sync, __all_sync, __reduce_*_sync, __syncwarp):
//     a barrier over the lanes named in the mask (lanes that returned are left out), then the exchange;
//   - __nanosleep(): a yield, so spin-waits on flags make progress.
// __shared__ variables are `static thread_local`: one copy per OS thread, hence per running block.
// Dynamic shared memory is reached with SIMT_DYNAMIC_SHARED(type, name) (see cuda/common.cuh).
// Global-memory atomics are real atomics (blocks of one launch run in parallel on several OS threads).
// The host API (cudaMalloc, cudaMemcpy[Async], cudaMemset[Async], streams, events as no-ops,
// cudaGetLastError) works on host memory; launches are synchronous.
//
// Supported: dim3 grids and blocks (up to 1024 threads a block), static and dynamic shared memory,
// __syncthreads, __syncthreads_count/and/or, the warp collectives above (all lanes of a mask must call the
// same collective), atomics (Add/Sub/Max/Min/Exch/CAS/And/Or on 32/64-bit integers, Add on float/double),
// __threadfence*, the integer and float intrinsics defined below, and bf16/fp16 storage types through
// cuda/common.cuh, and the warp-level matrix API nvcuda::wmma (bf16 in, fp32 accumulate) through
// src/simt/simt_wmma.h. Not supported: cooperative groups, CUB, textures, inline PTX, raw mma and other
// tensor-core instructions outside wmma, clusters and TMA. A kernel that needs one of these says so in its file
// and is tested on a real GPU instead.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>

namespace simt {

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

// What the running fiber sees as threadIdx / blockIdx / blockDim / gridDim.
struct ThreadView {
  dim3 thread_idx;
  dim3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  unsigned linear_tid = 0;
};

extern thread_local ThreadView* tl_view;
inline ThreadView& view() { return *tl_view; }  // the current CUDA thread (valid only inside a kernel)
void* dynamic_shared_memory();                  // this block's dynamic shared memory

// Synchronisation points (each may switch fibers).
void syncthreads();
int syncthreads_count(int predicate);
void syncwarp(unsigned mask);
uint64_t warp_exchange(unsigned mask, uint64_t mine, int src_lane);  // returns src_lane's value
unsigned warp_ballot(unsigned mask, int predicate);
void yield();

// Launch: runs body once per CUDA thread of every block; returns after all blocks finished.
// Throws std::runtime_error for invalid configurations (as cudaErrorInvalidConfiguration would report).
void launch(dim3 grid, dim3 block, size_t dynamic_shared_bytes, const std::function<void()>& body);

inline unsigned lane_id() { return view().linear_tid & 31u; }

}  // namespace simt

// ---------------------------------------------------------------------------------------------------
// CUDA spellings, defined only for translation units that include this header to emulate kernels.
// ---------------------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __constant__ static
#define __restrict__ __restrict

#define threadIdx (::simt::view().thread_idx)
#define blockIdx (::simt::view().block_idx)
#define blockDim (::simt::view().block_dim)
#define gridDim (::simt::view().grid_dim)
#define warpSize 32

using simt::dim3;
using simt::uint3;

inline void __syncthreads() { simt::syncthreads(); }
inline int __syncthreads_count(int p) { return simt::syncthreads_count(p); }
inline int __syncthreads_and(int p) {
  return simt::syncthreads_count(p != 0) == (int)(blockDim.x * blockDim.y * blockDim.z);
}
inline int __syncthreads_or(int p) { return simt::syncthreads_count(p != 0) != 0; }
inline void __syncwarp(unsigned mask = 0xffffffffu) { simt::syncwarp(mask); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __nanosleep(unsigned) { simt::yield(); }
inline unsigned __activemask() { return 0xffffffffu; }

namespace simt::detail {
template <class T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a type wider than 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
// Source lane for a shuffle within segments of `width` lanes, as the hardware computes it.
inline int segment_base(int lane, int width) { return lane & ~(width - 1); }
}  // namespace simt::detail

template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  int lane = (int)simt::lane_id();
  int s = simt::detail::segment_base(lane, width) + (src & (width - 1));
  return simt::detail::from_bits<T>(simt::warp_exchange(mask, simt::detail::to_bits(v), s));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  int lane = (int)simt::lane_id();
  int s = lane ^ lane_mask;
  if (s >= simt::detail::segment_base(lane, width) + width) s = lane;
  return simt::detail::from_bits<T>(simt::warp_exchange(mask, simt::detail::to_bits(v), s));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  int lane = (int)simt::lane_id();
  int s = lane + (int)delta;
  if (s >= simt::detail::segment_base(lane, width) + width) s = lane;
  return simt::detail::from_bits<T>(simt::warp_exchange(mask, simt::detail::to_bits(v), s));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  int lane = (int)simt::lane_id();
  int s = lane - (int)delta;
  if (s < simt::detail::segment_base(lane, width)) s = lane;
  return simt::detail::from_bits<T>(simt::warp_exchange(mask, simt::detail::to_bits(v), s));
}
inline unsigned __ballot_sync(unsigned mask, int p) { return simt::warp_ballot(mask, p); }
inline int __any_sync(unsigned mask, int p) { return simt::warp_ballot(mask, p) != 0; }
inline int __all_sync(unsigned mask, int p) {
  return (simt::warp_ballot(mask, p) & mask) == (simt::warp_ballot(mask, 1) & mask);
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned v) {
  unsigned s = 0;
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1u) s += (unsigned)simt::warp_exchange(mask, v, l);
  return s;
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned v) {
  unsigned m = 0;
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1u) m = std::max(m, (unsigned)simt::warp_exchange(mask, v, l));
  return m;
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned v) {
  unsigned m = 0xffffffffu;
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1u) m = std::min(m, (unsigned)simt::warp_exchange(mask, v, l));
  return m;
}

// ---- atomics on global or shared memory ----------------------------------------------------------------
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline float atomicAdd(float* p, float v) {
  float old, next;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  do {
    next = old + v;
  } while (!__atomic_compare_exchange(p, &old, &next, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
  return old;
}
inline double atomicAdd(double* p, double v) {
  double old, next;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  do {
    next = old + v;
  } while (!__atomic_compare_exchange(p, &old, &next, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
  return old;
}
inline int atomicSub(int* p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicSub(unsigned* p, unsigned v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
template <class T>
inline T simt_atomic_max(T* p, T v) {
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
  }
  return old;
}
template <class T>
inline T simt_atomic_min(T* p, T v) {
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old > v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
  }
  return old;
}
inline int atomicMax(int* p, int v) { return simt_atomic_max(p, v); }
inline unsigned atomicMax(unsigned* p, unsigned v) { return simt_atomic_max(p, v); }
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) { return simt_atomic_max(p, v); }
inline int atomicMin(int* p, int v) { return simt_atomic_min(p, v); }
inline unsigned atomicMin(unsigned* p, unsigned v) { return simt_atomic_min(p, v); }
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) { return simt_atomic_min(p, v); }
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicExch(unsigned* p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicExch(unsigned long long* p, unsigned long long v) {
  return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
inline int atomicCAS(int* p, int cmp, int v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
inline unsigned atomicCAS(unsigned* p, unsigned cmp, unsigned v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long cmp, unsigned long long v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
inline int atomicAnd(int* p, int v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAnd(unsigned* p, unsigned v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
inline int atomicOr(int* p, int v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicOr(unsigned* p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }

// ---- intrinsics ------------------------------------------------------------------------------------------
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz((unsigned)v); }
inline int __clzll(long long v) { return v == 0 ? 64 : __builtin_clzll((unsigned long long)v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int __ffsll(long long v) { return __builtin_ffsll(v); }
inline unsigned __brev(unsigned v) {
  v = ((v >> 1) & 0x55555555u) | ((v & 0x55555555u) << 1);
  v = ((v >> 2) & 0x33333333u) | ((v & 0x33333333u) << 2);
  v = ((v >> 4) & 0x0f0f0f0fu) | ((v & 0x0f0f0f0fu) << 4);
  v = ((v >> 8) & 0x00ff00ffu) | ((v & 0x00ff00ffu) << 8);
  return (v >> 16) | (v << 16);
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s) {
  s &= 31;
  return s ? (hi << s) | (lo >> (32 - s)) : hi;
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) {
  s &= 31;
  return s ? (lo >> s) | (hi << (32 - s)) : lo;
}
inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, 4);
  return f;
}
inline int __float_as_int(float f) {
  int v;
  std::memcpy(&v, &f, 4);
  return v;
}
inline float __uint_as_float(unsigned v) {
  float f;
  std::memcpy(&f, &v, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned v;
  std::memcpy(&v, &f, 4);
  return v;
}
inline double __longlong_as_double(long long v) {
  double d;
  std::memcpy(&d, &v, 8);
  return d;
}
inline long long __double_as_longlong(double d) {
  long long v;
  std::memcpy(&v, &d, 8);
  return v;
}
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __saturatef(float a) { return a < 0.f ? 0.f : (a > 1.f ? 1.f : a); }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
inline double rsqrt(double a) { return 1.0 / std::sqrt(a); }
inline int __float2int_rn(float a) { return (int)std::nearbyint(a); }
inline int __float2int_rz(float a) { return (int)a; }
inline float __int2float_rn(int a) { return (float)a; }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
using std::max;
using std::min;

// ---- host API on host memory ------------------------------------------------------------------------------
using cudaError_t = int;
using cudaStream_t = void*;
using cudaEvent_t = void*;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
constexpr cudaError_t cudaErrorMemoryAllocation = 2;
constexpr cudaError_t cudaErrorInvalidConfiguration = 9;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
namespace simt {
cudaError_t& last_error();
}
// Fresh memory is all ones bytes (NaN as float and bf16), not whatever malloc recycled: a GPU's cudaMalloc gives no
// promise either, and a kernel that reads what it never wrote then fails every emulated test instead of one machine's.
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
  const size_t rounded = (bytes + 255) / 256 * 256;
  *p = bytes ? std::aligned_alloc(256, rounded) : nullptr;
  if (*p) std::memset(*p, 0xff, rounded);
  return (*p || !bytes) ? cudaSuccess : (simt::last_error() = cudaErrorMemoryAllocation);
}
template <class T>
inline cudaError_t cudaMalloc(T** p, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
inline cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) {
  if (n) std::memmove(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind k, cudaStream_t = nullptr) {
  return cudaMemcpy(d, s, n, k);
}
inline cudaError_t cudaMemset(void* d, int v, size_t n) {
  if (n) std::memset(d, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t = nullptr) { return cudaMemset(d, v, n); }
inline cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = nullptr;
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = nullptr;
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaGetLastError() {
  cudaError_t e = simt::last_error();
  simt::last_error() = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return simt::last_error(); }
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument (emulated)";
    case cudaErrorMemoryAllocation:
      return "out of memory (emulated)";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument (emulated)";
    default:
      return "unknown error (emulated)";
  }
}
constexpr unsigned cudaStreamNonBlocking = 1;
