// Per-token arithmetic of the policy loss, shared by src/rl/rl_loss.cpp and cuda/rl_loss.cu (float math, as
// verl computes it in the policy's dtype; sums are accumulated in double by the callers).
#pragma once

#include <cmath>

#include "philox.h"  // RECODE_HD

namespace recode::rl {

struct TokenLoss {
  float pg;      // policy-gradient loss of the token
  float dpg;     // d pg / d logp
  float kl;      // KL estimator value
  float dkl;     // d kl / d logp
  float ratio;   // exp(clamped log-ratio)
  float neg_lr;  // old_logp - logp, clamped (verl's ppo_kl term)
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
// 2 seq-mean-token-mean, 3 seq-mean-token-sum-norm, 4 dr-grpo), mask excluded. Mirrors verl's agg_loss; token-mean
// divides by (tokens + 1e-8) as verl's masked_mean, and an empty row contributes 0 to seq-mean-token-mean.
RECODE_HD double agg_scale(int agg, int B, int T, float norm_length, double row_count, double total_count) {
  if (agg == 0) return 1.0 / (total_count + 1e-8);
  if (agg == 1) return 1.0 / B;
  if (agg == 2) return row_count > 0 ? 1.0 / ((double)B * row_count) : 0.0;
  const double norm = norm_length > 0 ? (double)norm_length : (double)T;
  if (agg == 4) return 1.0 / ((double)B * norm);  // TRL dr_grpo: sum / (B * max_completion_length)
  return 1.0 / norm;
}

}  // namespace recode::rl

// ---- extended objectives (TRL GRPOTrainer loss_type / importance_sampling_level, rollout correction) ----------
// The basic path above stays as it is (default settings, AVX2 on the CPU); every other setting goes through
// token_ext, which the CPU row loop and the CUDA kernel share.
namespace recode::rl {

// Settings of token_ext, resolved once per call by the host.
struct ExtArgs {
  int objective;  // 0 clip (PPO/GRPO ratio clip, with delta and dual clip), 1 cispo, 2 sapo
  float clip_low, clip_high, clip_c;
  float delta;             // two-sided clip: coef_1 capped at delta (INTELLECT-2); 0 = off
  float tau_pos, tau_neg;  // SAPO temperatures for A > 0 and A <= 0
  int kl_kind;
  int seq_level;  // importance weight from the row's mean log-ratio (GSPO)
  int rc_mode;    // rollout correction: 0 none, 1 truncate at C, 2 mask outside [1/C, C]
  int rc_seq;     // ... from the row's summed log-ratio (else per token)
  float rc_c, rc_log_c;
  int ent_mask;  // keep only tokens with entropy >= ent_threshold in the policy term
  double ent_threshold;
};

// Row-level values (from the row's pre-pass) that token_ext reads.
struct RowCtx {
  float seq_lw;    // mean masked log-ratio of the row (seq_level)
  float rc_seq_d;  // summed masked old - rollout log-ratio of the row (rc_seq)
};

struct TokenExt {
  float pg;     // factor * policy term (the factor: rollout correction times entropy keep)
  float dlw;    // factor * d policy term / d log importance weight
  float dlogp;  // factor * d policy term / d logp directly (CISPO's logp)
  float kl, dkl;
  float ratio;    // the importance weight exp(clamped log weight)
  float neg_lr;   // old_logp - logp, clamped (verl's ppo_kl term, always per token)
  float mis_abs;  // |old - rollout| (0 without a correction)
  int corrected;  // the correction truncated or masked this token's weight
  int keep;       // the entropy mask kept the token (1 without one)
  int clip_low, clip_high, clip_dual;
};

// Rollout-correction weight for log-ratio d = log(pi_old / pi_rollout): min(e^d, C) or e^d masked to 0 outside
// [1/C, C]; the comparisons are in the log domain (no overflow for long sequences).
RECODE_HD float rollout_weight(float d, int mode, float c, float log_c, int* corrected) {
  if (mode == 1) {
    *corrected = d > log_c;
    return d > log_c ? c : expf(d);
  }
  *corrected = d > log_c || d < -log_c;
  return *corrected ? 0.f : expf(d);
}

RECODE_HD TokenExt token_ext(float logp, float old_logp, float ref_logp, float rollout_logp, float entropy, float adv,
                             const ExtArgs& a, const RowCtx& row) {
  TokenExt t;
  float lr = logp - old_logp;
  float lrc_tok = fminf(fmaxf(lr, -20.f), 20.f);
  t.neg_lr = -lrc_tok;
  float lw = a.seq_level ? row.seq_lw : lr;
  bool free = lw >= -20.f && lw <= 20.f;
  float coef = expf(fminf(fmaxf(lw, -20.f), 20.f));
  t.ratio = coef;
  t.clip_low = t.clip_high = t.clip_dual = 0;
  float pg, dlw = 0.f, dlogp = 0.f;
  if (a.objective == 1) {  // CISPO: -min(coef, eps_high).detach() * A * logp
    float w = fminf(coef, a.clip_high);
    pg = -w * adv * logp;
    dlogp = -w * adv;
    t.clip_high = coef > a.clip_high && adv > 0.f;
  } else if (a.objective == 2) {  // SAPO: -sigmoid(tau (coef - 1)) * 4 / tau * A
    float tau = adv > 0.f ? a.tau_pos : a.tau_neg;
    float s = 1.f / (1.f + expf(-tau * (coef - 1.f)));
    pg = -s * 4.f / tau * adv;
    dlw = free ? -4.f * adv * s * (1.f - s) * coef : 0.f;
  } else {  // clip: -min(min(coef, delta) A, clip(coef, 1 - lo, 1 + hi) A), dual clip for A < 0
    float lo = 1.f - a.clip_low, hi = 1.f + a.clip_high;
    bool capped = a.delta > 0.f && coef > a.delta;
    float pg1 = -adv * (capped ? a.delta : coef);
    float pg2 = -adv * fminf(fmaxf(coef, lo), hi);
    bool clipped = pg2 > pg1;  // with delta the clip branch can win inside [lo, hi], where it has a gradient
    pg = clipped ? pg2 : pg1;
    bool flat = clipped ? (coef < lo || coef > hi) : capped;
    dlw = (flat || !free) ? 0.f : -adv * coef;
    t.clip_low = coef < lo && adv < 0.f;  // TRL's is_low_clipped / is_high_clipped
    t.clip_high = coef > hi && adv > 0.f;
    if (a.clip_c > 0.f && adv < 0.f && pg > -adv * a.clip_c) {
      pg = -adv * a.clip_c;
      dlw = 0.f;
      t.clip_dual = 1;
    }
  }
  float factor = 1.f;
  t.keep = 1;
  if (a.ent_mask) {
    t.keep = (double)entropy >= a.ent_threshold;
    factor = t.keep ? 1.f : 0.f;
  }
  t.mis_abs = 0.f;
  t.corrected = 0;
  if (a.rc_mode != 0) {
    float d = old_logp - rollout_logp;
    t.mis_abs = fabsf(d);
    factor *= rollout_weight(a.rc_seq ? row.rc_seq_d : d, a.rc_mode, a.rc_c, a.rc_log_c, &t.corrected);
  }
  t.pg = factor * pg;
  t.dlw = factor * dlw;
  t.dlogp = factor * dlogp;
  t.kl = 0.f;
  t.dkl = 0.f;
  if (a.kl_kind != 0) {  // the same estimators as token_loss
    TokenLoss k = token_loss(logp, old_logp, ref_logp, 0.f, 0.f, 0.f, 0.f, a.kl_kind);
    t.kl = k.kl;
    t.dkl = k.dkl;
  }
  return t;
}

}  // namespace recode::rl
