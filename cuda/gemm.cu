// GEMM for the transformer's linear layers, forward and the two backward products:
//   forward          C[M,N]  (+)= A[M,K] . B[N,K]^T (+ bias[N])      (B is a weight stored [out, in], as in HF)
//   backward_input   dA[M,K] (+)= dC[M,N] . B[N,K]
//   backward_weight  dB[N,K] (+)= dC[M,N]^T . A[M,K],  dbias[N] += column sums of dC
// All three are one kernel computing Out[r, c] = sum_k X(r, k) * Y(c, k) over operands given by strides, so
// the transposed variants cost no copies. Tiles are staged in shared memory; the loader walks whichever
// operand dimension is contiguous in memory, so global loads stay coalesced for every variant.
//
// Two kernels:
//   - fp32 inputs: SIMT kernel, 64x64 block tile, BK = 16, 256 threads each owning a 4x4 register block
//     (fp32 FMA).
//   - bf16 inputs: tensor cores through nvcuda::wmma (16x16x16 bf16 -> fp32), block tile BM x 128 (BM = 128,
//     or 64 for short M), BK = 32, warps of 32x64 (2x4 fragments). When both operands allow 16-byte vector
//     loads, the next k-tile is fetched into registers while the current one is multiplied (software
//     pipelining without a second shared buffer). Emulated by src/simt/simt_wmma.h, which
//     keeps to the element-order-agnostic subset of wmma (fragments are only loaded, multiplied, stored).
// Both accumulate in fp32 and write fp32 or bf16 (rounded once), optionally adding into the output.
#include "ops_util.cuh"
#include "recode_cuda.h"

#if defined(__CUDACC__)
#include <mma.h>
#else
#include "simt/simt_wmma.h"
#endif

namespace {

// Strided view of an operand: element (r, k) at p[r * sr + k * sk]. vec8: 8 consecutive elements along the
// contiguous dimension can be read as one 16-byte vector (set by the host when strides and alignment allow).
template <class T>
struct Operand {
  const T* p;
  long long sr, sk;
  int vec8;
};

// bf16 tiles: 16-byte vector loads along the contiguous dimension (8 elements). k-contiguous operands land as
// 16-byte stores into [row][k] rows; row-contiguous ones are unpacked into 8 rows of one k column.
template <int ROWS, int BK>
__device__ __forceinline__ void load_tile_vec8(const Operand<bf16>& x, int rows, int K, int r0, int k0, bf16* tile,
                                               int ld, int tid, int nthreads) {
  if (x.sk == 1) {
    for (int idx = tid; idx < ROWS * BK / 8; idx += nthreads) {
      int r = idx / (BK / 8), k = (idx % (BK / 8)) * 8;
      int gr = r0 + r, gk = k0 + k;
      Bits128 v = {{0u, 0u, 0u, 0u}};
      if (gr < rows && gk < K) v = load128(x.p + gr * x.sr + gk);
      store128(tile + r * ld + k, v);
    }
  } else {
    for (int idx = tid; idx < ROWS * BK / 8; idx += nthreads) {
      int k = idx / (ROWS / 8), r = (idx % (ROWS / 8)) * 8;
      int gr = r0 + r, gk = k0 + k;
      Bits128 v = {{0u, 0u, 0u, 0u}};
      if (gr < rows && gk < K) v = load128(x.p + gr + gk * x.sk);
      RECODE_UNROLL
      for (int i = 0; i < 8; ++i) tile[(r + i) * ld + k] = bf16_lane(v, i);
    }
  }
}

// Register-staged version of load_tile_vec8 for software pipelining: fetch() issues the global loads of the
// next k-tile into registers, commit() writes them to shared memory after the current tile's MMAs, so global
// latency overlaps tensor-core work without a second shared-memory buffer.
template <int ROWS, int BK, int THREADS>
struct Vec8Stage {
  static_assert(ROWS * BK % (8 * THREADS) == 0, "tile must split evenly into 16-byte vectors per thread");
  static constexpr int N = ROWS * BK / (8 * THREADS);
  Bits128 v[N];
  __device__ __forceinline__ static void position(const Operand<bf16>& x, int idx, int& r, int& k) {
    if (x.sk == 1) {
      r = idx / (BK / 8);
      k = (idx % (BK / 8)) * 8;
    } else {
      k = idx / (ROWS / 8);
      r = (idx % (ROWS / 8)) * 8;
    }
  }
  __device__ __forceinline__ void fetch(const Operand<bf16>& x, int rows, int K, int r0, int k0, int tid) {
    RECODE_UNROLL
    for (int i = 0; i < N; ++i) {
      int r, k;
      position(x, tid + i * THREADS, r, k);
      int gr = r0 + r, gk = k0 + k;
      v[i] = Bits128{{0u, 0u, 0u, 0u}};
      if (gr < rows && gk < K) v[i] = load128(x.sk == 1 ? x.p + gr * x.sr + gk : x.p + gr + gk * x.sk);
    }
  }
  __device__ __forceinline__ void commit(const Operand<bf16>& x, bf16* tile, int ld, int tid) const {
    RECODE_UNROLL
    for (int i = 0; i < N; ++i) {
      int r, k;
      position(x, tid + i * THREADS, r, k);
      if (x.sk == 1) {
        store128(tile + r * ld + k, v[i]);
      } else {
        RECODE_UNROLL
        for (int e = 0; e < 8; ++e) tile[(r + e) * ld + k] = bf16_lane(v[i], e);
      }
    }
  }
};

// Whether 16-byte vector loads are valid: the contiguous dimension is a multiple of 8 (so a vector never
// straddles the matrix edge), the other stride keeps every vector 16-byte aligned, and so does the base.
static int can_vec8(const void* p, long long sr, long long sk, int rows, int K) {
  if (!aligned16(p)) return 0;
  if (sk == 1) return K % 8 == 0 && sr % 8 == 0;
  if (sr == 1) return rows % 8 == 0 && sk % 8 == 0;
  return 0;
}

// Loads rows [r0, r0+ROWS) x k [k0, k0+BK) of `x` into smem tile[row * ld + k] (zero outside the matrix), with
// consecutive threads on consecutive addresses of whichever dimension is contiguous.
template <int ROWS, int BK, class T, class S>
__device__ __forceinline__ void load_tile(const Operand<T>& x, int rows, int K, int r0, int k0, S* tile, int ld,
                                          int tid, int nthreads) {
  bool k_contiguous = x.sk == 1;
  for (int idx = tid; idx < ROWS * BK; idx += nthreads) {
    int r, k;
    if (k_contiguous) {
      r = idx / BK;
      k = idx % BK;
    } else {
      k = idx / ROWS;
      r = idx % ROWS;
    }
    int gr = r0 + r, gk = k0 + k;
    float v = (gr < rows && gk < K) ? to_float(x.p[gr * x.sr + gk * x.sk]) : 0.0f;
    tile[r * ld + k] = store_as<S>(v);
  }
}

// Final value of one output element: acc (+ bias) (+ previous value), rounded to the output type.
template <class TO>
__device__ __forceinline__ void write_out(TO* out, long long idx, float acc, const float* bias, int c, int accumulate) {
  if (bias) acc += bias[c];
  if (accumulate) acc += to_float(out[idx]);
  out[idx] = store_as<TO>(acc);
}

// ---- SIMT kernel (fp32 inputs) ----------------------------------------------------------------------------
constexpr int kSimtBM = 64, kSimtBN = 64, kSimtBK = 16, kSimtThreads = 256;

template <class TI, class TO>
__global__ void __launch_bounds__(kSimtThreads)
    gemm_simt_kernel(int R, int C, int K, Operand<TI> X, Operand<TI> Y, TO* out, const float* bias, int accumulate) {
  // Tiles stored [row][k] with padding; each thread reads a column of 4 rows per k.
  __shared__ float Xs[kSimtBM][kSimtBK + 1];
  __shared__ float Ys[kSimtBN][kSimtBK + 1];
  int tid = threadIdx.x;
  int tx = tid % 16, ty = tid / 16;  // thread's outputs: rows ty + 16 i, cols tx + 16 j
  int r0 = blockIdx.y * kSimtBM, c0 = blockIdx.x * kSimtBN;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += kSimtBK) {
    load_tile<kSimtBM, kSimtBK>(X, R, K, r0, k0, &Xs[0][0], kSimtBK + 1, tid, kSimtThreads);
    load_tile<kSimtBN, kSimtBK>(Y, C, K, c0, k0, &Ys[0][0], kSimtBK + 1, tid, kSimtThreads);
    __syncthreads();
    RECODE_UNROLL
    for (int k = 0; k < kSimtBK; ++k) {
      float xv[4], yv[4];
      RECODE_UNROLL
      for (int i = 0; i < 4; ++i) xv[i] = Xs[ty + 16 * i][k];
      RECODE_UNROLL
      for (int j = 0; j < 4; ++j) yv[j] = Ys[tx + 16 * j][k];
      RECODE_UNROLL
      for (int i = 0; i < 4; ++i) RECODE_UNROLL
      for (int j = 0; j < 4; ++j) acc[i][j] += xv[i] * yv[j];
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) {
    int r = r0 + ty + 16 * i;
    if (r >= R) continue;
    for (int j = 0; j < 4; ++j) {
      int c = c0 + tx + 16 * j;
      if (c < C) write_out(out, (long long)r * C + c, acc[i][j], bias, c, accumulate);
    }
  }
}

// ---- tensor-core kernel (bf16 inputs) ---------------------------------------------------------------------
constexpr int kWmmaBN = 128, kWmmaBK = 32, kWmmaLd = kWmmaBK + 8;  // ld multiple of 8 bf16 (16 bytes)

// One BK-deep step of a warp's 32x64 output tile: acc[i][j] += Xs rows (wr + 16 i) . Ys rows (wc + 16 j)^T.
template <class Acc>
__device__ __forceinline__ void wmma_tile_product(Acc (&acc)[2][4], const bf16* Xs, const bf16* Ys, int wr, int wc) {
  using namespace nvcuda;
  RECODE_UNROLL
  for (int kk = 0; kk < kWmmaBK; kk += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a[2];
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b[4];
    RECODE_UNROLL
    for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], Xs + (wr + 16 * i) * kWmmaLd + kk, kWmmaLd);
    // Ys holds Y[c][k]: as the K x N operand that is column-major with leading dimension kWmmaLd.
    RECODE_UNROLL
    for (int j = 0; j < 4; ++j) wmma::load_matrix_sync(b[j], Ys + (wc + 16 * j) * kWmmaLd + kk, kWmmaLd);
    RECODE_UNROLL
    for (int i = 0; i < 2; ++i) RECODE_UNROLL
    for (int j = 0; j < 4; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
  }
}

template <int BM, class TO>
__global__ void __launch_bounds__(BM * 2) gemm_wmma_kernel(int R, int C, int K, Operand<bf16> X, Operand<bf16> Y,
                                                           TO* out, const float* bias, int accumulate) {
  using namespace nvcuda;
  constexpr int kThreads = BM * 2;  // (BM/32) x 2 warps, each a 32x64 output tile
  __shared__ __align__(32) bf16 Xs[BM * kWmmaLd];
  __shared__ __align__(32) bf16 Ys[kWmmaBN * kWmmaLd];
  __shared__ __align__(32) float stage[kThreads / 32][16 * 20];  // per-warp epilogue staging, ld 20
  int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  int wr = (warp / 2) * 32, wc = (warp % 2) * 64;  // warp's tile origin inside the block tile
  int r0 = blockIdx.y * BM, c0 = blockIdx.x * kWmmaBN;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][4];
  RECODE_UNROLL
  for (int i = 0; i < 2; ++i) RECODE_UNROLL
  for (int j = 0; j < 4; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  if (X.vec8 && Y.vec8) {
    // Pipelined: the next tile's global loads are in flight while this tile's MMAs run.
    Vec8Stage<BM, kWmmaBK, kThreads> xn;
    Vec8Stage<kWmmaBN, kWmmaBK, kThreads> yn;
    xn.fetch(X, R, K, r0, 0, tid);
    yn.fetch(Y, C, K, c0, 0, tid);
    xn.commit(X, Xs, kWmmaLd, tid);
    yn.commit(Y, Ys, kWmmaLd, tid);
    __syncthreads();
    for (int k0 = 0; k0 < K; k0 += kWmmaBK) {
      bool more = k0 + kWmmaBK < K;
      if (more) {
        xn.fetch(X, R, K, r0, k0 + kWmmaBK, tid);
        yn.fetch(Y, C, K, c0, k0 + kWmmaBK, tid);
      }
      wmma_tile_product(acc, Xs, Ys, wr, wc);
      __syncthreads();
      if (more) {
        xn.commit(X, Xs, kWmmaLd, tid);
        yn.commit(Y, Ys, kWmmaLd, tid);
        __syncthreads();
      }
    }
  } else {
    for (int k0 = 0; k0 < K; k0 += kWmmaBK) {
      if (X.vec8)
        load_tile_vec8<BM, kWmmaBK>(X, R, K, r0, k0, Xs, kWmmaLd, tid, kThreads);
      else
        load_tile<BM, kWmmaBK>(X, R, K, r0, k0, Xs, kWmmaLd, tid, kThreads);
      if (Y.vec8)
        load_tile_vec8<kWmmaBN, kWmmaBK>(Y, C, K, c0, k0, Ys, kWmmaLd, tid, kThreads);
      else
        load_tile<kWmmaBN, kWmmaBK>(Y, C, K, c0, k0, Ys, kWmmaLd, tid, kThreads);
      __syncthreads();
      wmma_tile_product(acc, Xs, Ys, wr, wc);
      __syncthreads();
    }
  }
  // Epilogue: each fragment goes through the warp's staging tile, then lanes write rows of 16 outputs.
  float* st = stage[warp];
  RECODE_UNROLL
  for (int i = 0; i < 2; ++i) RECODE_UNROLL
  for (int j = 0; j < 4; ++j) {
    wmma::store_matrix_sync(st, acc[i][j], 20, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 256; e += 32) {
      int rr = e / 16, cc = e % 16;
      int r = r0 + wr + 16 * i + rr, c = c0 + wc + 16 * j + cc;
      if (r < R && c < C) write_out(out, (long long)r * C + c, st[rr * 20 + cc], bias, c, accumulate);
    }
    __syncwarp();
  }
}

// dbias[c] += sum over rows of dC[r, c]; one thread per column walking the rows in order (deterministic).
template <class TI>
__global__ void column_sum_kernel(int M, int N, const TI* dC, float* dbias) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= N) return;
  float s = 0.0f;
  for (int r = 0; r < M; ++r) s += to_float(dC[(long long)r * N + c]);
  dbias[c] += s;
}

// Out[R, C] (+)= X(R, K) . Y(C, K)^T (+ bias), dispatching on dtypes.
int gemm_launch(const char* op, int R, int C, int K, const void* x, long long xsr, long long xsk, const void* y,
                long long ysr, long long ysk, void* out, const float* bias, int in_dtype, int out_dtype, int accumulate,
                cudaStream_t stream, char* err, size_t err_len) {
  RECODE_REQUIRE_DTYPE(in_dtype, op);
  RECODE_REQUIRE_DTYPE(out_dtype, op);
  if (in_dtype == RECODE_F32) {
    dim3 grid(ceil_div((unsigned)C, kSimtBN), ceil_div((unsigned)R, kSimtBM));
    RECODE_REQUIRE(grid.y <= 65535, op, "too many rows (%d)", R);
    Operand<float> X{(const float*)x, xsr, xsk, 0}, Y{(const float*)y, ysr, ysk, 0};
    if (out_dtype == RECODE_F32) {
      auto kernel = gemm_simt_kernel<float, float>;
      SIMT_LAUNCH(kernel, grid, dim3(kSimtThreads), 0, stream, R, C, K, X, Y, (float*)out, bias, accumulate);
    } else {
      auto kernel = gemm_simt_kernel<float, bf16>;
      SIMT_LAUNCH(kernel, grid, dim3(kSimtThreads), 0, stream, R, C, K, X, Y, (bf16*)out, bias, accumulate);
    }
  } else {
    Operand<bf16> X{(const bf16*)x, xsr, xsk, can_vec8(x, xsr, xsk, R, K)};
    Operand<bf16> Y{(const bf16*)y, ysr, ysk, can_vec8(y, ysr, ysk, C, K)};
    bool small = R <= 64;  // short M (decode, small batches): half-height tiles waste less work
    unsigned bm = small ? 64u : 128u;
    dim3 grid(ceil_div((unsigned)C, kWmmaBN), ceil_div((unsigned)R, bm));
    RECODE_REQUIRE(grid.y <= 65535, op, "too many rows (%d)", R);
    if (out_dtype == RECODE_F32) {
      auto kernel = small ? gemm_wmma_kernel<64, float> : gemm_wmma_kernel<128, float>;
      SIMT_LAUNCH(kernel, grid, dim3(bm * 2), 0, stream, R, C, K, X, Y, (float*)out, bias, accumulate);
    } else {
      auto kernel = small ? gemm_wmma_kernel<64, bf16> : gemm_wmma_kernel<128, bf16>;
      SIMT_LAUNCH(kernel, grid, dim3(bm * 2), 0, stream, R, C, K, X, Y, (bf16*)out, bias, accumulate);
    }
  }
  RECODE_LAUNCH_CHECK();
  return 0;
}

}  // namespace

#define GEMM_CHECK_SIZES(op)                                                                      \
  RECODE_REQUIRE(M >= 0 && N >= 0 && K >= 0, op, "sizes must be >= 0 (M=%d N=%d K=%d)", M, N, K); \
  RECODE_REQUIRE((long long)M* N* K == 0 || (A_ && B_ && OUT_), op, "NULL pointer")

RECODE_API(gemm_forward)(int M, int N, int K, const void* A, const void* B, const float* bias, void* C, int in_dtype,
                         int out_dtype, int accumulate, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  const void *A_ = A, *B_ = B;
  void* OUT_ = C;
  GEMM_CHECK_SIZES("gemm_forward");
  if (M == 0 || N == 0) return 0;
  RECODE_REQUIRE(C != nullptr, "gemm_forward", "NULL pointer");
  // K == 0 still writes bias / zeros; operands are never read then.
  return gemm_launch("gemm_forward", M, N, K, A, K, 1, B, K, 1, C, bias, in_dtype, out_dtype, accumulate,
                     RECODE_STREAM(stream), err, err_len);
  RECODE_API_CATCH
}

RECODE_API(gemm_backward_input)(int M, int N, int K, const void* dC, const void* B, void* dA, int in_dtype,
                                int out_dtype, int accumulate, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  const void *A_ = dC, *B_ = B;
  void* OUT_ = dA;
  GEMM_CHECK_SIZES("gemm_backward_input");
  if (M == 0 || K == 0) return 0;
  RECODE_REQUIRE(dA != nullptr, "gemm_backward_input", "NULL pointer");
  // dA(m, kk) = sum_n dC(m, n) B(n, kk):  X = dC (row m, reduction n), Y(kk, n) = B[n * K + kk].
  return gemm_launch("gemm_backward_input", M, K, N, dC, N, 1, B, 1, K, dA, nullptr, in_dtype, out_dtype, accumulate,
                     RECODE_STREAM(stream), err, err_len);
  RECODE_API_CATCH
}

RECODE_API(gemm_backward_weight)(int M, int N, int K, const void* dC, const void* A, void* dB, float* dbias,
                                 int in_dtype, int out_dtype, int accumulate, void* stream, char* err, size_t err_len) {
  RECODE_API_TRY
  const void *A_ = A, *B_ = dC;
  void* OUT_ = dB;
  GEMM_CHECK_SIZES("gemm_backward_weight");
  if (N == 0) return 0;
  RECODE_REQUIRE(dC != nullptr || M == 0, "gemm_backward_weight", "NULL pointer");
  cudaStream_t s = RECODE_STREAM(stream);
  if (K > 0) {
    RECODE_REQUIRE(dB != nullptr, "gemm_backward_weight", "NULL pointer");
    // dB(n, kk) = sum_m dC(m, n) A(m, kk):  X(n, m) = dC[m * N + n], Y(kk, m) = A[m * K + kk].
    int rc = gemm_launch("gemm_backward_weight", N, K, M, dC, 1, N, A, 1, K, dB, nullptr, in_dtype, out_dtype,
                         accumulate, s, err, err_len);
    if (rc) return rc;
  }
  if (dbias && M > 0) {
    RECODE_DISPATCH_DTYPE(in_dtype, SIMT_LAUNCH(column_sum_kernel<T>, dim3(ceil_div((unsigned)N, 128u)), dim3(128), 0,
                                                s, M, N, (const T*)dC, dbias));
    RECODE_LAUNCH_CHECK();
  }
  return 0;
  RECODE_API_CATCH
}
