// One pre-norm decoder layer of Llama/Qwen2/Qwen3, composed from the ops, and its backward:
//   h1 = rmsnorm(x);  q,k,v = h1 Wq^T (+b), ...;  [Qwen3: q,k = rmsnorm per head];  rope(q, k)
//   x += attention(q, k, v) Wo^T
//   h2 = rmsnorm(x);  x += (silu(h2 Wg^T) * (h2 Wu^T)) Wd^T
#include <cmath>
#include <cstring>

#include "ops/ops.h"

namespace recode::ops {

void LayerActs::resize(int T, const LayerDims& d, bool for_backward) {
  const size_t qd = (size_t)d.H * d.D, kd = (size_t)d.Hkv * d.D;
  h1.resize((size_t)T * d.C);
  rstd1.resize(T);
  q.resize(T * qd);
  k.resize(T * kd);
  v.resize(T * kd);
  att.resize(T * qd);
  lse.resize((size_t)T * d.H);
  h2.resize((size_t)T * d.C);
  rstd2.resize(T);
  gate.resize((size_t)T * d.F);
  up.resize((size_t)T * d.F);
  act.resize((size_t)T * d.F);
  tmp.resize((size_t)T * d.C);
  if (d.qk_norm) {
    q_rstd.resize((size_t)T * d.H);
    k_rstd.resize((size_t)T * d.Hkv);
  }
  if (for_backward) {
    x_in.resize((size_t)T * d.C);
    x_mid.resize((size_t)T * d.C);
    if (d.qk_norm) {
      q_pre.resize(T * qd);
      k_pre.resize(T * kd);
    }
  }
}

// The attention shape of one sequence's slice, and where its keys/values live.
static AttnShape seq_shape(const LayerDims& d, const AttnSeq& sq) {
  AttnShape s;
  s.T = sq.t;
  s.S = sq.pos0 + sq.t;
  s.H = d.H;
  s.Hkv = d.Hkv;
  s.D = d.D;
  s.q_pos0 = sq.pos0;
  s.scale = 1.0f / std::sqrt((float)d.D);
  return s;
}

// A linear layer of a training forward/backward: the plain op, or the adapted one when the layer has an adapter
// (then W and the bias are frozen and dW, db are not produced).
static void train_linear_forward(float* y, const float* x, const Linear& L, int T, AdapterActs& ad) {
  if (L.adapter)
    adapter_linear_forward(y, x, L, T, ad);
  else
    linear_forward(y, x, L, T);
}
static void train_linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x, const Linear& L,
                                  int T, const AdapterActs& ad) {
  if (L.adapter)
    adapter_linear_backward(dx, dy, x, L, T, ad);
  else
    linear_backward(dx, dW, db, dy, x, L.w, T, L.N, L.K);
}

void decoder_layer_forward(float* x, const LayerWeights& w, const LayerDims& d, const int32_t* pos, int T,
                           const std::vector<AttnSeq>& seqs, LayerActs& a, const double* inv_freq) {
  const int qd = d.H * d.D, kd = d.Hkv * d.D;
  const bool training = !a.x_in.empty();
  if (training) std::memcpy(a.x_in.data(), x, sizeof(float) * T * d.C);

  rmsnorm_forward(a.h1.data(), a.rstd1.data(), x, w.input_norm, T, d.C, d.eps);
  train_linear_forward(a.q.data(), a.h1.data(), w.q, T, a.ad_q);
  train_linear_forward(a.k.data(), a.h1.data(), w.k, T, a.ad_k);
  train_linear_forward(a.v.data(), a.h1.data(), w.v, T, a.ad_v);
  if (d.qk_norm) {
    if (training) {
      std::memcpy(a.q_pre.data(), a.q.data(), sizeof(float) * T * qd);
      std::memcpy(a.k_pre.data(), a.k.data(), sizeof(float) * T * kd);
    }
    // in place is safe: each row is read fully before it is written
    rmsnorm_forward(a.q.data(), a.q_rstd.data(), a.q.data(), w.q_norm, T * d.H, d.D, d.eps);
    rmsnorm_forward(a.k.data(), a.k_rstd.data(), a.k.data(), w.k_norm, T * d.Hkv, d.D, d.eps);
  }
  rope_forward(a.q.data(), pos, inv_freq, T, d.H, d.D);
  rope_forward(a.k.data(), pos, inv_freq, T, d.Hkv, d.D);

  for (const AttnSeq& sq : seqs) {
    AttnShape s = seq_shape(d, sq);
    const float* kk = a.k.data() + (int64_t)sq.t0 * kd;
    const float* vv = a.v.data() + (int64_t)sq.t0 * kd;
    if (sq.k_cache) {  // append this slice's keys/values, then attend over the whole cached prefix
      std::memcpy(sq.k_cache + (int64_t)sq.pos0 * kd, kk, sizeof(float) * sq.t * kd);
      std::memcpy(sq.v_cache + (int64_t)sq.pos0 * kd, vv, sizeof(float) * sq.t * kd);
      kk = sq.k_cache;
      vv = sq.v_cache;
    }
    float* out = a.att.data() + (int64_t)sq.t0 * qd;
    float* lse = a.lse.data() + (int64_t)sq.t0 * d.H;
    const float* qq = a.q.data() + (int64_t)sq.t0 * qd;
    if (sq.t <= 4)
      attention_decode(out, lse, qq, kk, vv, s);
    else
      attention_forward(out, lse, qq, kk, vv, s);
  }

  train_linear_forward(a.tmp.data(), a.att.data(), w.o, T, a.ad_o);
  for (int64_t i = 0; i < (int64_t)T * d.C; ++i) x[i] += a.tmp[i];
  if (training) std::memcpy(a.x_mid.data(), x, sizeof(float) * T * d.C);

  rmsnorm_forward(a.h2.data(), a.rstd2.data(), x, w.post_attention_norm, T, d.C, d.eps);
  train_linear_forward(a.gate.data(), a.h2.data(), w.gate, T, a.ad_gate);
  train_linear_forward(a.up.data(), a.h2.data(), w.up, T, a.ad_up);
  swiglu_forward(a.act.data(), a.gate.data(), a.up.data(), (int64_t)T * d.F);
  train_linear_forward(a.tmp.data(), a.act.data(), w.down, T, a.ad_down);
  for (int64_t i = 0; i < (int64_t)T * d.C; ++i) x[i] += a.tmp[i];
}

void decoder_layer_backward(float* dx, const LayerWeights& w, const LayerDims& d, const int32_t* pos, int T,
                            const std::vector<AttnSeq>& seqs, const LayerActs& a, const double* inv_freq,
                            LayerGrads& g) {
  const int qd = d.H * d.D, kd = d.Hkv * d.D;
  // MLP branch: x_out = x_mid + down(swiglu(gate(h2), up(h2))); dx already holds d x_out = d x_mid (residual).
  std::vector<float> d_act((size_t)T * d.F, 0.0f), d_gate((size_t)T * d.F, 0.0f), d_up((size_t)T * d.F, 0.0f);
  std::vector<float> d_h((size_t)T * d.C, 0.0f);
  train_linear_backward(d_act.data(), g.down_w, g.down_b, dx, a.act.data(), w.down, T, a.ad_down);
  swiglu_backward(d_gate.data(), d_up.data(), d_act.data(), a.gate.data(), a.up.data(), (int64_t)T * d.F);
  train_linear_backward(d_h.data(), g.gate_w, g.gate_b, d_gate.data(), a.h2.data(), w.gate, T, a.ad_gate);
  train_linear_backward(d_h.data(), g.up_w, g.up_b, d_up.data(), a.h2.data(), w.up, T, a.ad_up);
  rmsnorm_backward(dx, g.post_attention_norm, d_h.data(), a.x_mid.data(), w.post_attention_norm, a.rstd2.data(), T,
                   d.C);

  // Attention branch: x_mid = x_in + o(attention(rope(q), rope(k), v)).
  std::vector<float> d_att((size_t)T * qd, 0.0f), dq((size_t)T * qd, 0.0f), dk((size_t)T * kd, 0.0f),
      dv((size_t)T * kd, 0.0f);
  train_linear_backward(d_att.data(), g.o_w, g.o_b, dx, a.att.data(), w.o, T, a.ad_o);
  for (const AttnSeq& sq : seqs) {
    AttnShape s = seq_shape(d, sq);
    int64_t qo = (int64_t)sq.t0 * qd, ko = (int64_t)sq.t0 * kd;
    attention_backward(dq.data() + qo, dk.data() + ko, dv.data() + ko, d_att.data() + qo, a.q.data() + qo,
                       a.k.data() + ko, a.v.data() + ko, a.att.data() + qo, a.lse.data() + (int64_t)sq.t0 * d.H, s);
  }
  rope_backward(dq.data(), pos, inv_freq, T, d.H, d.D);
  rope_backward(dk.data(), pos, inv_freq, T, d.Hkv, d.D);
  if (d.qk_norm) {
    std::vector<float> dq_pre((size_t)T * qd, 0.0f), dk_pre((size_t)T * kd, 0.0f);
    rmsnorm_backward(dq_pre.data(), g.q_norm, dq.data(), a.q_pre.data(), w.q_norm, a.q_rstd.data(), T * d.H, d.D);
    rmsnorm_backward(dk_pre.data(), g.k_norm, dk.data(), a.k_pre.data(), w.k_norm, a.k_rstd.data(), T * d.Hkv, d.D);
    dq.swap(dq_pre);
    dk.swap(dk_pre);
  }
  std::fill(d_h.begin(), d_h.end(), 0.0f);
  train_linear_backward(d_h.data(), g.q_w, g.q_b, dq.data(), a.h1.data(), w.q, T, a.ad_q);
  train_linear_backward(d_h.data(), g.k_w, g.k_b, dk.data(), a.h1.data(), w.k, T, a.ad_k);
  train_linear_backward(d_h.data(), g.v_w, g.v_b, dv.data(), a.h1.data(), w.v, T, a.ad_v);
  rmsnorm_backward(dx, g.input_norm, d_h.data(), a.x_in.data(), w.input_norm, a.rstd1.data(), T, d.C);
}

}  // namespace recode::ops
