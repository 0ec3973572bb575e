/* C ABI of the sampling kernel (cuda/sampling.cu); declared as cuda/recode_abi.h describes. The algorithm and the
 * per-row status codes are those of src/sampling/sampling.h; cuda/sampling_core.h holds the arithmetic both share. */
#ifndef RECODE_SAMPLING_H
#define RECODE_SAMPLING_H

#include "recode_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RECODE_SAMPLING_OPS(X)                                                                                       \
  /* logits: rows x vocab, fp32 or bf16 (is_bf16); temperature/top_k/top_p/min_p/row_ids/steps per row; writes   */  \
  /* tokens, logprobs, filtered_logprobs, row_status and bad_index per row. Host pointers (copies inside).        */ \
  X(sample_rows, (const void* logits, int is_bf16, int rows, int vocab, const float* temperature, const int* top_k,  \
                  const float* top_p, const float* min_p, uint64_t seed, const uint64_t* row_ids,                    \
                  const uint64_t* steps, int32_t* tokens, float* logprobs, float* filtered_logprobs,                 \
                  int32_t* row_status, int32_t* bad_index, char* err, size_t err_len))                               \
  /* The same on device buffers (no copies), for logits that already live on the device; runs on `stream`.       */  \
  X(sample_rows_device, (const void* d_logits, int is_bf16, int rows, int vocab, const float* d_temp,                \
                         const int* d_top_k, const float* d_top_p, const float* d_min_p, uint64_t seed,              \
                         const uint64_t* d_rows, const uint64_t* d_steps, int32_t* d_tokens, float* d_lp,            \
                         float* d_flp, int32_t* d_status, int32_t* d_bad, void* stream, char* err, size_t err_len))

RECODE_SAMPLING_OPS(RECODE_ABI_DECLARE)

#ifdef __cplusplus
}
#endif

#endif /* RECODE_SAMPLING_H */
