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
  return _mm256_and_ps(_mm256_cmp_ps(x, _mm256_set1_ps(lo), _CMP_GE_OQ), _mm256_cmp_ps(x, _mm256_set1_ps(hi), _CMP_LE_OQ));
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

RowSums loss_row_avx2(const LossInputs& in, const LossConfig& cfg, int b, double scale, double count, float* grad_logp) {
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
  RowSums r{count, pg_sum.total(), kl_sum.total(), clip_low.total(), clip_high.total(), clip_dual.total(),
            neg_lr.total(), ent_sum.total(), ratio_sum.total(), std::numeric_limits<double>::infinity(),
            -std::numeric_limits<double>::infinity(), 0, 0, 0, 0};
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
    TokenLoss tl = token_loss(logp[t], old[t], ref ? ref[t] : 0.f, adv, cfg.clip_low, cfg.clip_high, cfg.clip_ratio_c, kl_kind);
    grad[t] = (float)(m * scale * ((double)tl.dpg + (double)cfg.kl_coef * tl.dkl));
    r.pg_sum += (double)m * tl.pg;
    r.kl_sum += (double)m * tl.kl;
    r.clip_low += m * tl.clip_low;
    r.clip_high += m * tl.clip_high;
    r.clip_dual += m * tl.clip_dual;
    r.neg_log_ratio += (double)m * tl.neg_lr;
    if (ent) r.entropy += (double)m * ent[t];
    r.ratio_sum += (double)m * tl.ratio;
    r.ratio_min = std::min(r.ratio_min, (double)tl.ratio);
    r.ratio_max = std::max(r.ratio_max, (double)tl.ratio);
  }
  return r;
}

}  // namespace recode::rl
