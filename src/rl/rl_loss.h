// GRPO / DAPO advantages and the clipped policy-gradient loss (verl's definitions, TRL's where noted).
// CPU implementation in src/rl/rl_loss.cpp, CUDA in cuda/rl_loss.cu (same per-token arithmetic, rl_loss_core.h);
// the *_on functions (rl_loss_device.cpp) run either on a chosen backend.
#pragma once

#include <algorithm>

#include <cstdint>

#include "rl_loss_core.h"  // ExtArgs

namespace recode {
enum class Device;  // device/kernels.h
}

namespace recode::rl {

// ---- advantages -------------------------------------------------------------------------------------
// Rewards come in consecutive groups of `group` responses to the same prompt (n % group == 0).
//   verl: A = (r - mean_g) / (std_g + 1e-6), std unbiased; a group of one uses mean 0 and std 1 (as verl's
//         compute_grpo_outcome_advantage does), so A = r / (1 + 1e-6).
//   trl:  A = (r - mean_g) / (std + 1e-4), std unbiased; a group of one gives A = 0 (TRL itself requires
//         at least two generations per prompt).
//   scale: Group divides by the group's std, Batch by the std of all n rewards (TRL's scale_rewards="batch"),
//          None does not divide (Dr. GRPO): A = r - mean_g.
enum class Convention { Verl, Trl };
enum class Scale { Group, Batch, None };
void grpo_advantages(const float* rewards, int n, int group, Convention convention, Scale scale, float* out);
void grpo_advantages_on(Device device, const float* rewards, int n, int group, Convention convention, Scale scale,
                        float* out);

// DAPO dynamic sampling: keep[g] = 1 unless every reward of group g is equal (groups of one are kept, as in
// verl's filter on std > 0 or a single response).
void dapo_dynamic_mask(const float* rewards, int n, int group, uint8_t* keep);

// DAPO overlong reward shaping: with L_exp = max_length - buffer, a response of length L gets
//   0 if L <= L_exp;  -(L - L_exp) / buffer * factor if L_exp < L <= max_length;  -factor if L > max_length.
void overlong_penalty(const int32_t* lengths, int n, int max_length, int buffer, float factor, float* out);

// ---- policy loss --------------------------------------------------------------------------------------
enum class KlEstimator { None, K1, K2, K3 };
enum class Aggregation { TokenMean, SeqMeanTokenSum, SeqMeanTokenMean, SeqMeanTokenSumNorm, DrGrpo };
// TRL GRPOTrainer's per-token objectives: the clipped ratio (grpo, bnpo, dr_grpo, dapo, luspo), CISPO's clipped
// detached weight times logp, SAPO's sigmoid gate.
enum class Objective { Clip, Cispo, Sapo };
enum class RolloutCorrection { None, Truncate, Mask };

struct LossConfig {
  float clip_low = 0.2f;     // ratio lower bound 1 - clip_low
  float clip_high = 0.2f;    // ratio upper bound 1 + clip_high (DAPO clip-higher: 0.28)
  float clip_ratio_c = 0.f;  // dual clip for negative advantages (verl clip_ratio_c, > 1); 0 = off
  float kl_coef = 0.f;       // weight of the KL penalty to the reference policy
  KlEstimator kl = KlEstimator::None;
  Aggregation agg = Aggregation::TokenMean;
  float norm_length = 0.f;  // divisor of seq-mean-token-sum-norm and dr-grpo; 0 = T

  // ---- TRL's variants (issue 16); the defaults are the basic path above ----
  Objective objective = Objective::Clip;
  bool seq_level = false;  // importance_sampling_level="sequence" (GSPO): exp(masked mean log-ratio of the row)
  float delta = 0.f;       // two-sided clip: coef_1 = min(coef_1, delta); 0 = off
  float sapo_tau_pos = 1.f, sapo_tau_neg = 1.05f;
  float entropy_coef = 0.f;           // loss -= entropy_coef * mean entropy of the kept tokens
  bool entropy_global_norm = false;   // the bonus divides by all tokens (TRL's dapo / cispo) instead of the kept ones
  double top_entropy_quantile = 1.0;  // < 1: the policy term keeps tokens with entropy >= that quantile's threshold
  RolloutCorrection rc = RolloutCorrection::None;  // weight exp(old_logp - rollout_logp), truncated / masked at rc_c
  bool rc_seq = false;                             // one weight per sequence from the summed log-ratio
  float rc_c = 0.f;

  // The settings the basic path (token_loss, AVX2) computes.
  bool basic() const {
    return objective == Objective::Clip && !seq_level && delta == 0.f && entropy_coef == 0.f &&
           top_entropy_quantile >= 1.0 && rc == RolloutCorrection::None;
  }
};

// Inputs are [B, T] row-major (advantages [B] or [B, T]); mask is 0/1 (or weights) per token.
struct LossInputs {
  int B = 0, T = 0;
  const float* logp = nullptr;      // current policy log-probabilities
  const float* old_logp = nullptr;  // behaviour policy (rollout) log-probabilities
  const float* ref_logp = nullptr;  // reference policy, required when kl != None
  const float* advantages = nullptr;
  bool advantages_per_token = false;
  const float* mask = nullptr;
  const float* entropy = nullptr;  // optional, for the entropy metric; required by entropy_coef / top_entropy_quantile
  const float* rollout_logp = nullptr;  // the generator's log-probabilities, required by the rollout correction
};

// Per-row sums the loss and every metric are assembled from (masked: each term is weighted by mask).
struct RowSums {
  double count, pg_sum, kl_sum, clip_low, clip_high, clip_dual, neg_log_ratio, entropy, ratio_sum;
  double ratio_min, ratio_max;  // over tokens with mask > 0 (+inf / -inf when none)
  double mis_abs, corrected;    // sum of |old - rollout| and of corrected tokens (rollout correction)
  double kept_entropy, kept;    // sum of entropy and count over tokens the entropy mask keeps (entropy bonus)
};
constexpr int kRowSumFields = 15;

// One masked token's terms (mask m) added to its row's sums, for the scalar and AVX2 rows alike. Tok is TokenLoss (the
// clipped objective) or TokenExt (TRL's objectives); entropy points at the token's entropy or is NULL. static: the AVX2
// file (compiled with FMA) keeps its own copy rather than sharing the baseline one at link time.
template <class Tok>
static inline void add_token(RowSums& r, float m, const Tok& tk, const float* entropy) {
  r.pg_sum += (double)m * tk.pg;
  r.kl_sum += (double)m * tk.kl;
  r.clip_low += m * tk.clip_low;
  r.clip_high += m * tk.clip_high;
  r.clip_dual += m * tk.clip_dual;
  r.neg_log_ratio += (double)m * tk.neg_lr;
  if (entropy) r.entropy += (double)m * *entropy;
  r.ratio_sum += (double)m * tk.ratio;
  r.ratio_min = std::min(r.ratio_min, (double)tk.ratio);
  r.ratio_max = std::max(r.ratio_max, (double)tk.ratio);
}
// The same plus the rollout-correction and entropy-mask sums of TokenExt.
template <class Tok>
static inline void add_token_ext(RowSums& r, float m, const Tok& tk, const float* entropy) {
  add_token(r, m, tk, entropy);
  r.mis_abs += (double)m * tk.mis_abs;
  r.corrected += m * tk.corrected;
  if (tk.keep) {
    r.kept += m;
    if (entropy) r.kept_entropy += (double)m * *entropy;
  }
}

struct LossMetrics {
  double loss, pg_loss, kl_loss;
  double clip_frac, clip_frac_low, clip_frac_high, clip_frac_dual;
  double approx_kl;     // masked mean of old_logp - logp (clamped log-ratio), verl's ppo_kl
  double kl_mean;       // masked mean of the KL estimator (0 without a reference)
  double entropy_mean;  // masked mean of entropy (0 when not given)
  double ratio_mean, ratio_min, ratio_max;
  double tokens;                  // sum of the mask
  double entropy_bonus;           // the mean entropy the bonus rewards (0 without entropy_coef)
  double kept_frac;               // fraction of tokens the entropy mask keeps (1 without one)
  double rollout_log_ratio_abs;   // masked mean |old_logp - rollout_logp| (0 without a correction)
  double rollout_corrected_frac;  // fraction of tokens whose correction weight was truncated or masked
};

// Assembles the loss and the metrics from per-row sums (shared by the CPU and CUDA paths).
LossMetrics assemble_loss(const RowSums* rows, int B, int T, const LossConfig& cfg);
// The weight each masked token's loss gets in the aggregate, for row b (mask excluded).
double aggregation_scale(const LossConfig& cfg, int B, int T, double row_count, double total_count);

// One sequence's per-token loss and gradient (grad_logp[b*T .. b*T+T) written) and its sums; scale is the
// aggregation weight of its tokens. The AVX2 variant (rl_loss_avx2.cpp) computes the same in 8-wide float.
RowSums loss_row(const LossInputs& in, const LossConfig& cfg, int b, double scale, double count, float* grad_logp);
RowSums loss_row_avx2(const LossInputs& in, const LossConfig& cfg, int b, double scale, double count, float* grad_logp);

// The extended path's per-call settings (entropy threshold from the masked entropies' quantile, as torch.quantile
// with linear interpolation) and its row with two passes (the sequence-level weight couples a row's tokens).
ExtArgs ext_args(const LossInputs& in, const LossConfig& cfg);
RowSums loss_row_ext(const LossInputs& in, const LossConfig& cfg, const ExtArgs& a, int b, double scale,
                     float* grad_logp);
// The same in 8-wide float (rl_loss_avx2.cpp); ent_threshold_f: the smallest float >= a.ent_threshold.
RowSums loss_row_ext_avx2(const LossInputs& in, const LossConfig& cfg, const ExtArgs& a, float ent_threshold_f, int b,
                          double scale, float* grad_logp);
// d loss / d entropy of every token: -entropy_coef * mask * keep / D (D: kept tokens, or all with
// entropy_global_norm; at least 1).
void entropy_grad(const LossInputs& in, const LossConfig& cfg, const ExtArgs& a, double total, double kept,
                  float* grad_entropy);

// Returns the loss and metrics; grad_logp[B*T] receives d loss / d logp, grad_entropy[B*T] (optional, with
// entropy_coef) d loss / d entropy.
LossMetrics policy_loss(const LossInputs& in, const LossConfig& cfg, float* grad_logp, float* grad_entropy = nullptr);
// The same on `device`: the CPU code, or the CUDA kernel (on a GPU or emulated), which returns per-row sums that
// assemble_loss() turns into the metrics.
LossMetrics policy_loss_on(Device device, const LossInputs& in, const LossConfig& cfg, float* grad_logp,
                           float* grad_entropy = nullptr);

}  // namespace recode::rl
