// Token log-probabilities on a chosen backend (logprob.h): the CPU code, or the CUDA kernels
// (cuda/logprob.cu) on a GPU or through the SIMT emulation.
#include "device/kernels.h"
#include "logprob/logprob.h"

namespace recode::logprob {

void forward_logits_on(Device d, const float* x, int T, int V, const int32_t* tg, float temp, float* lp, float* ent,
                       float* lse) {
  if (d == Device::CPU) return forward_logits(x, T, V, tg, temp, lp, ent, lse);
  auto entry = Kernels(d).logprob_logits_forward;
  char err[512] = {0};
  check_kernel_status(entry(x, T, V, tg, temp, lp, ent, lse, err, sizeof err), "logprob_logits_forward", err);
}

void backward_logits_on(Device d, const float* x, int T, int V, const int32_t* tg, float temp, const float* lse,
                        const float* ent, const float* dl, const float* de, float* dx) {
  if (d == Device::CPU) return backward_logits(x, T, V, tg, temp, lse, ent, dl, de, dx);
  auto entry = Kernels(d).logprob_logits_backward;
  char err[512] = {0};
  check_kernel_status(entry(x, T, V, tg, temp, lse, ent, dl, de, dx, err, sizeof err), "logprob_logits_backward", err);
}

void forward_hidden_on(Device d, const float* h, const float* w, int T, int H, int V, const int32_t* tg, float temp,
                       float* lp, float* ent, float* lse) {
  if (d == Device::CPU) return forward_hidden(h, w, T, H, V, tg, temp, lp, ent, lse);
  auto entry = Kernels(d).logprob_hidden_forward;
  char err[512] = {0};
  check_kernel_status(entry(h, w, T, H, V, tg, temp, lp, ent, lse, err, sizeof err), "logprob_hidden_forward", err);
}

void backward_hidden_on(Device d, const float* h, const float* w, int T, int H, int V, const int32_t* tg, float temp,
                        const float* lse, const float* ent, const float* dl, const float* de, float* dh, float* dw) {
  if (d == Device::CPU) return backward_hidden(h, w, T, H, V, tg, temp, lse, ent, dl, de, dh, dw);
  auto entry = Kernels(d).logprob_hidden_backward;
  char err[512] = {0};
  check_kernel_status(entry(h, w, T, H, V, tg, temp, lse, ent, dl, de, dh, dw, err, sizeof err),
                      "logprob_hidden_backward", err);
}

}  // namespace recode::logprob
