#include "model/memory_plan.h"

#include <algorithm>
#include <functional>

#include "model/cuda_train_step.h"

namespace recode::model {

namespace {

// The device's allocator figures: total now, and the peak since the last reset.
struct Meter {
  Kernels kern;
  explicit Meter(Device d) : kern(d) {}
  void stats(size_t& cur, size_t& peak, int reset) {
    char err[512] = {0};
    check_kernel_status(kern.device_memory_stats(&cur, &peak, reset, err, sizeof err), "device_memory_stats", err);
  }
  size_t current() {
    size_t cur = 0, peak = 0;
    stats(cur, peak, 0);
    return cur;
  }
};

// A phase's peak: the most held after any of its allocations (its first ones come after it freed what the other
// phase left: that moment is the other phase's), or what it ends with when it allocated nothing.
void begin_phase(Meter& m) {
  size_t cur = 0, peak = 0;
  m.stats(cur, peak, 2);
}
PlanPhase end_phase(Device d, Meter& m, size_t baseline) {
  size_t cur = 0, peak = 0;
  m.stats(cur, peak, 0);
  PlanPhase p;
  const bool allocated = peak > 0;
  p.peak = (allocated ? peak : cur) - baseline;
  if (d == Device::Counting) {
    const MemCount c = counting_memory();
    const MemFigures& f = allocated ? c.peak : c.current;
    for (int i = 0; i < kMemCategories; ++i) p.parts[i] = f.bytes[i];
  }
  return p;
}

}  // namespace

PlanResult run_plan_workload(Device device, const PlanWorkload& w, const WeightStore* weights) {
  if (device == Device::CPU) throw Error("ERR_INVALID_ARG", "memory plan: device 'cpu' has no device memory to plan");
  if (device != Device::Counting && !weights)
    throw Error("ERR_INVALID_ARG", "memory plan: a real device needs the model's weights");
  if (w.slots < 1 || w.prefill_chunk < 1 || w.prompt_tokens < 1 || w.completion_tokens < 1 || w.micro_rows < 1)
    throw Error(
        "ERR_INVALID_ARG",
        "memory plan: slots, prefill chunk, prompt and completion tokens and micro-batch rows must be positive");
  if (w.context < w.prompt_tokens + w.completion_tokens)
    throw Error("ERR_INVALID_ARG", "memory plan: the context must hold the prompt and completion tokens");
  Meter meter(device);
  PlanResult r;
  // a counting device may hold other plans' leftovers (none: each plan frees all); a real one other models
  const size_t baseline = meter.current();
  {
    std::shared_ptr<Backend> backend =
        device == Device::Counting
            ? make_counting_backend(w.cfg, w.slots, w.context, w.bf16)
            : make_cuda_backend(device == Device::Emulated, w.cfg, *weights, w.slots, w.context, w.bf16);
    std::shared_ptr<Trainer> trainer = make_trainer(backend, w.adapter);
    if (w.recompute) trainer->set_activation_recomputation(true);
    const CancelFlag never;

    // Generation as lib/model generate() schedules it: every slot feeds its next prompt chunk together, then one
    // token each (the first step is the largest: later chunks are no longer, decode steps are one token).
    const int V = w.cfg.vocab;
    std::vector<StepSeq> seqs(w.slots);
    std::vector<float> logits((size_t)w.slots * V);
    auto generate = [&] {
      for (int s = 0; s < w.slots; ++s) backend->reset_slot(s);
      for (int fed = 0; fed < w.prompt_tokens;) {
        const int n = std::min(w.prefill_chunk, w.prompt_tokens - fed);
        for (int s = 0; s < w.slots; ++s) seqs[s] = {s, n};
        std::vector<int32_t> tokens((size_t)w.slots * n, 0);
        backend->forward(seqs, tokens.data(), false, logits.data(), never);
        fed += n;
      }
      for (int s = 0; s < w.slots; ++s) seqs[s] = {s, 1};
      std::vector<int32_t> tokens(w.slots, 0);
      backend->forward(seqs, tokens.data(), false, logits.data(), never);
    };
    // One policy update on a micro-batch of the longest sequences.
    const int L = w.prompt_tokens + w.completion_tokens;
    std::vector<int> counts(w.micro_rows, L);
    std::vector<int32_t> ids((size_t)w.micro_rows * L, 0);
    std::vector<float> logp(ids.size()), weights_(ids.size(), 0.0f);
    auto update = [&] {
      if (w.reference_pass) {
        const bool adapters = w.adapter.kind != AdapterSpec::Kind::None;
        if (adapters) trainer->set_adapters_enabled(false);
        trainer->forward(counts, ids.data(), logp.data(), never);
        if (adapters) trainer->set_adapters_enabled(true);
      }
      trainer->forward(counts, ids.data(), logp.data(), never);
      trainer->backward(weights_.data(), weights_.size(), never);
      trainer->apply_adamw(AdamWOptions{});
    };
    // Two RL steps: the second generation runs after an update (with whatever training left allocated), the
    // second update after a generation.
    auto measure = [&](PlanPhase& into, const std::function<void()>& run) {
      begin_phase(meter);
      run();
      PlanPhase p = end_phase(device, meter, baseline);
      if (p.peak > into.peak) into = p;
    };
    for (int step = 0; step < 2; ++step) {
      measure(r.generation, generate);
      measure(r.training, update);
    }
  }
  return r;
}

}  // namespace recode::model
