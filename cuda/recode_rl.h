/* C ABI of the RL kernels (cuda/rl_loss.cu): GRPO advantages and the per-sequence sums of the policy loss;
 * declared as cuda/recode_abi.h describes. Host pointers (copies inside). Definitions: src/rl/rl_loss.h;
 * cuda/rl_loss_core.h holds the per-token arithmetic both sides share. */
#ifndef RECODE_RL_H
#define RECODE_RL_H

#include "recode_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RECODE_RL_OPS(X)                                                                                              \
  /* rewards [n] in groups of `group` -> advantages [n]; convention 0 verl | 1 trl; scale 0 group | 1 batch | 2 none  \
   */                                                                                                                 \
  X(grpo_advantages,                                                                                                  \
    (const float* rewards, int n, int group, int convention, int scale, float* out, char* err, size_t err_len))       \
  /* [B, T] token arrays -> grad [B, T] and row_sums [B x 15] doubles (recode::rl::RowSums); the host assembles   */  \
  /* the loss and metrics from the row sums. ext 1: TRL's variants (rl_loss_core.h ExtArgs): objective 0 clip |    */ \
  /* 1 cispo | 2 sapo, seq_level (GSPO), delta (0 off), rollout correction rc_mode 0 none | 1 truncate |        */    \
  /* 2 mask at rc_c (per row with rc_seq), ent_mask: only entropy >= ent_threshold in the policy term          */     \
  X(policy_loss,                                                                                                      \
    (int B, int T, const float* logp, const float* old_logp, const float* ref_logp, const float* adv,                 \
     int adv_per_token, const float* mask, const float* entropy, float clip_low, float clip_high, float clip_c,       \
     float kl_coef, int kl_kind, int agg, float norm_length, int ext, const float* rollout_logp, int objective,       \
     int seq_level, float delta, float sapo_tau_pos, float sapo_tau_neg, int rc_mode, int rc_seq, float rc_c,         \
     int ent_mask, double ent_threshold, float* grad, double* row_sums, char* err, size_t err_len))

RECODE_RL_OPS(RECODE_ABI_DECLARE)

#ifdef __cplusplus
}
#endif

#endif /* RECODE_RL_H */
