// Causal attention with GQA: reference (float64, one probability row at a time), run-time dispatch to the
// fast bodies in attention_impl.h (baseline here, AVX2 in attention_avx2.cpp), and the backward pair.
#define RECODE_ATTN_NS baseline
#include "ops/attention_impl.h"

#include "core/cpu_features.h"

namespace recode::ops {

void attention_forward_avx2(float*, float*, const float*, const float*, const float*, const AttnShape&);
void attention_decode_avx2(float*, float*, const float*, const float*, const float*, const AttnShape&);
void attention_backward_avx2(float*, float*, float*, const float*, const float*, const float*, const float*,
                             const float*, const float*, const AttnShape&);

static bool use_avx2() { return simd_level() == SimdLevel::AVX2; }

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s) {
  if (use_avx2())
    attention_forward_avx2(out, lse, q, k, v, s);
  else
    baseline::forward(out, lse, q, k, v, s);
}

void attention_decode(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s) {
  if (use_avx2())
    attention_decode_avx2(out, lse, q, k, v, s);
  else
    baseline::decode(out, lse, q, k, v, s);
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const AttnShape& s) {
  if (use_avx2())
    attention_backward_avx2(dq, dk, dv, dout, q, k, v, out, lse, s);
  else
    baseline::backward(dq, dk, dv, dout, q, k, v, out, lse, s);
}

// Row i of head h: p = softmax(scale * q_i . k_j for j <= q_pos0 + i); out_i = sum_j p_j v_j.
static void ref_probs(std::vector<double>& p, double& lse, const float* q, const float* k, const AttnShape& s, int h,
                      int i) {
  const int g = h / (s.H / s.Hkv), last = std::min(s.S, s.q_pos0 + i + 1);
  p.assign(std::max(last, 0), 0.0);
  double mx = -std::numeric_limits<double>::infinity();
  for (int j = 0; j < last; ++j) {
    double x = 0;
    for (int d = 0; d < s.D; ++d)
      x += (double)q[((int64_t)i * s.H + h) * s.D + d] * k[((int64_t)j * s.Hkv + g) * s.D + d];
    p[j] = x * s.scale;
    mx = std::max(mx, p[j]);
  }
  double sum = 0;
  for (int j = 0; j < last; ++j) sum += (p[j] = std::exp(p[j] - mx));
  for (int j = 0; j < last; ++j) p[j] /= sum;
  lse = last > 0 ? mx + std::log(sum) : -std::numeric_limits<double>::infinity();
}

void attention_forward_ref(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s) {
  std::vector<double> p;
  for (int h = 0; h < s.H; ++h)
    for (int i = 0; i < s.T; ++i) {
      double L;
      ref_probs(p, L, q, k, s, h, i);
      const int g = h / (s.H / s.Hkv);
      for (int d = 0; d < s.D; ++d) {
        double o = 0;
        for (size_t j = 0; j < p.size(); ++j) o += p[j] * v[((int64_t)j * s.Hkv + g) * s.D + d];
        out[((int64_t)i * s.H + h) * s.D + d] = (float)o;
      }
      if (lse) lse[(int64_t)i * s.H + h] = (float)L;
    }
}

// Softmax backward per row: dS_j = p_j * (dP_j - sum_l p_l dP_l) with dP_j = dout_i . v_j.
void attention_backward_ref(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                            const float* v, const AttnShape& s) {
  std::vector<double> p, dp;
  for (int h = 0; h < s.H; ++h)
    for (int i = 0; i < s.T; ++i) {
      double L;
      ref_probs(p, L, q, k, s, h, i);
      const int g = h / (s.H / s.Hkv);
      const int64_t row = ((int64_t)i * s.H + h) * s.D;
      dp.assign(p.size(), 0.0);
      double pdp = 0;
      for (size_t j = 0; j < p.size(); ++j) {
        for (int d = 0; d < s.D; ++d) dp[j] += (double)dout[row + d] * v[((int64_t)j * s.Hkv + g) * s.D + d];
        pdp += p[j] * dp[j];
      }
      for (size_t j = 0; j < p.size(); ++j) {
        double ds = p[j] * (dp[j] - pdp) * s.scale;
        const int64_t kv = ((int64_t)j * s.Hkv + g) * s.D;
        for (int d = 0; d < s.D; ++d) {
          dv[kv + d] += (float)(p[j] * dout[row + d]);
          dq[row + d] += (float)(ds * k[kv + d]);
          dk[kv + d] += (float)(ds * q[row + d]);
        }
      }
    }
}

}  // namespace recode::ops
