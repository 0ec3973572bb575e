// Per-token arithmetic of the policy loss, shared by src/rl/rl_loss.cpp and cuda/rl_loss.cu (float math, as
// verl computes it in the policy's dtype; sums are accumulated in double by the callers).
#pragma once

#include <cmath>

#include "philox.h"  // RECODE_HD

namespace recode::rl {

struct TokenLoss {
  float pg;        // policy-gradient loss of the token
  float dpg;       // d pg / d logp
  float kl;        // KL estimator value
  float dkl;       // d kl / d logp
  float ratio;     // exp(clamped log-ratio)
  float neg_lr;    // old_logp - logp, clamped (verl's ppo_kl term)
  int clip_low, clip_high, clip_dual;
};

// kl_kind: 0 none, 1 k1, 2 k2, 3 k3 (verl kl_penalty; k3 = low_var_kl with its clamps).
RECODE_HD TokenLoss token_loss(float logp, float old_logp, float ref_logp, float adv, float clip_low, float clip_high,
                               float clip_ratio_c, int kl_kind) {
  TokenLoss t;
  float lr = logp - old_logp;
  bool lr_free = lr >= -20.f && lr <= 20.f;  // clamp passes the gradient only inside
  float lrc = fminf(fmaxf(lr, -20.f), 20.f);
  float ratio = expf(lrc);
  t.ratio = ratio;
  t.neg_lr = -lrc;
  float lo = 1.f - clip_low, hi = 1.f + clip_high;
  float pg1 = -adv * ratio;
  float pg2 = -adv * fminf(fmaxf(ratio, lo), hi);
  bool clipped = pg2 > pg1;  // the clipped branch is active: ratio strictly outside [lo, hi], zero gradient
  float pg = clipped ? pg2 : pg1;
  float dpg = clipped ? 0.f : (lr_free ? -adv * ratio : 0.f);
  t.clip_high = clipped && adv > 0.f;
  t.clip_low = clipped && adv < 0.f;
  t.clip_dual = 0;
  if (clip_ratio_c > 0.f && adv < 0.f) {
    float pg3 = -adv * clip_ratio_c;
    if (pg > pg3) {
      pg = pg3;
      dpg = 0.f;
      t.clip_dual = 1;
    }
  }
  t.pg = pg;
  t.dpg = dpg;
  t.kl = 0.f;
  t.dkl = 0.f;
  if (kl_kind == 1) {
    t.kl = logp - ref_logp;
    t.dkl = 1.f;
  } else if (kl_kind == 2) {
    float d = logp - ref_logp;
    t.kl = 0.5f * d * d;
    t.dkl = d;
  } else if (kl_kind == 3) {
    float k = ref_logp - logp;
    bool k_free = k >= -20.f && k <= 20.f;
    k = fminf(fmaxf(k, -20.f), 20.f);
    float r = expf(k);
    float raw = r - k - 1.f;
    bool raw_free = raw >= -10.f && raw <= 10.f;
    t.kl = fminf(fmaxf(raw, -10.f), 10.f);
    t.dkl = (k_free && raw_free) ? 1.f - r : 0.f;
  }
  return t;
}

// Weight of a masked token's loss in the aggregate (agg: 0 token-mean, 1 seq-mean-token-sum,
// 2 seq-mean-token-mean, 3 seq-mean-token-sum-norm), mask excluded. Mirrors verl's agg_loss; token-mean
// divides by (tokens + 1e-8) as verl's masked_mean, and an empty row contributes 0 to seq-mean-token-mean.
RECODE_HD double agg_scale(int agg, int B, int T, float norm_length, double row_count, double total_count) {
  if (agg == 0) return 1.0 / (total_count + 1e-8);
  if (agg == 1) return 1.0 / B;
  if (agg == 2) return row_count > 0 ? 1.0 / ((double)B * row_count) : 0.0;
  return 1.0 / (norm_length > 0 ? (double)norm_length : (double)T);
}

}  // namespace recode::rl
