// Sampling one token per row of logits: temperature, top-k, top-p, min-p and greedy, each alone or combined,
// with per-row parameters. The C++ entry points below are what the generation loop calls; the JavaScript
// binding (src/node/sampling_binding.cpp) and the CUDA kernel (cuda/sampling.cu) implement the same definition,
// and for the same (seed, row_id, step) every backend picks the same token.
//
// Definition (x = the row's logits, T = temperature):
//   1. Temperature: t_i = (x_i - max x) / T; weights w_i = exp(t_i). T = 0 means greedy (below).
//   2. Filters compose in the order Hugging Face applies its logits warpers: top-k, then top-p on the
//      renormalised top-k distribution, then min-p. Each keeps an upper set of the logit values, so the kept
//      set is {i : x_i >= tau} intersected with the min-p set:
//        - top-k (k > 0 and k < vocab): tau_k = the k-th largest logit; every token with x_i >= tau_k is kept,
//          so a tie at the boundary keeps all tied tokens (k is a lower bound on the kept count).
//        - top-p (p < 1): tau_p = the largest logit value v such that the top-k mass of {x_i >= v} is at
//          least p times the top-k total; tokens tied at the boundary are kept or dropped together.
//        - min-p (m > 0): keeps w_i >= m, i.e. p_i >= m * p_max.
//   3. The token is drawn from the kept set with probability w_i / sum_kept w (inverse CDF in index order).
// Exactness and reproducibility: the weights are computed with a fixed sequence of correctly rounded
// operations (sampling_core.h), then accumulated as 64-bit fixed-point integers in units of 2^-43 of the top
// token's weight. Integer sums are associative, so the block-parallel CUDA kernel and the sequential CPU code
// obtain identical masses, identical kept sets and identical tokens. The only change to the distribution is
// that rounding: tokens less likely than about 6e-14 times the top token get weight 0 (total error below
// vocab * 2^-44 of the top token's weight).
// Randomness: 64 bits from Philox-4x32-10 with key = seed and counter = (row_id, step); no other state.
// Greedy (T = 0): the first index of the maximum; logprob is then the token's log-probability under the
// untempered softmax (T = 1) and filtered_logprob is 0 (the filtered distribution is a point mass).
// CUDA: librecode_cuda.so exports recode_cuda_sample_rows (host buffers in and out) and
// recode_cuda_sample_rows_device (device buffers, a stream, no copies: for logits already on the GPU); see
// cuda/sampling.cu for their signatures. Reach them through the kernel table of src/device/kernels.h.
// Errors (recode::Error, code ERR_INVALID_ARG): a NaN or +inf logit, a row whose logits are all -inf,
// parameters out of range (temperature < 0, not finite, or positive below 2^-126 where 1/T overflows, top_k < 0, top_p
// outside (0, 1], min_p outside [0, 1]). -inf logits are allowed (weight 0).
#pragma once

#include <cstdint>

#include "core/cancel.h"
#include "core/numeric.h"
#include "sampling_core.h"  // kMaxVocab

namespace recode {
enum class Device;  // device/kernels.h
}

namespace recode::sampling {

struct Params {
  float temperature = 1.f;  // 0 = greedy
  int top_k = 0;            // 0 = off
  float top_p = 1.f;        // 1 = off
  float min_p = 0.f;        // 0 = off
};

struct Result {
  int32_t token;
  float logprob;           // under the unfiltered temperature-scaled distribution
  float filtered_logprob;  // under the renormalised filtered distribution
};

// One row of fp32 logits; randomness keyed by (seed, row_id, step).
Result sample_row(const float* logits, int vocab, const Params& p, uint64_t seed, uint64_t row_id, uint64_t step);
Result sample_row(const bf16* logits, int vocab, const Params& p, uint64_t seed, uint64_t row_id, uint64_t step);

// rows x vocab logits (row-major), parallel over rows. per_row[r], row_ids[r] and steps[r] belong to row r.
void sample_rows(const float* logits, int rows, int vocab, const Params* per_row, uint64_t seed,
                 const uint64_t* row_ids, const uint64_t* steps, Result* out);
void sample_rows(const bf16* logits, int rows, int vocab, const Params* per_row, uint64_t seed, const uint64_t* row_ids,
                 const uint64_t* steps, Result* out);

// The same on `device` (sampling_device.cpp), logits fp32 or (is_bf16) bf16: the CPU code in chunks of rows with a
// cancellation check between them, or the CUDA kernel (on a GPU or emulated). Errors name rows from 0 of the
// whole batch.
void sample_rows_on(Device device, const void* logits, bool is_bf16, int rows, int vocab, const Params* per_row,
                    uint64_t seed, const uint64_t* row_ids, const uint64_t* steps, Result* out,
                    const CancelFlag& cancel);

// Throws recode::Error (ERR_INVALID_ARG) naming the row when p is out of range.
void check_params(const Params& p, int row);
// Throws the error for a row whose scan found `status` (kRowNaN, kRowPosInf, kRowAllNegInf) at `index`.
[[noreturn]] void throw_row_status(int status, int row, int index);

}  // namespace recode::sampling
