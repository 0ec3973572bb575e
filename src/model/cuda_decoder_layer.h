// One pre-norm decoder layer of Llama/Qwen2/Qwen3 on the device, forward and backward, composed from the kernel
// table: the device twin of src/ops/decoder_layer.cpp, shared by the CUDA inference backend (cuda_backend.cpp)
// and the CUDA trainer (cuda_train_step.cpp):
//   h1 = rmsnorm(x_in);  q,k,v = h1 Wq^T (+b), ...;  [Qwen3: q,k = rmsnorm per head];  rope(q, k)
//   x_mid = x_in + attention(q, k, v) Wo^T
//   h2 = rmsnorm(x_mid);  x_out = x_mid + (silu(h2 Wg^T) * (h2 Wu^T)) Wd^T
// What the two callers do differently is a parameter, not a second copy of the layer:
//   - where keys and values go (Hooks::attention): the backend writes them to its KV cache and attends over the
//     cached prefix; the trainer runs causal_attention over its packed sequences, keeping lse for the backward;
//   - what is kept (Acts): device pointers the caller chooses. The backend points them at a few reused buffers
//     (x_in = x_mid = x_out: the residual stream updated in place; no rstd); the trainer at one set per layer.
//     Recomputing a layer for its backward is forward() again from the saved x_in;
//   - the projections (Hooks::project, project_backward): the trainer substitutes its LoRA / DoRA linear.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "device/kernels.h"
#include "model/projections.h"

namespace recode::model::cuda_layer {

// The projections of a layer, in the order of model/projections.h's names.
enum Projection { kQ, kK, kV, kO, kGate, kUp, kDown, kProjectionCount };
static_assert(kProjectionCount == model::kProjectionCount, "one projection order (model/projections.h)");

struct Dims {
  int C = 0, H = 0, Hkv = 0, D = 0, F = 0;  // hidden, query heads, key/value heads, head dim, MLP width
  float eps = 1e-6f;
  bool qk_norm = false;
  int dtype = RECODE_F32;  // the compute dtype of weights and activations (RECODE_F32 or RECODE_BF16)
  float attention_scale() const { return 1.0f / std::sqrt((float)D); }
  // Projection p's weight is [out_of(p), in_of(p)].
  int out_of(int p) const {
    const int n[kProjectionCount] = {H * D, Hkv * D, Hkv * D, C, F, F, C};
    return n[p];
  }
  int in_of(int p) const {
    const int k[kProjectionCount] = {C, C, C, H * D, C, C, F};
    return k[p];
  }
};

// y[M, N] = x[M, K] W^T + b: W in the compute dtype, b fp32 (null: none).
struct Linear {
  const void* w = nullptr;
  const float* b = nullptr;
  int N = 0, K = 0;
};

// The layer's device arrays: norms and matrices in the compute dtype; inv_freq fp32 [D/2] (the model's RoPE).
struct Weights {
  const void *input_norm = nullptr, *post_attention_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr;
  Linear proj[kProjectionCount];
  const float* inv_freq = nullptr;
};

// Gradients the backward adds into (fp32; null: frozen, not produced).
struct Grads {
  float *input_norm = nullptr, *post_attention_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr;
  float* w[kProjectionCount] = {};
  float* b[kProjectionCount] = {};
};

// Where one forward writes its activations ([T, ...] rows, compute dtype unless noted). rstd*, q_pre, k_pre and
// lse are needed only by a backward: the rstd pointers may be null, and without one q_pre and k_pre may share a
// buffer (q is normed before k is projected). x_mid may be x_in, and x_out either of them (updated in place).
struct Acts {
  void *h1 = nullptr, *q_pre = nullptr, *k_pre = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *att = nullptr;
  void *x_mid = nullptr, *h2 = nullptr, *gate = nullptr, *up = nullptr, *act = nullptr;
  float *rstd1 = nullptr, *rstd2 = nullptr, *q_rstd = nullptr /*[T, H]*/, *k_rstd = nullptr /*[T, Hkv]*/;
  float* lse = nullptr;  // fp32 [H, n] per sequence, at row offset t0 * H
  void* tmp = nullptr;   // [T, C] scratch: each branch's output before its residual add (may be h1 or h2)
};

// The backward's scratch ([T, ...] compute dtype unless noted).
struct Scratch {
  void *dh = nullptr /*[T, C]*/, *d_act = nullptr, *d_gate = nullptr, *d_up = nullptr /*[T, F]*/;
  void *d_att = nullptr, *dq = nullptr, *dq_pre = nullptr /*[T, H D]*/, *dk = nullptr, *dv = nullptr,
       *dk_pre = nullptr /*[T, Hkv D]*/;
  float* att = nullptr;   // fp32 [T, H]: attention_backward's row sums
  float* norm = nullptr;  // fp32 [RECODE_REDUCE_PARTS * max(C, D)]: rmsnorm_backward's partial weight sums
};

// B sequences of n tokens each, from position 0, starting at token row t0: one causal attention call.
struct CausalBatch {
  int B = 0, n = 0, t0 = 0;
};
// The calls for packed sequences of these lengths: one batched call when all are equal, else one per sequence.
std::vector<CausalBatch> causal_batches(const std::vector<int>& counts);

struct Hooks {
  // Fills a.att from a.q, a.k, a.v (after RoPE): decides where keys and values go. Required.
  std::function<void(const Acts& a)> attention;
  // Optional substitutes for projection p (L: its frozen linear): return true when done, false to run the
  // plain linear. The backward: dx (+)= d x (accumulate), with the substitute's own parameter gradients.
  std::function<bool(int p, const Linear& L, const void* x, void* y, int M)> project;
  std::function<bool(int p, const Linear& L, const void* dy, const void* x, void* dx, int accumulate, int M)>
      project_backward;
};

// The plain linear and its backward: dW += dy^T x and db += column sums of dy when dW is non-null (db may be
// null); dx (+)= dy W.
void linear_forward(const Kernels& kern, int dtype, const Linear& L, const void* x, void* y, int M);
void linear_backward(const Kernels& kern, int dtype, const Linear& L, float* dW, float* db, const void* dy,
                     const void* x, void* dx, int accumulate, int M);

// The training attention: causal attention of packed sequences (each from position 0), lse kept in a.lse.
void causal_attention(const Kernels& kern, const Dims& d, const Acts& a, const std::vector<CausalBatch>& batches);

// x_out = layer(x_in) over T tokens at positions pos (device int32 [T]), activations written to a.
void forward(const Kernels& kern, const Dims& d, const Weights& w, int T, const int32_t* pos, const void* x_in,
             void* x_out, const Acts& a, const Hooks& hooks);

// The backward of a training forward (causal attention over `batches`) whose input was x_in and activations a:
// dx holds d x_out on entry and d x_in on return; parameter gradients add into g.
void backward(const Kernels& kern, const Dims& d, const Weights& w, const Grads& g, int T, const int32_t* pos,
              const void* x_in, const Acts& a, const std::vector<CausalBatch>& batches, const Hooks& hooks,
              const Scratch& s, void* dx);

}  // namespace recode::model::cuda_layer
