// Arithmetic shared by the CPU sampler (src/sampling*.cpp) and the CUDA kernel (cuda/sampling.cu), written so
// that both produce bit-identical weights: only correctly rounded IEEE operations (add, multiply, fma, rint),
// in a fixed order, with no library exp whose last bit differs between glibc and CUDA.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "philox.h"

namespace recode::sampling {

// Largest vocabulary the fixed-point accumulation supports (vocab * 2^43 must fit in 64 bits).
constexpr int kMaxVocab = 1 << 20;

// Weights are accumulated in units of 2^-43 of the top token's weight (which is exactly 1).
constexpr float kUnitsPerWeight = 8796093022208.f;         // 2^43
constexpr double kLogUnitsPerWeight = 29.805328215125446;  // 43 * ln 2

// e^t for t <= 0 (t = (x - max) / T). Cody-Waite reduction t = n ln2 + r, |r| <= ln2/2, then the degree-7
// Taylor polynomial by Horner with fma (error < 2 ulp). Below -32 the weight is under 2^-46, which rounds
// to 0 units anyway, so it is returned as 0 (this also covers -inf).
RECODE_HD float sampling_weight(float t) {
  if (!(t >= -32.f)) return 0.f;
  float n = rintf(t * 1.44269504088896341f);
  float r = fmaf(n, -0.693145751953125f, t);
  r = fmaf(n, -1.42860682030941723212e-6f, r);
  float p = 1.98412698e-4f;
  p = fmaf(p, r, 1.38888889e-3f);
  p = fmaf(p, r, 8.33333333e-3f);
  p = fmaf(p, r, 4.16666667e-2f);
  p = fmaf(p, r, 1.66666667e-1f);
  p = fmaf(p, r, 0.5f);
  p = fmaf(p, r, 1.f);
  p = fmaf(p, r, 1.f);
  uint32_t scale_bits = (uint32_t)((int)n + 127) << 23;  // 2^n, n in [-47, 0]: a normal float
  float scale;
  memcpy(&scale, &scale_bits, 4);
  return p * scale;
}

// The weight in fixed-point units (round to nearest even; exact for weights >= 2^-20).
RECODE_HD uint64_t weight_units(float w) { return (uint64_t)rintf(w * kUnitsPerWeight); }

// Monotone map from float to uint32 (larger float, larger key); -0 and +0 share a key.
RECODE_HD uint32_t order_key(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) == 0) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// log of a mass given in units.
RECODE_HD double log_mass(uint64_t units) { return log((double)units) - kLogUnitsPerWeight; }

// Error codes shared by the CPU path and the kernel (the kernel reports the first bad row).
enum RowStatus : int { kRowOk = 0, kRowNaN = 1, kRowPosInf = 2, kRowAllNegInf = 3 };

}  // namespace recode::sampling
