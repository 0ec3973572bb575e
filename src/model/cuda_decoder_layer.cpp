// One decoder layer on the device (see cuda_decoder_layer.h): the same order of operations as
// src/ops/decoder_layer.cpp, every step one kernel-table call.
#include "model/cuda_decoder_layer.h"

#include "device/device_buffer.h"

namespace recode::model::cuda_layer {

#define CALL RECODE_KERNEL_CALL

// Element e of a compute-dtype array.
static void* at(const void* p, size_t e, int dtype) {
  return (char*)p + e * (dtype == RECODE_BF16 ? sizeof(uint16_t) : sizeof(float));
}

std::vector<CausalBatch> causal_batches(const std::vector<int>& counts) {
  bool equal = true;
  for (int n : counts) equal = equal && n == counts[0];
  if (equal) return {{(int)counts.size(), counts.empty() ? 0 : counts[0], 0}};
  std::vector<CausalBatch> b;
  for (int s = 0, t0 = 0; s < (int)counts.size(); t0 += counts[s], ++s) b.push_back({1, counts[s], t0});
  return b;
}

void linear_forward(const Kernels& kern, int dtype, const Linear& L, const void* x, void* y, int M) {
  const Kernels& kern_ = kern;
  CALL(gemm_forward, M, L.N, L.K, x, L.w, L.b, y, dtype, dtype, 0, nullptr);
}

void linear_backward(const Kernels& kern, int dtype, const Linear& L, float* dW, float* db, const void* dy,
                     const void* x, void* dx, int accumulate, int M) {
  const Kernels& kern_ = kern;
  if (dW) CALL(gemm_backward_weight, M, L.N, L.K, dy, x, dW, db, dtype, RECODE_F32, 1, nullptr);
  CALL(gemm_backward_input, M, L.N, L.K, dy, L.w, dx, dtype, dtype, accumulate, nullptr);
}

void causal_attention(const Kernels& kern, const Dims& d, const Acts& a, const std::vector<CausalBatch>& batches) {
  const Kernels& kern_ = kern;
  const size_t qd = (size_t)d.H * d.D, kd = (size_t)d.Hkv * d.D;
  for (const CausalBatch& b : batches)
    CALL(attention_forward, b.B, b.n, d.H, d.Hkv, d.D, at(a.q, b.t0 * qd, d.dtype), at(a.k, b.t0 * kd, d.dtype),
         at(a.v, b.t0 * kd, d.dtype), at(a.att, b.t0 * qd, d.dtype), a.lse + (size_t)b.t0 * d.H, d.attention_scale(), 1,
         d.dtype, nullptr);
}

void forward(const Kernels& kern, const Dims& d, const Weights& w, int T, const int32_t* pos, const void* x_in,
             void* x_out, const Acts& a, const Hooks& hooks) {
  const Kernels& kern_ = kern;
  const int dt = d.dtype;
  auto project = [&](int p, const void* x, void* y) {
    if (!hooks.project || !hooks.project(p, w.proj[p], x, y, T)) linear_forward(kern, dt, w.proj[p], x, y, T);
  };
  // attention block: x_mid = x_in + o(attention(rope(norm_q(q)), rope(norm_k(k)), v))
  CALL(rmsnorm_forward, T, d.C, x_in, w.input_norm, d.eps, a.h1, a.rstd1, dt, nullptr);
  if (d.qk_norm) {  // per-head RMSNorm of q and k (Qwen3), before RoPE
    project(kQ, a.h1, a.q_pre);
    CALL(rmsnorm_forward, T * d.H, d.D, a.q_pre, w.q_norm, d.eps, a.q, a.q_rstd, dt, nullptr);
    project(kK, a.h1, a.k_pre);
    CALL(rmsnorm_forward, T * d.Hkv, d.D, a.k_pre, w.k_norm, d.eps, a.k, a.k_rstd, dt, nullptr);
  } else {
    project(kQ, a.h1, a.q);
    project(kK, a.h1, a.k);
  }
  project(kV, a.h1, a.v);
  CALL(rope_forward, T, d.H, d.D, a.q, a.q, pos, w.inv_freq, dt, nullptr);
  CALL(rope_forward, T, d.Hkv, d.D, a.k, a.k, pos, w.inv_freq, dt, nullptr);
  hooks.attention(a);
  project(kO, a.att, a.tmp);
  CALL(residual_add, (size_t)T * d.C, x_in, a.tmp, a.x_mid, dt, nullptr);
  // MLP block: x_out = x_mid + down(silu(gate(h2)) * up(h2))
  CALL(rmsnorm_forward, T, d.C, a.x_mid, w.post_attention_norm, d.eps, a.h2, a.rstd2, dt, nullptr);
  project(kGate, a.h2, a.gate);
  project(kUp, a.h2, a.up);
  CALL(swiglu_forward, (size_t)T * d.F, a.gate, a.up, a.act, dt, nullptr);
  project(kDown, a.act, a.tmp);
  CALL(residual_add, (size_t)T * d.C, a.x_mid, a.tmp, x_out, dt, nullptr);
}

void backward(const Kernels& kern, const Dims& d, const Weights& w, const Grads& g, int T, const int32_t* pos,
              const void* x_in, const Acts& a, const std::vector<CausalBatch>& batches, const Hooks& hooks,
              const Scratch& s, void* dx) {
  const Kernels& kern_ = kern;
  const int dt = d.dtype;
  const size_t qd = (size_t)d.H * d.D, kd = (size_t)d.Hkv * d.D;
  auto project_backward = [&](int p, const void* dy, const void* x, void* dxp, int accumulate) {
    if (!hooks.project_backward || !hooks.project_backward(p, w.proj[p], dy, x, dxp, accumulate, T))
      linear_backward(kern, dt, w.proj[p], g.w[p], g.b[p], dy, x, dxp, accumulate, T);
  };
  // MLP branch; dx holds d x_out, which is also d x_mid through the residual
  project_backward(kDown, dx, a.act, s.d_act, 0);
  CALL(swiglu_backward, (size_t)T * d.F, a.gate, a.up, s.d_act, s.d_gate, s.d_up, dt, nullptr);
  project_backward(kGate, s.d_gate, a.h2, s.dh, 0);
  project_backward(kUp, s.d_up, a.h2, s.dh, 1);
  CALL(rmsnorm_backward, T, d.C, a.x_mid, w.post_attention_norm, a.rstd2, s.dh, dx, g.post_attention_norm, s.norm, 1,
       dt, nullptr);
  // attention branch; dx now holds d x_mid, also d x_in through the residual
  project_backward(kO, dx, a.att, s.d_att, 0);
  for (const CausalBatch& b : batches)
    CALL(attention_backward, b.B, b.n, d.H, d.Hkv, d.D, at(a.q, b.t0 * qd, dt), at(a.k, b.t0 * kd, dt),
         at(a.v, b.t0 * kd, dt), at(a.att, b.t0 * qd, dt), a.lse + (size_t)b.t0 * d.H, at(s.d_att, b.t0 * qd, dt),
         at(s.dq, b.t0 * qd, dt), at(s.dk, b.t0 * kd, dt), at(s.dv, b.t0 * kd, dt), s.att + (size_t)b.t0 * d.H,
         d.attention_scale(), 1, dt, nullptr);
  CALL(rope_backward, T, d.H, d.D, s.dq, s.dq, pos, w.inv_freq, dt, nullptr);
  CALL(rope_backward, T, d.Hkv, d.D, s.dk, s.dk, pos, w.inv_freq, dt, nullptr);
  const void* dq = s.dq;
  const void* dk = s.dk;
  if (d.qk_norm) {
    CALL(rmsnorm_backward, T * d.H, d.D, a.q_pre, w.q_norm, a.q_rstd, s.dq, s.dq_pre, g.q_norm, s.norm, 0, dt, nullptr);
    CALL(rmsnorm_backward, T * d.Hkv, d.D, a.k_pre, w.k_norm, a.k_rstd, s.dk, s.dk_pre, g.k_norm, s.norm, 0, dt,
         nullptr);
    dq = s.dq_pre;
    dk = s.dk_pre;
  }
  project_backward(kQ, dq, a.h1, s.dh, 0);
  project_backward(kK, dk, a.h1, s.dh, 1);
  project_backward(kV, s.dv, a.h1, s.dh, 1);
  CALL(rmsnorm_backward, T, d.C, x_in, w.input_norm, a.rstd1, s.dh, dx, g.input_norm, s.norm, 1, dt, nullptr);
}

#undef CALL

}  // namespace recode::model::cuda_layer
