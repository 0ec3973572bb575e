// Cancellation polled by long native loops. The flag is a word another thread stores 1 into: from
// JavaScript an Int32Array(1) on a SharedArrayBuffer set by an AbortSignal listener (the Node bindings
// checks it is shared, so it can never be detached under a running job); from C++ any int32 that outlives
// the work.
#pragma once

#include <cstdint>

#include "core/error.h"

namespace recode {

struct CancelFlag {
  const int32_t* flag = nullptr;
  bool requested() const { return flag && __atomic_load_n(flag, __ATOMIC_RELAXED) != 0; }
  void throw_if_requested() const {
    if (requested()) throw Error("ABORT_ERR", "the operation was aborted");
  }
};

}  // namespace recode
