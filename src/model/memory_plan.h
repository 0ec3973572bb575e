// The device memory of a training run, found by running its allocations (`recode plan`). The workload is what
// lib/train runs on a CUDA model: load the model (weights, KV cache for `slots` x `context`), make the trainer
// (adapters or full fine-tuning), then two RL steps of generation (prefill chunks of every slot at once, then a
// decode step) and a policy update (a reference forward when KL is on, a forward + backward of a micro-batch,
// AdamW): the second of each sees what the other phase left allocated. On the
// counting device (src/device/memory_count.h) nothing is computed and no weights are needed; on 'emulated' or
// 'cuda' the same workload runs for real on loaded weights, so the planned and the measured peaks compare.
#pragma once

#include <cstddef>
#include <vector>

#include "device/memory_count.h"
#include "model/model.h"
#include "model/train_step.h"

namespace recode::model {

struct PlanWorkload {
  ModelConfig cfg;
  bool bf16 = true;
  int slots = 64, context = 3072, prefill_chunk = 512;
  int prompt_tokens = 2048, completion_tokens = 1024;  // every sample at the longest allowed
  AdapterSpec adapter;
  bool recompute = false;
  int micro_rows = 64;          // sequences per training forward
  bool reference_pass = false;  // KL on: a forward of the frozen base per micro-batch
};

struct PlanPhase {
  size_t peak = 0;                    // bytes held at the phase's peak (over the baseline before loading)
  size_t parts[kMemCategories] = {};  // by category at that moment (the counting device only)
};
struct PlanResult {
  PlanPhase generation, training;  // each phase's larger peak of the two steps
};

// Runs the workload on `device` (Counting: weights may be null; else the weights to load).
PlanResult run_plan_workload(Device device, const PlanWorkload& w, const WeightStore* weights);

}  // namespace recode::model
