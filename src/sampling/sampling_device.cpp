// Sampling on a chosen backend (sampling.h): the CPU code, or the CUDA kernel (cuda/sampling.cu) on a GPU or
// through the SIMT emulation.
#include <algorithm>
#include <string>
#include <vector>

#include "device/kernels.h"
#include "sampling/sampling.h"

namespace recode::sampling {
namespace {

void sample_cpu(const void* logits, bool is_bf16, int rows, int vocab, const Params* params, uint64_t seed,
                const uint64_t* row_ids, const uint64_t* steps, Result* out, const CancelFlag& cancel) {
  const int chunk = 256;  // rows between cancellation checks
  for (int r0 = 0; r0 < rows; r0 += chunk) {
    cancel.throw_if_requested();
    int n = std::min(chunk, rows - r0);
    try {
      if (is_bf16)
        sample_rows((const bf16*)logits + (size_t)r0 * vocab, n, vocab, params + r0, seed, row_ids + r0, steps + r0,
                    out + r0);
      else
        sample_rows((const float*)logits + (size_t)r0 * vocab, n, vocab, params + r0, seed, row_ids + r0, steps + r0,
                    out + r0);
    } catch (const Error& e) {  // sample_rows numbers rows within the chunk: name the caller's row
      std::string msg = e.what();
      size_t at = msg.find("row ");
      if (r0 > 0 && at != std::string::npos) {
        size_t end = msg.find_first_not_of("0123456789", at + 4);
        int local = std::stoi(msg.substr(at + 4, end - at - 4));
        msg = msg.substr(0, at + 4) + std::to_string(local + r0) + msg.substr(end);
      }
      throw Error(e.code, msg);
    }
  }
}

}  // namespace

void sample_rows_on(Device device, const void* logits, bool is_bf16, int rows, int vocab, const Params* params,
                    uint64_t seed, const uint64_t* row_ids, const uint64_t* steps, Result* out,
                    const CancelFlag& cancel) {
  cancel.throw_if_requested();
  if (device == Device::CPU) return sample_cpu(logits, is_bf16, rows, vocab, params, seed, row_ids, steps, out, cancel);
  auto entry = Kernels(device).sample_rows;
  std::vector<float> temperature(rows), top_p(rows), min_p(rows), logprobs(rows), filtered(rows);
  std::vector<int> top_k(rows);
  std::vector<int32_t> tokens(rows), status(rows), bad(rows);
  for (int r = 0; r < rows; ++r) {
    temperature[r] = params[r].temperature;
    top_k[r] = params[r].top_k;
    top_p[r] = params[r].top_p;
    min_p[r] = params[r].min_p;
  }
  char err[512] = {0};
  int rc = entry(logits, is_bf16 ? 1 : 0, rows, vocab, temperature.data(), top_k.data(), top_p.data(), min_p.data(),
                 seed, row_ids, steps, tokens.data(), logprobs.data(), filtered.data(), status.data(), bad.data(), err,
                 sizeof err);
  check_kernel_status(rc, "sample_rows", err);
  for (int r = 0; r < rows; ++r)
    if (status[r] != kRowOk) throw_row_status(status[r], r, bad[r]);
  for (int r = 0; r < rows; ++r) out[r] = {tokens[r], logprobs[r], filtered[r]};
}

}  // namespace recode::sampling
