// The advantages and the policy loss on a chosen backend (rl_loss.h): the CPU code, or the CUDA kernels
// (cuda/rl_loss.cu) on a GPU or through the SIMT emulation.
#include <algorithm>
#include <vector>

#include "device/kernels.h"
#include "rl/rl_loss.h"

namespace recode::rl {

void grpo_advantages_on(Device device, const float* rewards, int n, int group, Convention convention, Scale scale,
                        float* out) {
  if (device == Device::CPU) return grpo_advantages(rewards, n, group, convention, scale, out);
  auto fn = Kernels(device).grpo_advantages;
  const int scale_id = scale == Scale::Group ? 0 : scale == Scale::Batch ? 1 : 2;
  char err[512] = {0};
  check_kernel_status(fn(rewards, n, group, convention == Convention::Trl ? 1 : 0, scale_id, out, err, sizeof err),
                      "grpo_advantages", err);
}

LossMetrics policy_loss_on(Device device, const LossInputs& in, const LossConfig& cfg, float* grad,
                           float* grad_entropy) {
  if (device == Device::CPU) return policy_loss(in, cfg, grad, grad_entropy);
  auto fn = Kernels(device).policy_loss;
  std::vector<RowSums> rows(in.B);
  static_assert(sizeof(RowSums) == kRowSumFields * sizeof(double), "RowSums layout shared with cuda/rl_loss.cu");
  const bool ext = !cfg.basic();
  const ExtArgs a = ext ? ext_args(in, cfg) : ExtArgs{};  // the entropy threshold is found here, on the host
  char err[512] = {0};
  int rc = fn(in.B, in.T, in.logp, in.old_logp, in.ref_logp, in.advantages, in.advantages_per_token ? 1 : 0, in.mask,
              in.entropy, cfg.clip_low, cfg.clip_high, cfg.clip_ratio_c, cfg.kl_coef, (int)cfg.kl, (int)cfg.agg,
              cfg.norm_length, ext ? 1 : 0, in.rollout_logp, a.objective, a.seq_level, a.delta, a.tau_pos, a.tau_neg,
              a.rc_mode, a.rc_seq, a.rc_c, a.ent_mask, a.ent_threshold, grad, (double*)rows.data(), err, sizeof err);
  check_kernel_status(rc, "policy_loss", err);
  LossMetrics m = assemble_loss(rows.data(), in.B, in.T, cfg);
  if (grad_entropy) {
    const size_t n = (size_t)in.B * in.T;
    if (!ext) {
      std::fill(grad_entropy, grad_entropy + n, 0.f);
    } else {
      double total = 0, kept = 0;
      for (int b = 0; b < in.B; ++b) total += rows[b].count, kept += rows[b].kept;
      entropy_grad(in, cfg, a, total, kept, grad_entropy);
    }
  }
  return m;
}

}  // namespace recode::rl
