// Fiber scheduler behind simt.h. Each OS thread that runs blocks owns a scheduler: it runs the fibers of
// one block round-robin; a fiber runs until it reaches a synchronisation point it must wait at, or returns.
#include "simt/simt.h"

#include <sys/mman.h>
#include <unistd.h>

#include <exception>
#include <stdexcept>
#include <vector>

#include "core/parallel.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace simt {

namespace {

constexpr size_t kStackBytes = 256 * 1024;  // per CUDA thread; kernels keep their locals small
constexpr unsigned kMaxBlockThreads = 1024;

enum class FiberState { Ready, BlockBarrier, WarpBarrier, Done };

struct Fiber {
  ThreadView view;
  FiberState state = FiberState::Ready;
  uint64_t wait_generation = 0;  // the barrier generation this fiber waits to see pass
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
  char* stack = nullptr;
};

struct Warp {
  unsigned arrived = 0;   // lanes waiting at the current collective
  unsigned required = 0;  // lanes the current collective waits for
  unsigned exited = 0;    // lanes that returned
  uint64_t generation = 0;
  uint64_t slots[2][32];              // exchanged values, double-buffered by generation parity
  unsigned participants[2] = {0, 0};  // lanes that took part, by generation parity
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  unsigned live = 0;
  unsigned at_barrier = 0;
  uint64_t barrier_generation = 0;
  int barrier_count[2] = {0, 0};  // __syncthreads_count accumulators by generation parity
  std::vector<char> dynamic_shared;
  const std::function<void()>* body = nullptr;
  std::exception_ptr error;
#if defined(__x86_64__)
  void* scheduler_sp = nullptr;
#else
  ucontext_t scheduler_ctx;
#endif
};

thread_local Block* tl_block = nullptr;
thread_local Fiber* tl_fiber = nullptr;
thread_local std::vector<char*> tl_stacks;  // reused across blocks on this OS thread

char* allocate_stack() {
  long page = sysconf(_SC_PAGESIZE);
  void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("simt: cannot allocate a fiber stack");
  mprotect(p, (size_t)page, PROT_NONE);  // guard page: an overflowing kernel faults instead of corrupting
  return static_cast<char*>(p);
}

}  // namespace

thread_local ThreadView* tl_view = nullptr;

static thread_local cudaError_t tl_last_error = cudaSuccess;
cudaError_t& last_error() { return tl_last_error; }

}  // namespace simt

#if defined(__x86_64__)
// recode_simt_switch(save, load): saves the callee-saved registers and stack pointer into *save and resumes
// the context whose stack pointer is `load`. Kept to the System V callee-saved set; no signal masks.
extern "C" void recode_simt_switch(void** save, void* load);
asm(R"(
  .text
  .p2align 4
  .type recode_simt_switch,@function
recode_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size recode_simt_switch, .-recode_simt_switch
)");
#endif

namespace simt {
namespace {

void switch_to_scheduler() {
#if defined(__x86_64__)
  recode_simt_switch(&tl_fiber->sp, tl_block->scheduler_sp);
#else
  swapcontext(&tl_fiber->ctx, &tl_block->scheduler_ctx);
#endif
}

void release_block_barrier(Block& b) {
  for (auto& f : b.fibers)
    if (f.state == FiberState::BlockBarrier) f.state = FiberState::Ready;
  b.at_barrier = 0;
  b.barrier_count[(b.barrier_generation + 1) & 1] = 0;
  ++b.barrier_generation;
}

// Releases the warp's pending collective if every required lane that is still alive has arrived.
bool try_release_warp(Block& b, Warp& w, unsigned warp_index) {
  unsigned need = w.required & ~w.exited;
  if (w.arrived == 0 || (w.arrived & need) != need) return false;
  for (unsigned lane = 0; lane < 32; ++lane) {
    if (!(w.arrived >> lane & 1u)) continue;
    Fiber& f = b.fibers[warp_index * 32 + lane];
    if (f.state == FiberState::WarpBarrier) f.state = FiberState::Ready;
  }
  w.participants[w.generation & 1] = w.arrived;
  w.arrived = 0;
  w.required = 0;
  ++w.generation;
  return true;
}

[[noreturn]] void fiber_main() {
  Block& b = *tl_block;
  try {
    (*b.body)();
  } catch (...) {
    if (!b.error) b.error = std::current_exception();
  }
  Fiber& f = *tl_fiber;
  f.state = FiberState::Done;
  --b.live;
  unsigned warp_index = f.view.linear_tid / 32, lane = f.view.linear_tid % 32;
  Warp& w = b.warps[warp_index];
  w.exited |= 1u << lane;
  try_release_warp(b, w, warp_index);
  if (b.at_barrier > 0 && b.at_barrier == b.live) release_block_barrier(b);
  switch_to_scheduler();
  __builtin_unreachable();
}

#if defined(__x86_64__)
extern "C" void recode_simt_fiber_entry() { fiber_main(); }
#else
void fiber_entry_ucontext() { fiber_main(); }
#endif

void prepare_fiber(Fiber& f) {
#if defined(__x86_64__)
  // Initial frame popped by recode_simt_switch: mxcsr/x87 control words, six registers, return address.
  uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + kStackBytes) & ~uintptr_t(15);
  uint64_t* sp = reinterpret_cast<uint64_t*>(top);
  *--sp = 0;                                                     // fake return address of the entry
  *--sp = reinterpret_cast<uint64_t>(&recode_simt_fiber_entry);  // `ret` lands here, rsp % 16 == 8
  for (int i = 0; i < 6; ++i) *--sp = 0;                         // rbp rbx r12 r13 r14 r15
  uint32_t csr[2];
  asm volatile("stmxcsr %0" : "=m"(csr[0]));
  asm volatile("fnstcw %0" : "=m"(csr[1]));
  *--sp = (uint64_t)csr[0] | ((uint64_t)(csr[1] & 0xffff) << 32);
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack;
  f.ctx.uc_stack.ss_size = kStackBytes;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, fiber_entry_ucontext, 0);
#endif
}

void resume(Block& b, Fiber& f) {
  tl_fiber = &f;
  tl_view = &f.view;
#if defined(__x86_64__)
  recode_simt_switch(&b.scheduler_sp, f.sp);
#else
  swapcontext(&b.scheduler_ctx, &f.ctx);
#endif
  tl_fiber = nullptr;
  tl_view = nullptr;
}

void run_block(Block& b, dim3 grid, dim3 block, dim3 block_idx) {
  unsigned n = block.x * block.y * block.z;
  unsigned nwarps = (n + 31) / 32;
  b.fibers.assign(n, Fiber{});
  b.warps.assign(nwarps, Warp{});
  // Lanes past the end of the last warp never exist: mark them exited so collectives do not wait for them.
  if (n % 32) b.warps.back().exited = ~((1u << (n % 32)) - 1u);
  b.live = n;
  b.at_barrier = 0;
  b.barrier_generation = 0;
  b.barrier_count[0] = b.barrier_count[1] = 0;
  b.error = nullptr;
  while (tl_stacks.size() < n) tl_stacks.push_back(allocate_stack());
  for (unsigned t = 0; t < n; ++t) {
    Fiber& f = b.fibers[t];
    f.view.linear_tid = t;
    f.view.thread_idx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
    f.view.block_idx = block_idx;
    f.view.block_dim = block;
    f.view.grid_dim = grid;
    f.stack = tl_stacks[t];
    prepare_fiber(f);
  }
  Block* outer_block = tl_block;
  tl_block = &b;
  while (b.live > 0) {
    bool ran = false;
    for (unsigned t = 0; t < n; ++t) {
      if (b.fibers[t].state != FiberState::Ready) continue;
      resume(b, b.fibers[t]);
      ran = true;
    }
    if (!ran) {
      // Every live thread waits at a barrier that cannot open: on a GPU this kernel would hang.
      unsigned at_block = 0, at_warp = 0;
      for (auto& f : b.fibers) {
        at_block += f.state == FiberState::BlockBarrier;
        at_warp += f.state == FiberState::WarpBarrier;
      }
      tl_block = outer_block;
      throw std::runtime_error("simt: deadlock in block (" + std::to_string(block_idx.x) + "," +
                               std::to_string(block_idx.y) + "," + std::to_string(block_idx.z) +
                               "): " + std::to_string(at_block) + " threads wait at __syncthreads, " +
                               std::to_string(at_warp) + " at a warp collective");
    }
  }
  tl_block = outer_block;
  if (b.error) std::rethrow_exception(b.error);
}

}  // namespace

void* dynamic_shared_memory() { return tl_block->dynamic_shared.data(); }

void syncthreads() {
  Block& b = *tl_block;
  Fiber& f = *tl_fiber;
  if (++b.at_barrier == b.live) {
    release_block_barrier(b);
    return;
  }
  f.state = FiberState::BlockBarrier;
  switch_to_scheduler();
}

int syncthreads_count(int predicate) {
  Block& b = *tl_block;
  uint64_t gen = b.barrier_generation;
  b.barrier_count[gen & 1] += predicate != 0;
  // The count must be read before the next barrier of this parity resets it; release_block_barrier clears
  // the *other* parity, so the value for `gen` stays valid until barrier gen+1 is released.
  int* slot = &b.barrier_count[gen & 1];
  syncthreads();
  return *slot;
}

uint64_t warp_exchange(unsigned mask, uint64_t mine, int src_lane) {
  Block& b = *tl_block;
  Fiber& f = *tl_fiber;
  unsigned warp_index = f.view.linear_tid / 32, lane = f.view.linear_tid % 32;
  Warp& w = b.warps[warp_index];
  uint64_t gen = w.generation;
  w.slots[gen & 1][lane] = mine;
  if (w.arrived == 0) w.required = mask;
  w.arrived |= 1u << lane;
  if (!try_release_warp(b, w, warp_index)) {
    f.state = FiberState::WarpBarrier;
    switch_to_scheduler();
  }
  return w.slots[gen & 1][src_lane & 31];
}

void syncwarp(unsigned mask) { warp_exchange(mask, 0, 0); }

unsigned warp_ballot(unsigned mask, int predicate) {
  Block& b = *tl_block;
  Fiber& f = *tl_fiber;
  unsigned warp_index = f.view.linear_tid / 32;
  Warp& w = b.warps[warp_index];
  uint64_t gen = w.generation;
  warp_exchange(mask, predicate != 0, 0);
  unsigned bits = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((w.participants[gen & 1] >> l & 1u) && w.slots[gen & 1][l]) bits |= 1u << l;
  return bits;
}

void yield() {
  // Let the other fibers run (spin-waits); the current one stays Ready.
  switch_to_scheduler();
}

void launch(dim3 grid, dim3 block, size_t dynamic_shared_bytes, const std::function<void()>& body) {
  unsigned threads = block.x * block.y * block.z;
  if (threads == 0 || threads > kMaxBlockThreads || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.y > 65535 || grid.z > 65535 || dynamic_shared_bytes > 228 * 1024) {
    last_error() = cudaErrorInvalidConfiguration;
    throw std::runtime_error("simt: invalid launch configuration (grid " + std::to_string(grid.x) + "x" +
                             std::to_string(grid.y) + "x" + std::to_string(grid.z) + ", block " +
                             std::to_string(block.x) + "x" + std::to_string(block.y) + "x" + std::to_string(block.z) +
                             ", " + std::to_string(dynamic_shared_bytes) + " bytes of dynamic shared memory)");
  }
  int64_t nblocks = (int64_t)grid.x * grid.y * grid.z;
  recode::parallel_for(nblocks, 1, [&](int64_t begin, int64_t end) {
    Block b;
    b.body = &body;
    b.dynamic_shared.assign(dynamic_shared_bytes + 16, 0);
    for (int64_t i = begin; i < end; ++i) {
      dim3 idx((unsigned)(i % grid.x), (unsigned)((i / grid.x) % grid.y), (unsigned)(i / ((int64_t)grid.x * grid.y)));
      run_block(b, grid, block, idx);
    }
  });
}

}  // namespace simt
