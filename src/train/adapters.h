// LoRA and DoRA for one linear layer on the CPU: forward and backward, plainly written (the reference the
// model's fused paths are held to). Follows PEFT (src/peft/tuners/lora/layer.py, variants.py, dora.py):
//
//   LoRA:  y = x W^T + b + s * (drop(x) A^T) B^T,                s = alpha / r
//   DoRA:  n_o = || W[o,:] + s * (B A)[o,:] ||_2   (row norm over the input dimension; PEFT's get_weight_norm,
//          dim=1 of the [out, in] weight), treated as a constant in backward (weight_norm.detach(), DoRA §4.3)
//          c_o = m_o / n_o
//          y = x W^T + b + (c - 1) * (drop(x) W^T) + c * s * (drop(x) A^T) B^T
//          Without dropout (p = 0 or inference) PEFT reuses x W^T for the middle term, which is the same value.
//
// W [out, in] and the bias are frozen: no gradient is produced for them. Dropout is inverted dropout
// (kept values scaled by 1 / (1 - p)) with a counter-based mask: element (t, i) of x is kept when the
// Philox4x32-10 draw for counter `offset + t*in + i` under key `seed` (see dropout_keep) is >= p * 2^32, so
// forward and backward (and a recomputation) see the same mask without storing it.
#pragma once

#include <cstdint>

namespace recode {

struct AdapterShape {
  int64_t rows;  // N: tokens in the batch
  int64_t in;    // input features
  int64_t out;   // output features
  int64_t rank;  // r
};

struct AdapterWeights {
  const float* weight = nullptr;     // W [out, in] (frozen)
  const float* bias = nullptr;       // [out] or nullptr
  const float* lora_a = nullptr;     // A [r, in]
  const float* lora_b = nullptr;     // B [out, r]
  const float* magnitude = nullptr;  // m [out] for DoRA, nullptr for LoRA
  float scaling = 1.0f;              // alpha / r
  float dropout = 0.0f;              // p in [0, 1)
  uint64_t seed = 0;
  uint64_t offset = 0;
};

// What forward keeps for backward.
struct AdapterSaved {
  float* lora_hidden = nullptr;   // u = drop(x) A^T [N, r]
  float* weight_norm = nullptr;   // DoRA: n [out]
  float* dropped_base = nullptr;  // DoRA: drop(x) W^T [N, out] (= x W^T without dropout); unused by LoRA
};

struct AdapterGrads {
  float* input = nullptr;      // dx [N, in] (overwritten), or nullptr when not needed
  float* lora_a = nullptr;     // dA [r, in]
  float* lora_b = nullptr;     // dB [out, r]
  float* magnitude = nullptr;  // dm [out] (DoRA)
  bool accumulate = false;     // add into dA, dB, dm instead of overwriting (gradient accumulation)
};

// Dropout keep decision for counter c (= offset + flat element index): word c % 4 of the Philox4x32-10 block
// with block counter c / 4 under key `seed`, kept when >= p * 2^32 (one block serves four consecutive elements).
bool dropout_keep(uint64_t seed, uint64_t counter, float p);
// The same decisions for counters first .. first + n - 1 into keep[n] (one Philox block per four): the fast path.
void dropout_keep_range(uint64_t seed, uint64_t first, int64_t n, float p, uint8_t* keep);

// n_o = || W[o,:] + s (B A)[o,:] ||_2 for every output row.
void dora_weight_norm(const AdapterShape& sh, const AdapterWeights& w, float* weight_norm);

// Merged weight for export (PEFT's merge: DoraLinearVariant.merge_safe / LoRA get_delta_weight):
//   LoRA: W' = W + s B A;   DoRA: W' = (m / n) * (W + s B A) row-wise, n the row norms of W + s B A.
// The merged layer x W'^T + b computes the same as the adapter layer at inference (no dropout).
void adapter_merge(const AdapterShape& sh, const AdapterWeights& w, float* merged);

void adapter_forward(const AdapterShape& sh, const AdapterWeights& w, const float* x, float* y, AdapterSaved& saved);
void adapter_backward(const AdapterShape& sh, const AdapterWeights& w, const float* x, const float* dy,
                      const AdapterSaved& saved, AdapterGrads& grads);

}  // namespace recode
