#include "device/memory_count.h"

#include <cstdint>
#include <cstdio>
#include <mutex>
#include <type_traits>
#include <unordered_map>

namespace recode {

const char* mem_category_name(MemCategory c) {
  static const char* names[kMemCategories] = {"weights",    "trainable",   "optimizer", "kvCache",
                                              "generation", "activations", "logprob",   "scratch"};
  return names[(int)c];
}

namespace {

thread_local MemCategory current_category = MemCategory::Scratch;

struct Counter {
  std::mutex mu;
  std::unordered_map<uintptr_t, std::pair<size_t, int>> live;  // address -> bytes, category
  uintptr_t next = (uintptr_t)1 << 44;  // fake addresses: far from anything mapped, never dereferenced
  MemCount count;
};
Counter& counter() {
  static Counter* c = new Counter;  // never destroyed: frees may come from static destructors
  return *c;
}

int count_alloc(size_t bytes, void** out, char* err, size_t err_len) {
  if (!out) {
    if (err && err_len) snprintf(err, err_len, "device_alloc: out is NULL");
    return 1;
  }
  Counter& c = counter();
  std::lock_guard<std::mutex> lk(c.mu);
  const int cat = (int)current_category;
  *out = (void*)c.next;
  c.live[c.next] = {bytes, cat};
  c.next += (bytes + 511) & ~(size_t)255;  // a gap between blocks, so no two share an address
  MemFigures& cur = c.count.current;
  cur.bytes[cat] += bytes;
  cur.total += bytes;
  if (cur.total > c.count.peak.total) c.count.peak = cur;
  return 0;
}

int count_free(void* ptr, char*, size_t) {
  if (!ptr) return 0;
  Counter& c = counter();
  std::lock_guard<std::mutex> lk(c.mu);
  auto it = c.live.find((uintptr_t)ptr);
  if (it == c.live.end()) return 0;
  c.count.current.bytes[it->second.second] -= it->second.first;
  c.count.current.total -= it->second.first;
  c.live.erase(it);
  return 0;
}

int count_stats(size_t* current, size_t* peak, int reset_peak, char*, size_t) {
  if (reset_peak) counting_memory_reset_peak(reset_peak == 2);
  MemCount m = counting_memory();
  if (current) *current = m.current.total;
  if (peak) *peak = m.peak.total;
  return 0;
}

// The head's workspace exists only inside the call: taken and given back, charged to the log-prob category.
void head_workspace(size_t bytes) {
  MemScope s(MemCategory::Logprob);
  void* p = nullptr;
  count_alloc(bytes, &p, nullptr, 0);
  count_free(p, nullptr, 0);
}
int count_head_forward(const void*, const void*, int T, int, int V, const int32_t*, float, int dtype, float*, float*,
                       float*, char*, size_t) {
  head_workspace(recode_logprob_workspace_bytes(T, V, dtype, 0));
  return 0;
}
int count_head_backward(const void*, const void*, int T, int, int V, const int32_t*, float, int dtype, const float*,
                        const float*, const float*, const float*, float*, float*, char*, size_t) {
  head_workspace(recode_logprob_workspace_bytes(T, V, dtype, 1));
  return 0;
}

// Every other entry point: accepted and done, touching nothing.
template <class F>
struct Nothing;
template <class... A>
struct Nothing<int (*)(A...)> {
  static int call(A...) { return 0; }
};

}  // namespace

MemScope::MemScope(MemCategory c) : prev_(current_category) { current_category = c; }
MemScope::~MemScope() { current_category = prev_; }

MemCount counting_memory() {
  Counter& c = counter();
  std::lock_guard<std::mutex> lk(c.mu);
  return c.count;
}

void counting_memory_reset_peak(bool to_zero) {
  Counter& c = counter();
  std::lock_guard<std::mutex> lk(c.mu);
  c.count.peak = to_zero ? MemFigures() : c.count.current;
}

Kernels counting_table() {
  Kernels k;
#define RECODE_KERNEL_NOTHING(name, params) k.name = &Nothing<decltype(k.name)>::call;
  RECODE_KERNEL_OPS(RECODE_KERNEL_NOTHING)
#undef RECODE_KERNEL_NOTHING
  k.device_alloc = &count_alloc;
  k.device_free = &count_free;
  k.device_memory_stats = &count_stats;
  k.logprob_hidden_forward_device = &count_head_forward;
  k.logprob_hidden_backward_device = &count_head_backward;
  return k;
}

}  // namespace recode
