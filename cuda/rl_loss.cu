// GRPO advantages, DAPO helpers and the clipped policy-gradient loss on the GPU. Same definitions as
// src/rl/rl_loss.h; the per-token arithmetic is cuda/rl_loss_core.h, shared with the CPU.
//   advantages: one block per group (block reductions in double); batch scaling first reduces all rewards
//               in one block.
//   loss:       kernel 1 counts each row's mask (token-mean needs the total before any gradient);
//               kernel 2 is one block per sequence: per-token loss and gradient, and the row's sums
//               (reduced in double) for the host to assemble the loss and metrics.
#include "common.cuh"
#include "recode_rl.h"
#include "rl_loss_core.h"

using namespace recode::rl;

constexpr int kRowSumFields = 15;  // layout of recode::rl::RowSums

// Sums kFields doubles over the block; thread 0 gets the totals in out (min for field `min_field`, max for
// `max_field`; -1 for none).
template <int kFields>
__device__ void block_reduce_fields(double (&v)[kFields], double (*scratch)[kFields], int min_field, int max_field) {
  unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  for (int f = 0; f < kFields; ++f) {
    for (int o = 16; o > 0; o >>= 1) {
      double other = __shfl_xor_sync(0xffffffffu, v[f], o);
      v[f] = f == min_field ? fmin(v[f], other) : f == max_field ? fmax(v[f], other) : v[f] + other;
    }
  }
  __syncthreads();
  if (lane == 0)
    for (int f = 0; f < kFields; ++f) scratch[warp][f] = v[f];
  __syncthreads();
  if (threadIdx.x == 0) {
    for (unsigned w = 1; w < nwarps; ++w)
      for (int f = 0; f < kFields; ++f) {
        double o = scratch[w][f];
        v[f] = f == min_field ? fmin(v[f], o) : f == max_field ? fmax(v[f], o) : v[f] + o;
      }
  }
}

// ---- advantages ---------------------------------------------------------------------------------------

// out[0] = unbiased std of all n rewards.
__global__ void batch_std_kernel(const float* rewards, int n, double* out) {
  __shared__ double scratch[32][1];
  double s[1] = {0};
  for (int i = threadIdx.x; i < n; i += blockDim.x) s[0] += rewards[i];
  block_reduce_fields<1>(s, scratch, -1, -1);
  __shared__ double mean;
  if (threadIdx.x == 0) mean = s[0] / n;
  __syncthreads();
  double ss[1] = {0};
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss[0] += (rewards[i] - mean) * (rewards[i] - mean);
  block_reduce_fields<1>(ss, scratch, -1, -1);
  if (threadIdx.x == 0) out[0] = n > 1 ? sqrt(ss[0] / (n - 1)) : 0.0;
}

// convention: 0 verl, 1 trl; scale: 0 group, 1 batch, 2 none.
__global__ void advantages_kernel(const float* rewards, int group, int convention, int scale, const double* batch_std,
                                  float* out) {
  __shared__ double scratch[32][1];
  __shared__ double mean, std;
  const float* r = rewards + (size_t)blockIdx.x * group;
  float* a = out + (size_t)blockIdx.x * group;
  const double eps = convention == 0 ? 1e-6 : 1e-4;
  if (group == 1) {
    if (threadIdx.x == 0) {
      if (convention == 1)
        a[0] = 0.f;  // trl: r - mean = 0
      else
        a[0] = (float)((double)r[0] / (scale == 0 ? 1.0 + eps : scale == 1 ? batch_std[0] + eps : 1.0));
    }
    return;
  }
  double s[1] = {0};
  for (int i = threadIdx.x; i < group; i += blockDim.x) s[0] += r[i];
  block_reduce_fields<1>(s, scratch, -1, -1);
  if (threadIdx.x == 0) mean = s[0] / group;
  __syncthreads();
  double ss[1] = {0};
  for (int i = threadIdx.x; i < group; i += blockDim.x) ss[0] += (r[i] - mean) * (r[i] - mean);
  block_reduce_fields<1>(ss, scratch, -1, -1);
  if (threadIdx.x == 0) std = sqrt(ss[0] / (group - 1));
  __syncthreads();
  double denom = scale == 0 ? std + eps : scale == 1 ? batch_std[0] + eps : 1.0;
  for (int i = threadIdx.x; i < group; i += blockDim.x) a[i] = (float)((r[i] - mean) / denom);
}

RECODE_API(grpo_advantages)(const float* rewards, int n, int group, int convention, int scale, float* out, char* err,
                            size_t err_len) {
  RECODE_API_TRY
  if (n <= 0 || group <= 0 || n % group != 0) {
    snprintf(err, err_len, "grpo_advantages: n=%d is not a positive multiple of group=%d", n, group);
    return 1;
  }
  float *d_r, *d_a;
  double* d_std;
  RECODE_CUDA_CHECK(cudaMalloc(&d_r, n * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_a, n * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_std, sizeof(double)));
  RECODE_CUDA_CHECK(cudaMemcpy(d_r, rewards, n * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemset(d_std, 0, sizeof(double)));
  if (scale == 1) {
    SIMT_LAUNCH(batch_std_kernel, dim3(1), dim3(256), 0, 0, d_r, n, d_std);
    RECODE_CUDA_CHECK(cudaGetLastError());
  }
  unsigned threads = group <= 32 ? 32 : group <= 128 ? 128 : 256;
  SIMT_LAUNCH(advantages_kernel, dim3(n / group), dim3(threads), 0, 0, d_r, group, convention, scale, d_std, d_a);
  RECODE_CUDA_CHECK(cudaGetLastError());
  RECODE_CUDA_CHECK(cudaMemcpy(out, d_a, n * sizeof(float), cudaMemcpyDeviceToHost));
  cudaFree(d_r);
  cudaFree(d_a);
  cudaFree(d_std);
  return 0;
  RECODE_API_CATCH
}

// ---- policy loss ----------------------------------------------------------------------------------------

__global__ void row_count_kernel(const float* mask, int T, double* counts) {
  __shared__ double scratch[32][1];
  const float* m = mask + (size_t)blockIdx.x * T;
  double c[1] = {0};
  for (int t = threadIdx.x; t < T; t += blockDim.x) c[0] += m[t];
  block_reduce_fields<1>(c, scratch, -1, -1);
  if (threadIdx.x == 0) counts[blockIdx.x] = c[0];
}

__global__ void policy_loss_kernel(int B, int T, const float* logp, const float* old_logp, const float* ref_logp,
                                   const float* adv, int adv_per_token, const float* mask, const float* entropy,
                                   float clip_low, float clip_high, float clip_c, float kl_coef, int kl_kind, int agg,
                                   float norm_length, const double* counts, double total, float* grad,
                                   double* row_sums) {
  __shared__ double scratch[32][kRowSumFields];
  const int b = blockIdx.x;
  const size_t off = (size_t)b * T;
  const double scale = agg_scale(agg, B, T, norm_length, counts[b], total);
  // fields: count, pg, kl, clip_low, clip_high, clip_dual, neg_log_ratio, entropy, ratio_sum, ratio_min, ratio_max,
  // and the extended path's mis_abs, corrected, kept_entropy, kept (0 here)
  double v[kRowSumFields] = {0, 0, 0, 0, 0, 0, 0, 0, 0, INFINITY, -INFINITY, 0, 0, 0, 0};
  for (int t = threadIdx.x; t < T; t += blockDim.x) {
    const float m = mask[off + t];
    if (m == 0.f) {
      grad[off + t] = 0.f;
      continue;
    }
    float a = adv_per_token ? adv[off + t] : adv[b];
    float ref = ref_logp ? ref_logp[off + t] : 0.f;
    TokenLoss tl = token_loss(logp[off + t], old_logp[off + t], ref, a, clip_low, clip_high, clip_c, kl_kind);
    grad[off + t] = (float)(m * scale * ((double)tl.dpg + (double)kl_coef * tl.dkl));
    v[1] += (double)m * tl.pg;
    v[2] += (double)m * tl.kl;
    v[3] += m * tl.clip_low;
    v[4] += m * tl.clip_high;
    v[5] += m * tl.clip_dual;
    v[6] += (double)m * tl.neg_lr;
    if (entropy) v[7] += (double)m * entropy[off + t];
    v[8] += (double)m * tl.ratio;
    v[9] = fmin(v[9], (double)tl.ratio);
    v[10] = fmax(v[10], (double)tl.ratio);
  }
  block_reduce_fields<kRowSumFields>(v, scratch, 9, 10);
  if (threadIdx.x == 0) {
    v[0] = counts[b];
    for (int f = 0; f < kRowSumFields; ++f) row_sums[(size_t)b * kRowSumFields + f] = v[f];
  }
}

// Extended path, pass 1: per row the mask count, the masked sums of logp - old (sequence-level weight) and of
// old - rollout (sequence-level correction).
__global__ void ext_row_pre_kernel(const float* logp, const float* old_logp, const float* rollout_logp,
                                   const float* mask, int T, double* pre) {
  __shared__ double scratch[32][3];
  const size_t off = (size_t)blockIdx.x * T;
  double v[3] = {0, 0, 0};
  for (int t = threadIdx.x; t < T; t += blockDim.x) {
    const float m = mask[off + t];
    if (m == 0.f) continue;
    v[0] += m;
    v[1] += (double)m * (logp[off + t] - old_logp[off + t]);
    if (rollout_logp) v[2] += (double)m * (old_logp[off + t] - rollout_logp[off + t]);
  }
  block_reduce_fields<3>(v, scratch, -1, -1);
  if (threadIdx.x == 0)
    for (int f = 0; f < 3; ++f) pre[(size_t)blockIdx.x * 3 + f] = v[f];
}

// Pass 2: one block per row, the tokens (token_ext); at the sequence level, pass 3 adds the row's coupled
// gradient once the block has reduced d loss / d (mean log-ratio).
__global__ void policy_loss_ext_kernel(int B, int T, const float* logp, const float* old_logp, const float* ref_logp,
                                       const float* rollout_logp, const float* entropy, const float* adv,
                                       int adv_per_token, const float* mask, ExtArgs a, float kl_coef, int agg,
                                       float norm_length, const double* pre, double total, float* grad,
                                       double* row_sums) {
  __shared__ double scratch[32][kRowSumFields + 1];
  __shared__ double g_row;
  const int b = blockIdx.x;
  const size_t off = (size_t)b * T;
  const double count = pre[(size_t)b * 3];
  const double scale = agg_scale(agg, B, T, norm_length, count, total);
  RowCtx row{(float)(pre[(size_t)b * 3 + 1] / fmax(count, 1.0)), (float)pre[(size_t)b * 3 + 2]};
  double v[kRowSumFields + 1] = {0, 0, 0, 0, 0, 0, 0, 0, 0, INFINITY, -INFINITY, 0, 0, 0, 0, 0};
  for (int t = threadIdx.x; t < T; t += blockDim.x) {
    const size_t i = off + t;
    const float m = mask[i];
    if (m == 0.f) {
      grad[i] = 0.f;
      continue;
    }
    float A = adv_per_token ? adv[i] : adv[b];
    TokenExt tk = token_ext(logp[i], old_logp[i], ref_logp ? ref_logp[i] : 0.f, rollout_logp ? rollout_logp[i] : 0.f,
                            entropy ? entropy[i] : 0.f, A, a, row);
    const double own = a.seq_level ? (double)tk.dlogp : (double)tk.dlw + tk.dlogp;
    grad[i] = (float)(m * scale * (own + (double)kl_coef * tk.dkl));
    v[1] += (double)m * tk.pg;
    v[2] += (double)m * tk.kl;
    v[3] += m * tk.clip_low;
    v[4] += m * tk.clip_high;
    v[5] += m * tk.clip_dual;
    v[6] += (double)m * tk.neg_lr;
    if (entropy) v[7] += (double)m * entropy[i];
    v[8] += (double)m * tk.ratio;
    v[9] = fmin(v[9], (double)tk.ratio);
    v[10] = fmax(v[10], (double)tk.ratio);
    v[11] += (double)m * tk.mis_abs;
    v[12] += m * tk.corrected;
    if (tk.keep) {
      v[14] += m;
      if (entropy) v[13] += (double)m * entropy[i];
    }
    if (a.seq_level) v[15] += (double)m * tk.dlw;
  }
  block_reduce_fields<kRowSumFields + 1>(v, scratch, 9, 10);
  if (threadIdx.x == 0) {
    v[0] = count;
    for (int f = 0; f < kRowSumFields; ++f) row_sums[(size_t)b * kRowSumFields + f] = v[f];
    g_row = scale * v[15] / fmax(count, 1.0);
  }
  __syncthreads();
  if (a.seq_level && g_row != 0) {
    const double g = g_row;
    for (int t = threadIdx.x; t < T; t += blockDim.x) {
      const float m = mask[off + t];
      if (m != 0.f) grad[off + t] = (float)((double)grad[off + t] + g * m);
    }
  }
}

// row_sums: B x 15 doubles in the layout of recode::rl::RowSums; the host assembles loss and metrics.
RECODE_API(policy_loss)(int B, int T, const float* logp, const float* old_logp, const float* ref_logp, const float* adv,
                        int adv_per_token, const float* mask, const float* entropy, float clip_low, float clip_high,
                        float clip_c, float kl_coef, int kl_kind, int agg, float norm_length, int ext,
                        const float* rollout_logp, int objective, int seq_level, float delta, float sapo_tau_pos,
                        float sapo_tau_neg, int rc_mode, int rc_seq, float rc_c, int ent_mask, double ent_threshold,
                        float* grad, double* row_sums, char* err, size_t err_len) {
  RECODE_API_TRY
  if (B <= 0 || T <= 0) {
    snprintf(err, err_len, "policy_loss: bad sizes B=%d T=%d", B, T);
    return 1;
  }
  size_t n = (size_t)B * T;
  size_t na = adv_per_token ? n : (size_t)B;
  float *d_logp, *d_old, *d_ref = nullptr, *d_adv, *d_mask, *d_ent = nullptr, *d_grad;
  double *d_counts, *d_sums;
  RECODE_CUDA_CHECK(cudaMalloc(&d_logp, n * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_old, n * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_adv, na * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_mask, n * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_grad, n * sizeof(float)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_counts, B * sizeof(double)));
  RECODE_CUDA_CHECK(cudaMalloc(&d_sums, (size_t)B * kRowSumFields * sizeof(double)));
  RECODE_CUDA_CHECK(cudaMemcpy(d_logp, logp, n * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_old, old_logp, n * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_adv, adv, na * sizeof(float), cudaMemcpyHostToDevice));
  RECODE_CUDA_CHECK(cudaMemcpy(d_mask, mask, n * sizeof(float), cudaMemcpyHostToDevice));
  if (ref_logp) {
    RECODE_CUDA_CHECK(cudaMalloc(&d_ref, n * sizeof(float)));
    RECODE_CUDA_CHECK(cudaMemcpy(d_ref, ref_logp, n * sizeof(float), cudaMemcpyHostToDevice));
  }
  if (entropy) {
    RECODE_CUDA_CHECK(cudaMalloc(&d_ent, n * sizeof(float)));
    RECODE_CUDA_CHECK(cudaMemcpy(d_ent, entropy, n * sizeof(float), cudaMemcpyHostToDevice));
  }
  unsigned threads = T <= 32 ? 32 : T <= 256 ? 128 : 256;
  if (ext) {  // TRL's variants: the row pre-pass, then the extended kernel
    if ((rc_mode != 0 && !rollout_logp) || (ent_mask && !entropy)) {
      snprintf(err, err_len, "policy_loss: the rollout correction needs rollout_logp, the entropy mask entropy");
      return 1;
    }
    float* d_roll = nullptr;
    double* d_pre;
    RECODE_CUDA_CHECK(cudaMalloc(&d_pre, (size_t)B * 3 * sizeof(double)));
    if (rollout_logp) {
      RECODE_CUDA_CHECK(cudaMalloc(&d_roll, n * sizeof(float)));
      RECODE_CUDA_CHECK(cudaMemcpy(d_roll, rollout_logp, n * sizeof(float), cudaMemcpyHostToDevice));
    }
    SIMT_LAUNCH(ext_row_pre_kernel, dim3(B), dim3(threads), 0, 0, d_logp, d_old, d_roll, d_mask, T, d_pre);
    RECODE_CUDA_CHECK(cudaGetLastError());
    double* pre = (double*)malloc((size_t)B * 3 * sizeof(double));
    if (!pre) {
      snprintf(err, err_len, "policy_loss: out of host memory");
      return 2;
    }
    RECODE_CUDA_CHECK(cudaMemcpy(pre, d_pre, (size_t)B * 3 * sizeof(double), cudaMemcpyDeviceToHost));
    double total = 0;
    for (int b = 0; b < B; ++b) total += pre[(size_t)b * 3];
    free(pre);
    ExtArgs a{};
    a.objective = objective;
    a.clip_low = clip_low;
    a.clip_high = clip_high;
    a.clip_c = clip_c;
    a.delta = delta;
    a.tau_pos = sapo_tau_pos;
    a.tau_neg = sapo_tau_neg;
    a.kl_kind = kl_kind;
    a.seq_level = seq_level;
    a.rc_mode = rc_mode;
    a.rc_seq = rc_seq;
    a.rc_c = rc_c;
    a.rc_log_c = rc_mode != 0 ? logf(rc_c) : 0.f;
    a.ent_mask = ent_mask;
    a.ent_threshold = ent_threshold;
    SIMT_LAUNCH(policy_loss_ext_kernel, dim3(B), dim3(threads), 0, 0, B, T, d_logp, d_old, d_ref, d_roll, d_ent, d_adv,
                adv_per_token, d_mask, a, kl_coef, agg, norm_length, d_pre, total, d_grad, d_sums);
    RECODE_CUDA_CHECK(cudaGetLastError());
    RECODE_CUDA_CHECK(cudaMemcpy(grad, d_grad, n * sizeof(float), cudaMemcpyDeviceToHost));
    RECODE_CUDA_CHECK(cudaMemcpy(row_sums, d_sums, (size_t)B * kRowSumFields * sizeof(double), cudaMemcpyDeviceToHost));
    cudaFree(d_pre);
    if (d_roll) cudaFree(d_roll);
  } else {
    SIMT_LAUNCH(row_count_kernel, dim3(B), dim3(threads), 0, 0, d_mask, T, d_counts);
    RECODE_CUDA_CHECK(cudaGetLastError());
    double* counts = (double*)malloc(B * sizeof(double));
    if (!counts) {
      snprintf(err, err_len, "policy_loss: out of host memory");
      return 2;
    }
    RECODE_CUDA_CHECK(cudaMemcpy(counts, d_counts, B * sizeof(double), cudaMemcpyDeviceToHost));
    double total = 0;
    for (int b = 0; b < B; ++b) total += counts[b];
    free(counts);
    SIMT_LAUNCH(policy_loss_kernel, dim3(B), dim3(threads), 0, 0, B, T, d_logp, d_old, d_ref, d_adv, adv_per_token,
                d_mask, d_ent, clip_low, clip_high, clip_c, kl_coef, kl_kind, agg, norm_length, d_counts, total, d_grad,
                d_sums);
    RECODE_CUDA_CHECK(cudaGetLastError());
    RECODE_CUDA_CHECK(cudaMemcpy(grad, d_grad, n * sizeof(float), cudaMemcpyDeviceToHost));
    RECODE_CUDA_CHECK(cudaMemcpy(row_sums, d_sums, (size_t)B * kRowSumFields * sizeof(double), cudaMemcpyDeviceToHost));
  }
  cudaFree(d_logp);
  cudaFree(d_old);
  cudaFree(d_adv);
  cudaFree(d_mask);
  cudaFree(d_grad);
  cudaFree(d_counts);
  cudaFree(d_sums);
  if (d_ref) cudaFree(d_ref);
  if (d_ent) cudaFree(d_ent);
  return 0;
  RECODE_API_CATCH
}
