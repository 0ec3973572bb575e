// Bindings for the advantages and the policy loss (src/rl/rl_loss.h).
//   grpoAdvantages(device, rewards: Float32Array, group, convention: 0 verl | 1 trl, scale: 0 group | 1 batch |
//                  2 none) -> Float32Array
//   dapoDynamicMask(rewards: Float32Array, group) -> Uint8Array (one entry per group)
//   overlongPenalty(lengths: Int32Array, maxLength, buffer, factor) -> Float32Array
//   policyLoss(device, { batch, length, logp, oldLogp, refLogp?, advantages ([B] or [B*T]), mask: Float32Array,
//              entropy?, clipLow, clipHigh, clipRatioC, klCoef, klKind (0-3), aggregation (0-4), normLength,
//              gradOut?: Float32Array [B*T],
//              TRL's variants, each optional: objective (0 clip | 1 cispo | 2 sapo), seqLevel (0/1), delta (0 = off),
//              sapoTauPos, sapoTauNeg, entropyCoef, entropyGlobalNorm (0/1), topEntropyQuantile (1 = off),
//              rolloutCorrection (0 none | 1 truncate | 2 mask), rolloutSeq (0/1), rolloutC, rolloutLogp }, cancel?)
//     -> Promise<{ grad: Float32Array, gradEntropy?: Float32Array (with entropyCoef), metrics: {...} }>
#include <cmath>
#include <string>
#include <vector>

#include "device/kernels.h"
#include "node/device_arg.h"
#include "node/napi_util.h"
#include "rl/rl_loss.h"

namespace recode {
namespace {

Napi::Value grpo_advantages(const Napi::CallbackInfo& info) {
  Args a{info, "grpoAdvantages"};
  Device d = parse_device(a, 0);
  auto rewards = a.typed<float>(1, "rewards");
  int n = (int)rewards.ElementLength();
  if (n == 0) a.fail(1, "(rewards) must not be empty");
  int group = (int)a.integer(2, "groupSize", 1, n);
  if (n % group != 0) a.fail(2, "(groupSize) must divide the number of rewards (" + std::to_string(n) + ")");
  int convention = (int)a.integer(3, "convention", 0, 1);
  int scale = (int)a.integer(4, "scale", 0, 2);
  for (int i = 0; i < n; ++i)
    if (!std::isfinite(rewards[i])) a.fail(1, "(rewards) entry " + std::to_string(i) + " is not finite");
  auto out = Napi::Float32Array::New(info.Env(), n);
  rl::grpo_advantages_on(d, rewards.Data(), n, group, convention ? rl::Convention::Trl : rl::Convention::Verl,
                         scale == 0   ? rl::Scale::Group
                         : scale == 1 ? rl::Scale::Batch
                                      : rl::Scale::None,
                         out.Data());
  return out;
}

Napi::Value dapo_dynamic_mask(const Napi::CallbackInfo& info) {
  Args a{info, "dapoDynamicMask"};
  auto rewards = a.typed<float>(0, "rewards");
  int n = (int)rewards.ElementLength();
  if (n == 0) a.fail(0, "(rewards) must not be empty");
  int group = (int)a.integer(1, "groupSize", 1, n);
  if (n % group != 0) a.fail(1, "(groupSize) must divide the number of rewards (" + std::to_string(n) + ")");
  auto keep = Napi::Uint8Array::New(info.Env(), n / group);
  rl::dapo_dynamic_mask(rewards.Data(), n, group, keep.Data());
  return keep;
}

Napi::Value overlong_penalty(const Napi::CallbackInfo& info) {
  Args a{info, "overlongPenalty"};
  auto lengths = a.typed<int32_t>(0, "lengths");
  int max_length = (int)a.integer(1, "maxLength", 1, 1 << 30);
  int buffer = (int)a.integer(2, "buffer", 1, max_length);
  double factor = a.number(3, "factor");
  if (!std::isfinite(factor) || factor < 0) a.fail(3, "(factor) must be a finite number >= 0");
  int n = (int)lengths.ElementLength();
  for (int i = 0; i < n; ++i)
    if (lengths[i] < 0) a.fail(0, "(lengths) entry " + std::to_string(i) + " is negative");
  auto out = Napi::Float32Array::New(info.Env(), n);
  rl::overlong_penalty(lengths.Data(), n, max_length, buffer, (float)factor, out.Data());
  return out;
}

class PolicyLossJob : public AsyncJob {
 public:
  using AsyncJob::AsyncJob;
  Device device = Device::CPU;
  rl::LossInputs in;
  rl::LossConfig cfg;
  float* grad = nullptr;
  Napi::Reference<Napi::Float32Array> grad_ref;
  float* grad_entropy = nullptr;
  Napi::Reference<Napi::Float32Array> grad_entropy_ref;
  rl::LossMetrics metrics{};

 protected:
  void Run() override {
    cancel.throw_if_requested();
    metrics = rl::policy_loss_on(device, in, cfg, grad, grad_entropy);
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object m = Napi::Object::New(env);
    m.Set("loss", metrics.loss);
    m.Set("pgLoss", metrics.pg_loss);
    m.Set("klLoss", metrics.kl_loss);
    m.Set("clipFrac", metrics.clip_frac);
    m.Set("clipFracLow", metrics.clip_frac_low);
    m.Set("clipFracHigh", metrics.clip_frac_high);
    m.Set("clipFracDual", metrics.clip_frac_dual);
    m.Set("approxKl", metrics.approx_kl);
    m.Set("klMean", metrics.kl_mean);
    m.Set("entropyMean", metrics.entropy_mean);
    m.Set("ratioMean", metrics.ratio_mean);
    m.Set("ratioMin", metrics.ratio_min);
    m.Set("ratioMax", metrics.ratio_max);
    m.Set("tokens", metrics.tokens);
    m.Set("entropyBonus", metrics.entropy_bonus);
    m.Set("entropyKeptFrac", metrics.kept_frac);
    m.Set("rolloutLogRatioAbs", metrics.rollout_log_ratio_abs);
    m.Set("rolloutCorrectedFrac", metrics.rollout_corrected_frac);
    Napi::Object o = Napi::Object::New(env);
    o.Set("grad", grad_ref.Value());
    if (grad_entropy) o.Set("gradEntropy", grad_entropy_ref.Value());
    o.Set("metrics", m);
    return o;
  }
};

Napi::Value policy_loss(const Napi::CallbackInfo& info) {
  Args a{info, "policyLoss"};
  Napi::Env env = info.Env();
  auto job = std::make_unique<PolicyLossJob>(env);
  job->device = parse_device(a, 0);
  Options o(a, 1);
  int B = (int)o.integer("batch", 1, 1 << 24);
  int T = (int)o.integer("length", 1, 1 << 24);
  size_t n = (size_t)B * T;
  if (n > ((size_t)1 << 31)) o.fail("length", "times batch must be below 2^31");
  auto need = [&](const char* name, size_t len) {
    auto arr = o.typed<float>(name);
    if (arr.ElementLength() != len)
      o.fail(name, "must have " + std::to_string(len) + " values, got " + std::to_string(arr.ElementLength()));
    return job->input(arr);
  };
  job->in.B = B;
  job->in.T = T;
  job->in.logp = need("logp", n);
  job->in.old_logp = need("oldLogp", n);
  job->in.ref_logp = o.has("refLogp") ? need("refLogp", n) : nullptr;
  auto adv = o.typed<float>("advantages");
  if (adv.ElementLength() != (size_t)B && adv.ElementLength() != n) o.fail("advantages", "must have B or B * T values");
  job->in.advantages_per_token = adv.ElementLength() == n && n != (size_t)B;
  job->in.advantages = job->input(adv);
  job->in.mask = need("mask", n);
  job->in.entropy = o.has("entropy") ? need("entropy", n) : nullptr;
  auto& c = job->cfg;
  c.clip_low = (float)o.number("clipLow");
  c.clip_high = (float)o.number("clipHigh");
  c.clip_ratio_c = (float)o.number("clipRatioC");
  c.kl_coef = (float)o.number("klCoef");
  c.kl = (rl::KlEstimator)o.integer("klKind", 0, 3);
  c.agg = (rl::Aggregation)o.integer("aggregation", 0, 4);
  c.norm_length = (float)o.number("normLength");
  if (!(c.clip_low >= 0 && c.clip_low < 1)) o.fail("clipLow", "must be in [0, 1)");
  if (!(c.clip_high >= 0 && std::isfinite(c.clip_high))) o.fail("clipHigh", "must be a finite number >= 0");
  if (!(c.clip_ratio_c == 0 || (c.clip_ratio_c > 1 && std::isfinite(c.clip_ratio_c))))
    o.fail("clipRatioC", "must be 0 (off) or a finite number > 1");
  if (!std::isfinite(c.kl_coef)) o.fail("klCoef", "must be finite");
  if (c.kl != rl::KlEstimator::None && !job->in.ref_logp) o.fail("refLogp", "is required for a KL penalty");
  if (!(c.norm_length >= 0 && std::isfinite(c.norm_length))) o.fail("normLength", "must be >= 0 (0 = T)");
  // TRL's variants (absent: the basic objective above)
  auto opt_number = [&](const char* name, double fallback) { return o.has(name) ? o.number(name) : fallback; };
  if (o.has("objective")) c.objective = (rl::Objective)o.integer("objective", 0, 2);
  if (o.has("seqLevel")) c.seq_level = o.integer("seqLevel", 0, 1) != 0;
  c.delta = (float)opt_number("delta", 0);
  if (!(c.delta == 0 || (c.delta > 0 && std::isfinite(c.delta))))
    o.fail("delta", "must be 0 (off) or a finite number > 0");
  c.sapo_tau_pos = (float)opt_number("sapoTauPos", 1.0);
  c.sapo_tau_neg = (float)opt_number("sapoTauNeg", 1.05);
  if (!(c.sapo_tau_pos > 0 && std::isfinite(c.sapo_tau_pos))) o.fail("sapoTauPos", "must be a finite number > 0");
  if (!(c.sapo_tau_neg > 0 && std::isfinite(c.sapo_tau_neg))) o.fail("sapoTauNeg", "must be a finite number > 0");
  if (c.objective == rl::Objective::Cispo && !(c.clip_high > 0))
    o.fail("clipHigh", "must be > 0 for CISPO (the weight cap)");
  c.entropy_coef = (float)opt_number("entropyCoef", 0);
  if (!std::isfinite(c.entropy_coef)) o.fail("entropyCoef", "must be finite");
  if (o.has("entropyGlobalNorm")) c.entropy_global_norm = o.integer("entropyGlobalNorm", 0, 1) != 0;
  c.top_entropy_quantile = opt_number("topEntropyQuantile", 1.0);
  if (!(c.top_entropy_quantile >= 0 && c.top_entropy_quantile <= 1)) o.fail("topEntropyQuantile", "must be in [0, 1]");
  if ((c.entropy_coef != 0 || c.top_entropy_quantile < 1) && !job->in.entropy)
    o.fail("entropy", "is required with entropyCoef or topEntropyQuantile < 1");
  if (o.has("rolloutCorrection")) c.rc = (rl::RolloutCorrection)o.integer("rolloutCorrection", 0, 2);
  if (o.has("rolloutSeq")) c.rc_seq = o.integer("rolloutSeq", 0, 1) != 0;
  if (c.rc != rl::RolloutCorrection::None) {
    c.rc_c = (float)o.number("rolloutC");
    if (!(c.rc_c > 1 && std::isfinite(c.rc_c))) o.fail("rolloutC", "must be a finite number > 1");
    if (!o.has("rolloutLogp")) o.fail("rolloutLogp", "is required for the rollout correction");
    job->in.rollout_logp = need("rolloutLogp", n);
  }
  if (o.has("gradOut")) {  // a caller-owned gradient buffer, reused across steps (no fresh 4*B*T bytes per call)
    auto g = o.typed<float>("gradOut");
    if (g.ElementLength() != n) o.fail("gradOut", "must have B * T values");
    job->grad = job->output(g, a.fn, "options.gradOut");
    job->grad_ref = Napi::Persistent(g);
  } else {
    auto grad = Napi::Float32Array::New(env, n);  // ours until Result(): written in place
    job->grad = grad.Data();
    job->grad_ref = Napi::Persistent(grad);
  }
  if (c.entropy_coef != 0) {
    auto ge = Napi::Float32Array::New(env, n);  // ours until Result(): written in place
    job->grad_entropy = ge.Data();
    job->grad_entropy_ref = Napi::Persistent(ge);
  }
  job->set_cancel(a, 2);
  return AsyncJob::queue(std::move(job));
}

}  // namespace

RECODE_EXPORT("grpoAdvantages", grpo_advantages);
RECODE_EXPORT("dapoDynamicMask", dapo_dynamic_mask);
RECODE_EXPORT("overlongPenalty", overlong_penalty);
RECODE_EXPORT("policyLoss", policy_loss);

}  // namespace recode
