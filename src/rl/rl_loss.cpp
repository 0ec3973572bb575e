// CPU advantages and policy loss. Rows (sequences) run in parallel; each row is one pass over its tokens
// (the mask count first, from cache), accumulating its sums in double. The loss and metrics are then put
// together from the row sums by assemble_loss, which the CUDA path shares.
#include "rl/rl_loss.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "rl_loss_core.h"

namespace recode::rl {

void grpo_advantages(const float* rewards, int n, int group, Convention convention, Scale scale, float* out) {
  const double eps = convention == Convention::Verl ? 1e-6 : 1e-4;
  const int groups = n / group;
  double batch_std = 1.0;
  if (scale == Scale::Batch) {
    double mean = 0;
    for (int i = 0; i < n; ++i) mean += rewards[i];
    mean /= n;
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += (rewards[i] - mean) * (rewards[i] - mean);
    batch_std = n > 1 ? std::sqrt(ss / (n - 1)) : 0.0;
  }
  for (int g = 0; g < groups; ++g) {
    const float* r = rewards + (size_t)g * group;
    float* a = out + (size_t)g * group;
    double mean, std;
    if (group == 1) {
      if (convention == Convention::Trl) {  // r - mean = 0
        a[0] = 0.f;
        continue;
      }
      mean = 0.0;  // verl: a group of one has mean 0 and std 1
      std = 1.0;
    } else {
      mean = 0;
      for (int i = 0; i < group; ++i) mean += r[i];
      mean /= group;
      double ss = 0;
      for (int i = 0; i < group; ++i) ss += (r[i] - mean) * (r[i] - mean);
      std = std::sqrt(ss / (group - 1));
    }
    double denom = scale == Scale::Group ? std + eps : scale == Scale::Batch ? batch_std + eps : 1.0;
    for (int i = 0; i < group; ++i) a[i] = (float)((r[i] - mean) / denom);
  }
}

void dapo_dynamic_mask(const float* rewards, int n, int group, uint8_t* keep) {
  for (int g = 0; g < n / group; ++g) {
    const float* r = rewards + (size_t)g * group;
    bool all_equal = true;
    for (int i = 1; i < group; ++i) all_equal = all_equal && r[i] == r[0];
    keep[g] = (group == 1 || !all_equal) ? 1 : 0;
  }
}

void overlong_penalty(const int32_t* lengths, int n, int max_length, int buffer, float factor, float* out) {
  const int expected = max_length - buffer;
  for (int i = 0; i < n; ++i) {
    int len = lengths[i];
    if (len <= expected)
      out[i] = 0.f;
    else if (len <= max_length)
      out[i] = (float)(-(double)(len - expected) / buffer * factor);
    else
      out[i] = -factor;
  }
}

double aggregation_scale(const LossConfig& cfg, int B, int T, double row_count, double total_count) {
  return agg_scale((int)cfg.agg, B, T, cfg.norm_length, row_count, total_count);
}

LossMetrics assemble_loss(const RowSums* rows, int B, int T, const LossConfig& cfg) {
  LossMetrics m{};
  double count = 0;
  for (int b = 0; b < B; ++b) count += rows[b].count;
  double pg = 0, kl = 0, kl_raw = 0, cl = 0, ch = 0, cd = 0, nlr = 0, ent = 0, rs = 0;
  double mis = 0, corrected = 0, kept_ent = 0, kept = 0;
  double rmin = std::numeric_limits<double>::infinity(), rmax = -rmin;
  for (int b = 0; b < B; ++b) {
    const RowSums& r = rows[b];
    double s = aggregation_scale(cfg, B, T, r.count, count);
    pg += r.pg_sum * s;
    kl += r.kl_sum * s;
    kl_raw += r.kl_sum;
    cl += r.clip_low;
    ch += r.clip_high;
    cd += r.clip_dual;
    nlr += r.neg_log_ratio;
    ent += r.entropy;
    rs += r.ratio_sum;
    rmin = std::min(rmin, r.ratio_min);
    rmax = std::max(rmax, r.ratio_max);
    mis += r.mis_abs;
    corrected += r.corrected;
    kept_ent += r.kept_entropy;
    kept += r.kept;
  }
  const double denom = count + 1e-8;  // verl masked_mean
  m.pg_loss = pg;
  m.kl_loss = cfg.kl == KlEstimator::None ? 0.0 : kl;
  m.loss = m.pg_loss + (cfg.kl == KlEstimator::None ? 0.0 : cfg.kl_coef * kl);
  m.clip_frac_low = cl / denom;
  m.clip_frac_high = ch / denom;
  m.clip_frac = (cl + ch) / denom;
  m.clip_frac_dual = cd / denom;
  m.approx_kl = nlr / denom;
  m.kl_mean = cfg.kl == KlEstimator::None ? 0.0 : kl_raw / denom;
  m.entropy_mean = ent / denom;
  m.ratio_mean = rs / denom;
  m.ratio_min = count > 0 ? rmin : 0.0;
  m.ratio_max = count > 0 ? rmax : 0.0;
  m.tokens = count;
  m.kept_frac = 1.0;
  if (!cfg.basic()) {
    if (cfg.top_entropy_quantile < 1.0) m.kept_frac = kept / denom;
    m.rollout_log_ratio_abs = mis / denom;
    m.rollout_corrected_frac = corrected / denom;
    if (cfg.entropy_coef != 0.f) {
      m.entropy_bonus = kept_ent / std::max(cfg.entropy_global_norm ? count : kept, 1.0);
      m.loss -= cfg.entropy_coef * m.entropy_bonus;
    }
  }
  return m;
}

RowSums loss_row(const LossInputs& in, const LossConfig& cfg, int b, double scale, double count, float* grad_logp) {
  const int T = in.T;
  const size_t off = (size_t)b * T;
  const float* mask = in.mask + off;
  RowSums r{
      count, 0, 0, 0, 0, 0, 0, 0, 0, std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
      0,     0, 0, 0};
  for (int t = 0; t < T; ++t) {
    const float m = mask[t];
    if (m == 0.f) {
      grad_logp[off + t] = 0.f;
      continue;
    }
    float adv = in.advantages_per_token ? in.advantages[off + t] : in.advantages[b];
    float ref = in.ref_logp ? in.ref_logp[off + t] : 0.f;
    TokenLoss tl = token_loss(in.logp[off + t], in.old_logp[off + t], ref, adv, cfg.clip_low, cfg.clip_high,
                              cfg.clip_ratio_c, (int)cfg.kl);
    grad_logp[off + t] = (float)(m * scale * ((double)tl.dpg + (double)cfg.kl_coef * tl.dkl));
    add_token(r, m, tl, in.entropy ? &in.entropy[off + t] : nullptr);
  }
  return r;
}

ExtArgs ext_args(const LossInputs& in, const LossConfig& cfg) {
  ExtArgs a{};
  a.objective = (int)cfg.objective;
  a.clip_low = cfg.clip_low;
  a.clip_high = cfg.clip_high;
  a.clip_c = cfg.clip_ratio_c;
  a.delta = cfg.delta;
  a.tau_pos = cfg.sapo_tau_pos;
  a.tau_neg = cfg.sapo_tau_neg;
  a.kl_kind = (int)cfg.kl;
  a.seq_level = cfg.seq_level;
  a.rc_mode = (int)cfg.rc;
  a.rc_seq = cfg.rc_seq;
  a.rc_c = cfg.rc_c;
  a.rc_log_c = cfg.rc == RolloutCorrection::None ? 0.f : logf(cfg.rc_c);
  a.ent_mask = cfg.top_entropy_quantile < 1.0;
  a.ent_threshold = 0;
  if (a.ent_mask) {  // torch.quantile(entropy[mask > 0], 1 - q), linear interpolation; no tokens: keep none
    std::vector<float> v;
    const size_t n = (size_t)in.B * in.T;
    for (size_t i = 0; i < n; ++i)
      if (in.mask[i] > 0.f) v.push_back(in.entropy[i]);
    if (v.empty()) {
      a.ent_threshold = std::numeric_limits<double>::infinity();
    } else {
      const double pos = (1.0 - cfg.top_entropy_quantile) * (double)(v.size() - 1);
      const size_t lo = (size_t)std::floor(pos);
      std::nth_element(v.begin(), v.begin() + lo, v.end());
      const double x_lo = v[lo];
      const double x_hi = lo + 1 < v.size() ? (double)*std::min_element(v.begin() + lo + 1, v.end()) : x_lo;
      a.ent_threshold = x_lo + (x_hi - x_lo) * (pos - (double)lo);
    }
  }
  return a;
}

RowSums loss_row_ext(const LossInputs& in, const LossConfig& cfg, const ExtArgs& a, int b, double scale,
                     float* grad_logp) {
  const int T = in.T;
  const size_t off = (size_t)b * T;
  const float* mask = in.mask + off;
  RowSums r{};
  r.ratio_min = std::numeric_limits<double>::infinity();
  r.ratio_max = -r.ratio_min;
  double lr_sum = 0, rc_sum = 0;  // pass 1: the row-level log-ratios
  for (int t = 0; t < T; ++t) {
    const float m = mask[t];
    if (m == 0.f) continue;
    r.count += m;
    lr_sum += (double)m * (in.logp[off + t] - in.old_logp[off + t]);
    if (a.rc_mode != 0) rc_sum += (double)m * (in.old_logp[off + t] - in.rollout_logp[off + t]);
  }
  RowCtx row{(float)(lr_sum / std::max(r.count, 1.0)), (float)rc_sum};
  double g_seq = 0;  // pass 2: tokens; d loss / d (row's mean log-ratio) accumulated for the sequence level
  for (int t = 0; t < T; ++t) {
    const size_t i = off + t;
    const float m = mask[t];
    if (m == 0.f) {
      grad_logp[i] = 0.f;
      continue;
    }
    float adv = in.advantages_per_token ? in.advantages[i] : in.advantages[b];
    TokenExt tk = token_ext(in.logp[i], in.old_logp[i], in.ref_logp ? in.ref_logp[i] : 0.f,
                            in.rollout_logp ? in.rollout_logp[i] : 0.f, in.entropy ? in.entropy[i] : 0.f, adv, a, row);
    const double own = a.seq_level ? (double)tk.dlogp : (double)tk.dlw + tk.dlogp;
    grad_logp[i] = (float)(m * scale * (own + (double)cfg.kl_coef * tk.dkl));
    if (a.seq_level) g_seq += (double)m * tk.dlw;
    add_token_ext(r, m, tk, in.entropy ? &in.entropy[i] : nullptr);
  }
  if (a.seq_level && g_seq != 0) {  // pass 3: d (mean log-ratio) / d logp_t = m_t / max(count, 1)
    const double g = scale * g_seq / std::max(r.count, 1.0);
    for (int t = 0; t < T; ++t)
      if (mask[t] != 0.f) grad_logp[off + t] = (float)((double)grad_logp[off + t] + g * mask[t]);
  }
  return r;
}

void entropy_grad(const LossInputs& in, const LossConfig& cfg, const ExtArgs& a, double total, double kept,
                  float* grad_entropy) {
  const size_t n = (size_t)in.B * in.T;
  const double d = std::max(cfg.entropy_global_norm ? total : kept, 1.0);
  for (size_t i = 0; i < n; ++i) {
    const float m = in.mask[i];
    const bool keep = m != 0.f && (!a.ent_mask || (double)in.entropy[i] >= a.ent_threshold);
    grad_entropy[i] = keep ? (float)(-(double)cfg.entropy_coef * m / d) : 0.f;
  }
}

LossMetrics policy_loss(const LossInputs& in, const LossConfig& cfg, float* grad_logp, float* grad_entropy) {
  const int B = in.B, T = in.T;
  std::vector<RowSums> rows(B);
  parallel_for(B, 16, [&](int64_t b0, int64_t b1) {  // mask counts: token-mean needs the total first
    for (int64_t b = b0; b < b1; ++b) {
      const float* m = in.mask + (size_t)b * T;
      double c[4] = {0, 0, 0, 0};  // four chains: the sum is latency-bound otherwise
      int t = 0;
      for (; t + 4 <= T; t += 4)
        for (int j = 0; j < 4; ++j) c[j] += m[t + j];
      for (; t < T; ++t) c[0] += m[t];
      rows[b].count = (c[0] + c[1]) + (c[2] + c[3]);
    }
  });
  double total = 0;
  for (int b = 0; b < B; ++b) total += rows[b].count;
  if (!cfg.basic()) {
    const ExtArgs a = ext_args(in, cfg);
    // float compare against the double threshold: H >= thr exactly when H >= the smallest float >= thr
    float thr_f = (float)a.ent_threshold;
    if ((double)thr_f < a.ent_threshold) thr_f = std::nextafter(thr_f, INFINITY);
    const bool avx2 = simd_level() == SimdLevel::AVX2;
    parallel_for(B, 4, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const double scale = aggregation_scale(cfg, B, T, rows[b].count, total);
        rows[b] = avx2 ? loss_row_ext_avx2(in, cfg, a, thr_f, (int)b, scale, grad_logp)
                       : loss_row_ext(in, cfg, a, (int)b, scale, grad_logp);
      }
    });
    LossMetrics m = assemble_loss(rows.data(), B, T, cfg);
    if (grad_entropy) {
      double kept = 0;
      for (int b = 0; b < B; ++b) kept += rows[b].kept;
      entropy_grad(in, cfg, a, total, kept, grad_entropy);
    }
    return m;
  }
  if (grad_entropy) std::fill(grad_entropy, grad_entropy + (size_t)B * T, 0.f);
  const bool avx2 = simd_level() == SimdLevel::AVX2;
  parallel_for(B, 4, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const double scale = aggregation_scale(cfg, B, T, rows[b].count, total);
      rows[b] = avx2 ? loss_row_avx2(in, cfg, (int)b, scale, rows[b].count, grad_logp)
                     : loss_row(in, cfg, (int)b, scale, rows[b].count, grad_logp);
    }
  });
  return assemble_loss(rows.data(), B, T, cfg);
}

}  // namespace recode::rl
