#include "train/optim.h"

#include <algorithm>
#include <cmath>

#include <emmintrin.h>

#include "core/cpu_features.h"
#include "core/numeric.h"
#include "core/parallel.h"

namespace recode {
namespace {

// torch.optim.AdamW (torch 1.13 _single_tensor_adamw), per element, in the same order of fp32 operations:
//   param *= 1 - lr*wd;  m = m*b1 + (1-b1)*g;  v = v*b2 + (1-b2)*g*g;
//   denom = sqrt(v) / sqrt(1 - b2^t) + eps;  param += -(lr / (1 - b1^t)) * m / denom
// The scalars are computed in double (Python floats) and applied as float, as torch does for float tensors.
using optim_detail::AdamWScalars;

AdamWScalars scalars_for(const AdamWHyper& h, bool decay) {
  AdamWScalars s;
  s.decay_factor = (float)(1.0 - h.lr * (decay ? h.weight_decay : 0.0));
  s.beta1 = (float)h.beta1;
  s.one_minus_beta1 = (float)(1.0 - h.beta1);
  s.beta2 = (float)h.beta2;
  s.one_minus_beta2 = (float)(1.0 - h.beta2);
  double bc1 = 1.0 - std::pow(h.beta1, (double)h.step);
  double bc2 = 1.0 - std::pow(h.beta2, (double)h.step);
  s.bc2_sqrt = (float)std::sqrt(bc2);
  s.eps = (float)h.eps;
  s.neg_step_size = (float)(-(h.lr / bc1));
  return s;
}

// Fast path: 4 (SSE2, baseline x86-64) or 8 (AVX2) lanes with the same IEEE operations as the scalar loop
// (mul, add, sqrt and div are correctly rounded in every width), then a scalar tail.
void adamw_range(const AdamWScalars& s, float* __restrict param, const float* __restrict grad, float* __restrict m,
                 float* __restrict v, uint16_t* bf16_out, int64_t begin, int64_t end, float grad_scale) {
  int64_t i = begin;
  if (simd_level() == SimdLevel::AVX2) {
    int64_t vec_end = begin + (end - begin) / 8 * 8;
    optim_detail::adamw_range_avx2(s, param, grad, m, v, begin, vec_end, grad_scale);
    i = vec_end;
  } else {
    const __m128 gs = _mm_set1_ps(grad_scale), df = _mm_set1_ps(s.decay_factor), b1 = _mm_set1_ps(s.beta1),
                 omb1 = _mm_set1_ps(s.one_minus_beta1), b2 = _mm_set1_ps(s.beta2),
                 omb2 = _mm_set1_ps(s.one_minus_beta2), bc2 = _mm_set1_ps(s.bc2_sqrt), eps = _mm_set1_ps(s.eps),
                 nss = _mm_set1_ps(s.neg_step_size);
    for (; i + 4 <= end; i += 4) {
      __m128 g = _mm_mul_ps(_mm_loadu_ps(grad + i), gs);
      __m128 p = _mm_mul_ps(_mm_loadu_ps(param + i), df);
      __m128 mi = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(m + i), b1), _mm_mul_ps(omb1, g));
      __m128 vi = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(v + i), b2), _mm_mul_ps(omb2, _mm_mul_ps(g, g)));
      __m128 denom = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vi), bc2), eps);
      p = _mm_add_ps(p, _mm_mul_ps(nss, _mm_div_ps(mi, denom)));
      _mm_storeu_ps(m + i, mi);
      _mm_storeu_ps(v + i, vi);
      _mm_storeu_ps(param + i, p);
    }
  }
  for (; i < end; ++i) {
    float g = grad[i] * grad_scale;
    float p = param[i] * s.decay_factor;
    float mi = m[i] * s.beta1 + s.one_minus_beta1 * g;
    float vi = v[i] * s.beta2 + s.one_minus_beta2 * (g * g);
    float denom = std::sqrt(vi) / s.bc2_sqrt + s.eps;
    p = p + s.neg_step_size * (mi / denom);
    m[i] = mi;
    v[i] = vi;
    param[i] = p;
  }
  if (bf16_out)
    for (int64_t k = begin; k < end; ++k) bf16_out[k] = float_to_bf16(param[k]).bits;
}

constexpr int64_t kChunk = kOptimChunk;

// Work items: (slot, begin, end) chunks over all tensors, so one big and many small tensors balance.
struct Chunk {
  int slot;
  int64_t begin, end;
};

std::vector<Chunk> make_chunks(const std::vector<int64_t>& counts) {
  std::vector<Chunk> chunks;
  for (size_t s = 0; s < counts.size(); ++s)
    for (int64_t b = 0; b < counts[s]; b += kChunk) chunks.push_back({(int)s, b, std::min(counts[s], b + kChunk)});
  return chunks;
}

}  // namespace

void adamw_step_reference(const AdamWHyper& h, const ParamSlot& p, float grad_scale) {
  AdamWScalars s = scalars_for(h, p.decay);
  for (int64_t i = 0; i < p.count; ++i) {
    float g = p.grad[i] * grad_scale;
    p.param[i] = p.param[i] * s.decay_factor;
    p.exp_avg[i] = p.exp_avg[i] * s.beta1 + s.one_minus_beta1 * g;
    p.exp_avg_sq[i] = p.exp_avg_sq[i] * s.beta2 + s.one_minus_beta2 * (g * g);
    float denom = std::sqrt(p.exp_avg_sq[i]) / s.bc2_sqrt + s.eps;
    p.param[i] = p.param[i] + s.neg_step_size * (p.exp_avg[i] / denom);
    if (p.bf16_out) p.bf16_out[i] = float_to_bf16(p.param[i]).bits;
  }
}

void adamw_step(const AdamWHyper& h, const std::vector<ParamSlot>& slots, float grad_scale) {
  std::vector<int64_t> counts;
  std::vector<AdamWScalars> sc;
  for (const ParamSlot& p : slots) {
    counts.push_back(p.count);
    sc.push_back(scalars_for(h, p.decay));
  }
  std::vector<Chunk> chunks = make_chunks(counts);
  parallel_for((int64_t)chunks.size(), 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      const Chunk& ch = chunks[c];
      const ParamSlot& p = slots[ch.slot];
      adamw_range(sc[ch.slot], p.param, p.grad, p.exp_avg, p.exp_avg_sq, p.bf16_out, ch.begin, ch.end, grad_scale);
    }
  });
}

double grad_norm_sq(const std::vector<const float*>& grads, const std::vector<int64_t>& counts) {
  std::vector<Chunk> chunks = make_chunks(counts);
  std::vector<double> partial(chunks.size(), 0.0);
  parallel_for((int64_t)chunks.size(), 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      const float* g = grads[chunks[c].slot];
      double acc = 0.0;
      for (int64_t i = chunks[c].begin; i < chunks[c].end; ++i) acc += (double)g[i] * (double)g[i];
      partial[c] = acc;
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;  // fixed order: the same sum for any thread count
  return total;
}

double clip_grad_norm(const std::vector<float*>& grads, const std::vector<int64_t>& counts, double max_norm) {
  std::vector<const float*> cg(grads.begin(), grads.end());
  double norm = std::sqrt(grad_norm_sq(cg, counts));
  if (!std::isfinite(norm)) return norm;
  double coef = max_norm / (norm + 1e-6);
  if (coef >= 1.0) return norm;
  float f = (float)coef;
  std::vector<Chunk> chunks = make_chunks(counts);
  parallel_for((int64_t)chunks.size(), 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      float* g = grads[chunks[c].slot];
      for (int64_t i = chunks[c].begin; i < chunks[c].end; ++i) g[i] *= f;
    }
  });
  return norm;
}

}  // namespace recode
