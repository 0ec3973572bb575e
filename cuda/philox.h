// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a counter-based
// generator. The output is a pure function of (counter, key), so the CPU code and the CUDA kernels draw the
// very same numbers for the same (seed, row, step) without sharing any generator state.
// Usable from host C++, from nvcc device code and from the SIMT emulation (cuda/*.cu include it).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define RECODE_HD __host__ __device__ __forceinline__
#else
// static: each translation unit keeps its own copy, so code compiled with -mfma (the *_avx2.cpp files) never
// replaces the baseline copy at link time.
#define RECODE_HD static inline
#endif

namespace recode::philox {

struct U32x4 {
  uint32_t v[4];
};

RECODE_HD uint32_t mulhi32(uint32_t a, uint32_t b) { return (uint32_t)(((uint64_t)a * b) >> 32); }

// One Philox-4x32 round: two 32x32->64 multiplies, the halves mixed with the other words and the key.
RECODE_HD void round4x32(uint32_t c[4], const uint32_t k[2]) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  uint32_t hi0 = mulhi32(M0, c[0]), lo0 = M0 * c[0];
  uint32_t hi1 = mulhi32(M1, c[2]), lo1 = M1 * c[2];
  uint32_t n0 = hi1 ^ c[1] ^ k[0];
  uint32_t n2 = hi0 ^ c[3] ^ k[1];
  c[0] = n0;
  c[1] = lo1;
  c[2] = n2;
  c[3] = lo0;
}

// Philox-4x32 with 10 rounds; the key is bumped by the Weyl constants between rounds.
RECODE_HD U32x4 philox4x32_10(U32x4 counter, uint32_t key0, uint32_t key1) {
  uint32_t c[4] = {counter.v[0], counter.v[1], counter.v[2], counter.v[3]};
  uint32_t k[2] = {key0, key1};
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k[0] += 0x9E3779B9u;
      k[1] += 0xBB67AE85u;
    }
    round4x32(c, k);
  }
  return U32x4{{c[0], c[1], c[2], c[3]}};
}

// The 64 random bits for (seed, row, step): counter = (row lo, row hi, step lo, step hi), key = seed.
RECODE_HD uint64_t random64(uint64_t seed, uint64_t row, uint64_t step) {
  U32x4 ctr{{(uint32_t)row, (uint32_t)(row >> 32), (uint32_t)step, (uint32_t)(step >> 32)}};
  U32x4 out = philox4x32_10(ctr, (uint32_t)seed, (uint32_t)(seed >> 32));
  return ((uint64_t)out.v[0] << 32) | out.v[1];
}

// floor(r * n / 2^64): maps 64 uniform bits onto [0, n) with no modulo bias beyond 2^-64 per value.
RECODE_HD uint64_t scale64(uint64_t r, uint64_t n) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(r, n);
#else
  return (uint64_t)(((unsigned __int128)r * n) >> 64);
#endif
}

// Dropout masks (LoRA/DoRA, src/train/adapters.cpp and cuda/adapters.cu): element counter c (= offset + flat
// index) takes word c & 3 of the block for counter (c >> 2, 0) under key seed, and is kept when that word, read as
// u * 2^32, is >= p * 2^32. Counter-based, so a backward pass or a resumed run replays the mask exactly.
RECODE_HD double dropout_threshold(float p) { return p > 0.0f ? (double)p * 4294967296.0 : 0.0; }
RECODE_HD U32x4 dropout_block(uint64_t seed, uint64_t block) {
  return philox4x32_10(U32x4{{(uint32_t)block, (uint32_t)(block >> 32), 0u, 0u}}, (uint32_t)seed,
                       (uint32_t)(seed >> 32));
}
RECODE_HD bool dropout_word_kept(uint32_t word, double threshold) { return (double)word >= threshold; }
// Initial value of element j of LoRA A for adapter `index`: uniform in [-bound, bound) from the first word of the
// block for counter (j, index, "LoRA") under key seed; the CPU and CUDA trainers start from the same tensors.
RECODE_HD float lora_a_init(uint64_t seed, uint32_t index, uint64_t j, double bound) {
  U32x4 r = philox4x32_10(U32x4{{(uint32_t)j, (uint32_t)(j >> 32), index, 0x4c6f5241u /* "LoRA" */}}, (uint32_t)seed,
                          (uint32_t)(seed >> 32));
  return (float)((2.0 * (r.v[0] / 4294967296.0) - 1.0) * bound);
}

RECODE_HD bool dropout_keep(uint64_t seed, uint64_t c, double threshold) {
  if (threshold <= 0.0) return true;
  return dropout_word_kept(dropout_block(seed, c >> 2).v[c & 3], threshold);
}

}  // namespace recode::philox
