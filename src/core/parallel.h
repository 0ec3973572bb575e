// The addon's CPU thread pool. One pool for the process; every CPU kernel and the SIMT emulation spread
// their work through parallel_for. A parallel_for issued from inside another runs serially on the caller,
// and concurrent callers (several async workers) take turns, so the cores are never oversubscribed.
#pragma once

#include <cstdint>
#include <functional>

namespace recode {

// Number of threads parallel_for uses (the caller included). Defaults to the hardware threads, or to
// RECODE_NUM_THREADS when set.
int num_threads();
void set_num_threads(int n);

// Calls fn(begin, end) over [0, n) in chunks of at least `grain` items, dynamically scheduled.
// Exceptions thrown by fn are rethrown on the caller (the first one wins; the remaining chunks are skipped).
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& fn);

// True inside a parallel_for body (nested calls run serially).
bool in_parallel_region();

}  // namespace recode
