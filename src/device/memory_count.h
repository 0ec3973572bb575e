// The counting device ('counting'): a kernel table whose allocator hands out fake addresses that nothing ever
// dereferences and adds up the bytes, and whose compute entry points do nothing. The CUDA backend and trainer
// run their own allocation code on it unchanged, which is how `recode plan` (src/model/memory_plan.cpp) finds
// the device memory of a run without a GPU or weights: not a formula beside the code that could drift from it.
// Allocations are charged to the category the allocating thread declared with a MemScope (scratch if none).
#pragma once

#include <cstddef>

#include "device/kernels.h"

namespace recode {

enum class MemCategory {
  Weights,      // the backend's model weights
  Trainable,    // trained tensors (adapters: A, B, m and their compute copies) and their gradients
  Optimizer,    // AdamW moments, and the fp32 masters of a bf16 model under full fine-tuning
  KvCache,      // the backend's KV cache
  Generation,   // the backend's per-step activations and logits
  Activations,  // the trainer's kept activations (and, recomputing, the one layer being recomputed)
  Logprob,      // the log-prob head's chunked workspace
  Scratch,      // backward scratch and everything else
  Count
};
constexpr int kMemCategories = (int)MemCategory::Count;
const char* mem_category_name(MemCategory c);

// While alive, device allocations made by this thread are charged to `c` (the counting device reads it; the
// others ignore it). Scopes nest.
class MemScope {
 public:
  explicit MemScope(MemCategory c);
  ~MemScope();
  MemScope(const MemScope&) = delete;
  MemScope& operator=(const MemScope&) = delete;

 private:
  MemCategory prev_;
};

struct MemFigures {
  size_t bytes[kMemCategories] = {};
  size_t total = 0;
};
struct MemCount {
  MemFigures current;
  MemFigures peak;  // the categories at the moment the total peaked
};

// The counting device's figures (process-wide), and a restart of its peak at the current figures (or, to_zero,
// at nothing: the next allocation sets it).
MemCount counting_memory();
void counting_memory_reset_peak(bool to_zero = false);

// The counting device's kernel table (Kernels(Device::Counting) returns a copy).
Kernels counting_table();

}  // namespace recode
