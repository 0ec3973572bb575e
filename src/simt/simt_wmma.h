// Emulation of the warp-level matrix API `nvcuda::wmma` (tensor cores) for the SIMT emulation, so kernels
// written with wmma run in CI like every other kernel. Include after simt/simt.h (cuda/common.cuh does that);
// kernel files include <mma.h> under nvcc and this header under RECODE_SIMT_EMULATION.
//
// Model. On a GPU a fragment is spread over the 32 lanes of a warp (each lane holds a few elements, in an
// unspecified order). Here every lane holds the WHOLE tile: `x[i]` is element i of the tile in row-major order
// (row * cols + col), and num_elements is rows * cols (e.g. 256 for a 16x16 accumulator, 8 on real hardware).
// Every operation is warp-collective and synchronises the warp (all 32 lanes of the warp must call it, as
// on hardware), then each lane computes the full result on its own copy; stores synchronise again after
// writing, so a lane never proceeds while another still writes the tile.
//
// Element-order caveat: kernels must not rely on which fragment element maps to which matrix element beyond
// elementwise operations applied to all elements alike (scaling, conversion, fill). Code that indexes x[i]
// as a particular (row, col) works here and silently fails on hardware.
//
// Supported: shapes m16n16k16; matrix_a / matrix_b of bf16 or fp16 in row_major or col_major; float
// accumulators; fill_fragment, load_matrix_sync, store_matrix_sync (mem_row_major / mem_col_major), mma_sync
// (fp32 accumulation; products of bf16/fp16 values are exact in fp32, as on hardware).
#pragma once

#include "simt/simt.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <class Use, int M, int N, int K>
struct shape;
template <int M, int N, int K>
struct shape<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct shape<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct shape<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};
inline float as_float(float v) { return v; }
inline float as_float(recode::bf16 v) { return recode::bf16_to_float(v); }
inline float as_float(recode::fp16 v) { return recode::fp16_to_float(v); }
template <class T>
inline T from_float(float v);
template <>
inline float from_float<float>(float v) {
  return v;
}
template <>
inline recode::bf16 from_float<recode::bf16>(float v) {
  return recode::float_to_bf16(v);
}
template <>
inline recode::fp16 from_float<recode::fp16>(float v) {
  return recode::float_to_fp16(v);
}
template <class Layout>
constexpr bool is_col_major() {
  return std::is_same_v<Layout, col_major>;
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "simt_wmma: only the m16n16k16 shape is emulated");
  static constexpr int rows = detail::shape<Use, M, N, K>::rows;
  static constexpr int cols = detail::shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  using element_type = T;
  T x[num_elements];  // row-major: x[r * cols + c]
};

template <class Use, int M, int N, int K, class T, class Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const T& v) {
  simt::syncwarp(0xffffffffu);
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}

// matrix_a / matrix_b: the layout is part of the fragment type.
template <class Use, int M, int N, int K, class T, class Layout>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same_v<Use, accumulator>, "accumulator loads take a layout_t");
  simt::syncwarp(0xffffffffu);
  constexpr int R = fragment<Use, M, N, K, T, Layout>::rows, C = fragment<Use, M, N, K, T, Layout>::cols;
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c)
      f.x[r * C + c] = detail::is_col_major<Layout>() ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
}

template <int M, int N, int K, class T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm, layout_t layout) {
  simt::syncwarp(0xffffffffu);
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      f.x[r * N + c] = layout == mem_col_major ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
}

template <int M, int N, int K, class T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout) {
  simt::syncwarp(0xffffffffu);
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) {
      if (layout == mem_col_major)
        p[(size_t)c * ldm + r] = f.x[r * N + c];
      else
        p[(size_t)r * ldm + c] = f.x[r * N + c];
    }
  simt::syncwarp(0xffffffffu);
}

// d = a * b + c, accumulated in fp32 (d may alias c).
template <int M, int N, int K, class TA, class LA, class TB, class LB, class TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, TC>& c) {
  simt::syncwarp(0xffffffffu);
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float s = detail::as_float(c.x[i * N + j]);
      for (int k = 0; k < K; ++k) s += detail::as_float(a.x[i * K + k]) * detail::as_float(b.x[k * N + j]);
      out[i * N + j] = s;
    }
  for (int i = 0; i < M * N; ++i) d.x[i] = detail::from_float<TC>(out[i]);
}

}  // namespace wmma
}  // namespace nvcuda
