// The fast attention bodies compiled for AVX2+FMA (entered only after the run-time check in attention.cpp).
#define RECODE_ATTN_NS avx2
#include "ops/attention_impl.h"

namespace recode::ops {
void attention_forward_avx2(float* out, float* lse, const float* q, const float* k, const float* v,
                            const AttnShape& s) {
  avx2::forward(out, lse, q, k, v, s);
}
void attention_decode_avx2(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s) {
  avx2::decode(out, lse, q, k, v, s);
}
void attention_backward_avx2(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                             const float* v, const float* out, const float* lse, const AttnShape& s) {
  avx2::backward(dq, dk, dv, dout, q, k, v, out, lse, s);
}
}  // namespace recode::ops
