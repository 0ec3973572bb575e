// AVX2 variant of one sequence's policy loss (rl_loss.cpp loss_row): eight tokens at a time in float, the
// sums widened to double every eight tokens. Same branches as token_loss in rl_loss_core.h, written as
// masks and blends; exp is a Cody-Waite + degree-7 polynomial (within 2 ulp of expf) on the clamped range.
#include <immintrin.h>

#include "core/avx2_exp.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "rl/rl_loss.h"
#include "rl_loss_core.h"

namespace recode::rl {

namespace {

// e^x for x in [-20, 20] (both callers clamp first).
inline __m256 exp8(__m256 x) {
  __m256 n = avx2::exp_round_n(x);
  return avx2::exp_from_n(x, n);
}

inline __m256 clamp8(__m256 x, float lo, float hi) {
  return _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(lo)), _mm256_set1_ps(hi));
}
inline __m256 in_range8(__m256 x, float lo, float hi) {
  return _mm256_and_ps(_mm256_cmp_ps(x, _mm256_set1_ps(lo), _CMP_GE_OQ),
                       _mm256_cmp_ps(x, _mm256_set1_ps(hi), _CMP_LE_OQ));
}

// Double accumulator for eight float lanes.
struct Acc {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  void add(__m256 v) {
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  double total() const {
    alignas(32) double t[4];
    _mm256_store_pd(t, _mm256_add_pd(lo, hi));
    return (t[0] + t[1]) + (t[2] + t[3]);
  }
};

}  // namespace

RowSums loss_row_avx2(const LossInputs& in, const LossConfig& cfg, int b, double scale, double count,
                      float* grad_logp) {
  const int T = in.T;
  const size_t off = (size_t)b * T;
  const float* logp = in.logp + off;
  const float* old = in.old_logp + off;
  const float* ref = in.ref_logp ? in.ref_logp + off : nullptr;
  const float* mask = in.mask + off;
  const float* ent = in.entropy ? in.entropy + off : nullptr;
  float* grad = grad_logp + off;
  const int kl_kind = (int)cfg.kl;
  const __m256 zero = _mm256_setzero_ps();
  const __m256 lo = _mm256_set1_ps(1.f - cfg.clip_low), hi = _mm256_set1_ps(1.f + cfg.clip_high);
  const __m256 c = _mm256_set1_ps(cfg.clip_ratio_c);
  const __m256 vscale = _mm256_set1_ps((float)scale), coef = _mm256_set1_ps(cfg.kl_coef);
  const __m256 row_adv = _mm256_set1_ps(in.advantages_per_token ? 0.f : in.advantages[b]);
  Acc pg_sum, kl_sum, clip_low, clip_high, clip_dual, neg_lr, ent_sum, ratio_sum;
  __m256 rmin = _mm256_set1_ps(INFINITY), rmax = _mm256_set1_ps(-INFINITY);
  int t = 0;
  for (; t + 8 <= T; t += 8) {
    const __m256 m = _mm256_loadu_ps(mask + t);
    const __m256 live = _mm256_cmp_ps(m, zero, _CMP_NEQ_UQ);  // masked-out tokens contribute nothing, even NaN
    const __m256 A = in.advantages_per_token ? _mm256_loadu_ps(in.advantages + off + t) : row_adv;
    const __m256 negA = _mm256_sub_ps(zero, A);
    const __m256 lr = _mm256_sub_ps(_mm256_loadu_ps(logp + t), _mm256_loadu_ps(old + t));
    const __m256 lr_free = in_range8(lr, -20.f, 20.f);
    const __m256 lrc = clamp8(lr, -20.f, 20.f);
    const __m256 ratio = exp8(lrc);
    const __m256 pg1 = _mm256_mul_ps(negA, ratio);
    const __m256 pg2 = _mm256_mul_ps(negA, _mm256_min_ps(_mm256_max_ps(ratio, lo), hi));
    const __m256 clipped = _mm256_cmp_ps(pg2, pg1, _CMP_GT_OQ);
    __m256 pg = _mm256_blendv_ps(pg1, pg2, clipped);
    __m256 dpg = _mm256_andnot_ps(clipped, _mm256_and_ps(lr_free, pg1));  // -A ratio where free and unclipped
    const __m256 a_pos = _mm256_cmp_ps(A, zero, _CMP_GT_OQ), a_neg = _mm256_cmp_ps(A, zero, _CMP_LT_OQ);
    __m256 dual = zero;
    if (cfg.clip_ratio_c > 0.f) {
      const __m256 pg3 = _mm256_mul_ps(negA, c);
      dual = _mm256_and_ps(a_neg, _mm256_cmp_ps(pg, pg3, _CMP_GT_OQ));
      pg = _mm256_blendv_ps(pg, pg3, dual);
      dpg = _mm256_andnot_ps(dual, dpg);
    }
    __m256 kl = zero, dkl = zero;
    if (kl_kind != 0) {
      const __m256 rv = _mm256_loadu_ps(ref + t);
      if (kl_kind == 1) {
        kl = _mm256_sub_ps(_mm256_loadu_ps(logp + t), rv);
        dkl = _mm256_set1_ps(1.f);
      } else if (kl_kind == 2) {
        const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(logp + t), rv);
        kl = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_mul_ps(d, d));
        dkl = d;
      } else {
        const __m256 k = _mm256_sub_ps(rv, _mm256_loadu_ps(logp + t));
        const __m256 k_free = in_range8(k, -20.f, 20.f);
        const __m256 kc = clamp8(k, -20.f, 20.f);
        const __m256 r = exp8(kc);
        const __m256 raw = _mm256_sub_ps(_mm256_sub_ps(r, kc), _mm256_set1_ps(1.f));
        const __m256 raw_free = in_range8(raw, -10.f, 10.f);
        kl = clamp8(raw, -10.f, 10.f);
        dkl = _mm256_and_ps(_mm256_and_ps(k_free, raw_free), _mm256_sub_ps(_mm256_set1_ps(1.f), r));
      }
    }
    const __m256 g = _mm256_mul_ps(_mm256_mul_ps(m, vscale), _mm256_fmadd_ps(coef, dkl, dpg));
    _mm256_storeu_ps(grad + t, _mm256_and_ps(live, g));
    pg_sum.add(_mm256_and_ps(live, _mm256_mul_ps(m, pg)));
    kl_sum.add(_mm256_and_ps(live, _mm256_mul_ps(m, kl)));
    clip_low.add(_mm256_and_ps(live, _mm256_and_ps(_mm256_and_ps(clipped, a_neg), m)));
    clip_high.add(_mm256_and_ps(live, _mm256_and_ps(_mm256_and_ps(clipped, a_pos), m)));
    clip_dual.add(_mm256_and_ps(live, _mm256_and_ps(dual, m)));
    neg_lr.add(_mm256_and_ps(live, _mm256_mul_ps(m, _mm256_sub_ps(zero, lrc))));
    if (ent) ent_sum.add(_mm256_and_ps(live, _mm256_mul_ps(m, _mm256_loadu_ps(ent + t))));
    ratio_sum.add(_mm256_and_ps(live, _mm256_mul_ps(m, ratio)));
    rmin = _mm256_min_ps(rmin, _mm256_blendv_ps(_mm256_set1_ps(INFINITY), ratio, live));
    rmax = _mm256_max_ps(rmax, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), ratio, live));
  }
  RowSums r{count,
            pg_sum.total(),
            kl_sum.total(),
            clip_low.total(),
            clip_high.total(),
            clip_dual.total(),
            neg_lr.total(),
            ent_sum.total(),
            ratio_sum.total(),
            std::numeric_limits<double>::infinity(),
            -std::numeric_limits<double>::infinity(),
            0,
            0,
            0,
            0};
  alignas(32) float lmin[8], lmax[8];
  _mm256_store_ps(lmin, rmin);
  _mm256_store_ps(lmax, rmax);
  for (int j = 0; j < 8; ++j) {
    r.ratio_min = std::min(r.ratio_min, (double)lmin[j]);
    r.ratio_max = std::max(r.ratio_max, (double)lmax[j]);
  }
  for (; t < T; ++t) {  // tail, as the scalar row does
    const float m = mask[t];
    if (m == 0.f) {
      grad[t] = 0.f;
      continue;
    }
    float adv = in.advantages_per_token ? in.advantages[off + t] : in.advantages[b];
    TokenLoss tl =
        token_loss(logp[t], old[t], ref ? ref[t] : 0.f, adv, cfg.clip_low, cfg.clip_high, cfg.clip_ratio_c, kl_kind);
    grad[t] = (float)(m * scale * ((double)tl.dpg + (double)cfg.kl_coef * tl.dkl));
    add_token(r, m, tl, ent ? &ent[t] : nullptr);
  }
  return r;
}

// The extended path (TRL's objectives, rl_loss.cpp loss_row_ext) eight tokens at a time: the same three passes
// (row log-ratio sums, tokens, the sequence-level coupling), token_ext's branches as masks and blends. The SAPO
// gate and the correction weight take e^x on [-80, 80] (their arguments are not clamped to +-20; beyond 80 the
// float result is 0, 1 or the cap either way).
RowSums loss_row_ext_avx2(const LossInputs& in, const LossConfig& cfg, const ExtArgs& a, float ent_threshold_f, int b,
                          double scale, float* grad_logp) {
  const int T = in.T;
  const size_t off = (size_t)b * T;
  const float* logp = in.logp + off;
  const float* old = in.old_logp + off;
  const float* ref = in.ref_logp ? in.ref_logp + off : nullptr;
  const float* roll = in.rollout_logp ? in.rollout_logp + off : nullptr;
  const float* mask = in.mask + off;
  const float* ent = in.entropy ? in.entropy + off : nullptr;
  float* grad = grad_logp + off;
  RowSums r{};
  r.ratio_min = std::numeric_limits<double>::infinity();
  r.ratio_max = -r.ratio_min;
  double lr_sum = 0, rc_sum = 0;  // pass 1, in the scalar order (the row values then match loss_row_ext exactly)
  for (int t = 0; t < T; ++t) {
    const float m = mask[t];
    if (m == 0.f) continue;
    r.count += m;
    lr_sum += (double)m * (logp[t] - old[t]);
    if (a.rc_mode != 0) rc_sum += (double)m * (old[t] - roll[t]);
  }
  const RowCtx row{(float)(lr_sum / std::max(r.count, 1.0)), (float)rc_sum};
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
  const __m256 lo = _mm256_set1_ps(1.f - a.clip_low), hi = _mm256_set1_ps(1.f + a.clip_high);
  const __m256 cap = _mm256_set1_ps(a.clip_high), delta = _mm256_set1_ps(a.delta), cc = _mm256_set1_ps(a.clip_c);
  const __m256 vscale = _mm256_set1_ps((float)scale), coef_kl = _mm256_set1_ps(cfg.kl_coef);
  const __m256 row_adv = _mm256_set1_ps(in.advantages_per_token ? 0.f : in.advantages[b]);
  const __m256 seq_lw = _mm256_set1_ps(row.seq_lw), rc_seq_d = _mm256_set1_ps(row.rc_seq_d);
  const __m256 rc_c = _mm256_set1_ps(a.rc_c), rc_log_c = _mm256_set1_ps(a.rc_log_c);
  const __m256 thr = _mm256_set1_ps(ent_threshold_f);
  const __m256 tau_pos = _mm256_set1_ps(a.tau_pos), tau_neg = _mm256_set1_ps(a.tau_neg);
  auto wide_exp = [](__m256 x) {
    x = clamp8(x, -80.f, 80.f);
    return avx2::exp_from_n(x, avx2::exp_round_n(x));
  };
  Acc pg_sum, kl_sum, clip_low, clip_high, clip_dual, neg_lr, ent_sum, ratio_sum, mis, corrected, kept_ent, kept, g_seq;
  __m256 rmin = _mm256_set1_ps(INFINITY), rmax = _mm256_set1_ps(-INFINITY);
  int t = 0;
  for (; t + 8 <= T; t += 8) {
    const __m256 m = _mm256_loadu_ps(mask + t);
    const __m256 live = _mm256_cmp_ps(m, zero, _CMP_NEQ_UQ);
    const __m256 A = in.advantages_per_token ? _mm256_loadu_ps(in.advantages + off + t) : row_adv;
    const __m256 negA = _mm256_sub_ps(zero, A);
    const __m256 lp = _mm256_loadu_ps(logp + t), od = _mm256_loadu_ps(old + t);
    const __m256 lr = _mm256_sub_ps(lp, od);
    const __m256 lw = a.seq_level ? seq_lw : lr;
    const __m256 free = in_range8(lw, -20.f, 20.f);
    const __m256 coef = exp8(clamp8(lw, -20.f, 20.f));
    const __m256 a_pos = _mm256_cmp_ps(A, zero, _CMP_GT_OQ), a_neg = _mm256_cmp_ps(A, zero, _CMP_LT_OQ);
    __m256 pg, dlw = zero, dlogp = zero, cl = zero, ch = zero, dual = zero;
    if (a.objective == 1) {  // CISPO
      const __m256 w = _mm256_min_ps(coef, cap);
      dlogp = _mm256_mul_ps(_mm256_sub_ps(zero, w), A);
      pg = _mm256_mul_ps(dlogp, lp);
      ch = _mm256_and_ps(_mm256_cmp_ps(coef, cap, _CMP_GT_OQ), a_pos);
    } else if (a.objective == 2) {  // SAPO
      const __m256 tau = _mm256_blendv_ps(tau_neg, tau_pos, a_pos);
      const __m256 e = wide_exp(_mm256_mul_ps(_mm256_sub_ps(zero, tau), _mm256_sub_ps(coef, one)));
      const __m256 sg = _mm256_div_ps(one, _mm256_add_ps(one, e));
      pg = _mm256_mul_ps(_mm256_div_ps(_mm256_mul_ps(_mm256_sub_ps(zero, sg), _mm256_set1_ps(4.f)), tau), A);
      const __m256 d = _mm256_mul_ps(
          _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(-4.f), A), sg), _mm256_sub_ps(one, sg)), coef);
      dlw = _mm256_and_ps(free, d);
    } else {  // clipped ratio, delta, dual clip
      const __m256 capped = a.delta > 0.f ? _mm256_cmp_ps(coef, delta, _CMP_GT_OQ) : zero;
      const __m256 pg1 = _mm256_mul_ps(negA, _mm256_blendv_ps(coef, delta, capped));
      const __m256 pg2 = _mm256_mul_ps(negA, _mm256_min_ps(_mm256_max_ps(coef, lo), hi));
      const __m256 clipped = _mm256_cmp_ps(pg2, pg1, _CMP_GT_OQ);
      pg = _mm256_blendv_ps(pg1, pg2, clipped);
      const __m256 below = _mm256_cmp_ps(coef, lo, _CMP_LT_OQ), above = _mm256_cmp_ps(coef, hi, _CMP_GT_OQ);
      const __m256 flat = _mm256_blendv_ps(capped, _mm256_or_ps(below, above), clipped);
      dlw = _mm256_andnot_ps(flat, _mm256_and_ps(free, _mm256_mul_ps(negA, coef)));
      cl = _mm256_and_ps(below, a_neg);
      ch = _mm256_and_ps(above, a_pos);
      if (a.clip_c > 0.f) {
        const __m256 pg3 = _mm256_mul_ps(negA, cc);
        dual = _mm256_and_ps(a_neg, _mm256_cmp_ps(pg, pg3, _CMP_GT_OQ));
        pg = _mm256_blendv_ps(pg, pg3, dual);
        dlw = _mm256_andnot_ps(dual, dlw);
      }
    }
    __m256 factor = one, keep = live;
    if (a.ent_mask) {
      keep = _mm256_and_ps(live, _mm256_cmp_ps(_mm256_loadu_ps(ent + t), thr, _CMP_GE_OQ));
      factor = _mm256_and_ps(keep, one);
    }
    __m256 misv = zero, corr = zero;
    if (a.rc_mode != 0) {
      const __m256 d = _mm256_sub_ps(od, _mm256_loadu_ps(roll + t));
      misv = _mm256_andnot_ps(_mm256_set1_ps(-0.f), d);
      const __m256 dw = a.rc_seq ? rc_seq_d : d;
      const __m256 ew = wide_exp(dw);
      __m256 w;
      if (a.rc_mode == 1) {
        corr = _mm256_cmp_ps(dw, rc_log_c, _CMP_GT_OQ);
        w = _mm256_blendv_ps(ew, rc_c, corr);
      } else {
        corr = _mm256_or_ps(_mm256_cmp_ps(dw, rc_log_c, _CMP_GT_OQ),
                            _mm256_cmp_ps(dw, _mm256_sub_ps(zero, rc_log_c), _CMP_LT_OQ));
        w = _mm256_andnot_ps(corr, ew);
      }
      factor = _mm256_mul_ps(factor, w);
    }
    pg = _mm256_mul_ps(factor, pg);
    dlw = _mm256_mul_ps(factor, dlw);
    dlogp = _mm256_mul_ps(factor, dlogp);
    __m256 kl = zero, dkl = zero;
    if (a.kl_kind != 0) {
      const __m256 rv = _mm256_loadu_ps(ref + t);
      if (a.kl_kind == 1) {
        kl = _mm256_sub_ps(lp, rv);
        dkl = one;
      } else if (a.kl_kind == 2) {
        const __m256 d = _mm256_sub_ps(lp, rv);
        kl = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_mul_ps(d, d));
        dkl = d;
      } else {
        const __m256 k = _mm256_sub_ps(rv, lp);
        const __m256 k_free = in_range8(k, -20.f, 20.f);
        const __m256 kc = clamp8(k, -20.f, 20.f);
        const __m256 rr = exp8(kc);
        const __m256 raw = _mm256_sub_ps(_mm256_sub_ps(rr, kc), one);
        kl = clamp8(raw, -10.f, 10.f);
        dkl = _mm256_and_ps(_mm256_and_ps(k_free, in_range8(raw, -10.f, 10.f)), _mm256_sub_ps(one, rr));
      }
    }
    const __m256 own = a.seq_level ? dlogp : _mm256_add_ps(dlw, dlogp);
    const __m256 g = _mm256_mul_ps(_mm256_mul_ps(m, vscale), _mm256_fmadd_ps(coef_kl, dkl, own));
    _mm256_storeu_ps(grad + t, _mm256_and_ps(live, g));
    pg_sum.add(_mm256_and_ps(live, _mm256_mul_ps(m, pg)));
    kl_sum.add(_mm256_and_ps(live, _mm256_mul_ps(m, kl)));
    clip_low.add(_mm256_and_ps(live, _mm256_and_ps(cl, m)));
    clip_high.add(_mm256_and_ps(live, _mm256_and_ps(ch, m)));
    clip_dual.add(_mm256_and_ps(live, _mm256_and_ps(dual, m)));
    neg_lr.add(_mm256_and_ps(live, _mm256_mul_ps(m, _mm256_sub_ps(zero, clamp8(lr, -20.f, 20.f)))));
    if (ent) ent_sum.add(_mm256_and_ps(live, _mm256_mul_ps(m, _mm256_loadu_ps(ent + t))));
    ratio_sum.add(_mm256_and_ps(live, _mm256_mul_ps(m, coef)));
    rmin = _mm256_min_ps(rmin, _mm256_blendv_ps(_mm256_set1_ps(INFINITY), coef, live));
    rmax = _mm256_max_ps(rmax, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), coef, live));
    mis.add(_mm256_and_ps(live, _mm256_mul_ps(m, misv)));
    corrected.add(_mm256_and_ps(live, _mm256_and_ps(corr, m)));
    kept.add(_mm256_and_ps(keep, m));
    if (ent) kept_ent.add(_mm256_and_ps(keep, _mm256_mul_ps(m, _mm256_loadu_ps(ent + t))));
    if (a.seq_level) g_seq.add(_mm256_and_ps(live, _mm256_mul_ps(m, dlw)));
  }
  r.pg_sum = pg_sum.total();
  r.kl_sum = kl_sum.total();
  r.clip_low = clip_low.total();
  r.clip_high = clip_high.total();
  r.clip_dual = clip_dual.total();
  r.neg_log_ratio = neg_lr.total();
  r.entropy = ent_sum.total();
  r.ratio_sum = ratio_sum.total();
  r.mis_abs = mis.total();
  r.corrected = corrected.total();
  r.kept = kept.total();
  r.kept_entropy = kept_ent.total();
  double gs = g_seq.total();
  alignas(32) float lmin[8], lmax[8];
  _mm256_store_ps(lmin, rmin);
  _mm256_store_ps(lmax, rmax);
  for (int j = 0; j < 8; ++j) {
    r.ratio_min = std::min(r.ratio_min, (double)lmin[j]);
    r.ratio_max = std::max(r.ratio_max, (double)lmax[j]);
  }
  for (; t < T; ++t) {  // tail, as the scalar row does
    const size_t i = off + t;
    const float m = mask[t];
    if (m == 0.f) {
      grad[t] = 0.f;
      continue;
    }
    float adv = in.advantages_per_token ? in.advantages[i] : in.advantages[b];
    TokenExt tk = token_ext(logp[t], old[t], ref ? ref[t] : 0.f, roll ? roll[t] : 0.f, ent ? ent[t] : 0.f, adv, a, row);
    const double own = a.seq_level ? (double)tk.dlogp : (double)tk.dlw + tk.dlogp;
    grad[t] = (float)(m * scale * (own + (double)cfg.kl_coef * tk.dkl));
    if (a.seq_level) gs += (double)m * tk.dlw;
    add_token_ext(r, m, tk, ent ? &ent[t] : nullptr);
  }
  if (a.seq_level && gs != 0) {  // pass 3: the sequence-level coupling, d (mean log-ratio) / d logp_t = m_t / count
    const __m256d g = _mm256_set1_pd(scale * gs / std::max(r.count, 1.0));
    int u = 0;
    for (; u + 4 <= T; u += 4) {
      const __m128 m4 = _mm_loadu_ps(mask + u);
      const __m256d add = _mm256_mul_pd(g, _mm256_cvtps_pd(m4));
      const __m256d cur = _mm256_cvtps_pd(_mm_loadu_ps(grad + u));
      _mm_storeu_ps(grad + u, _mm256_cvtpd_ps(_mm256_add_pd(cur, add)));  // masked-out: 0 + g * 0
    }
    const double gd = scale * gs / std::max(r.count, 1.0);
    for (; u < T; ++u)
      if (mask[u] != 0.f) grad[u] = (float)((double)grad[u] + gd * mask[u]);
  }
  return r;
}

}  // namespace recode::rl
