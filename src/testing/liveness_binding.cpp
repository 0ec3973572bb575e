// Test-only: the heartbeats of a torchrun-style world (src/dist/liveness.h) without a communicator, so a test can kill
// or stop plain processes and check who names whom (test/dist-torchrun.test.mjs).
//   distLivenessStart(rank, size, host, port, intervalMs, timeoutMs), distLivenessStop()
#include "dist/liveness.h"
#include "node/napi_util.h"

namespace recode {
namespace {

Napi::Value liveness_start(const Napi::CallbackInfo& info) {
  Args a{info, "distLivenessStart"};
  const int size = (int)a.integer(1, "size", 1, 1 << 20);
  liveness::start((int)a.integer(0, "rank", 0, size - 1), size, a.string(2, "host"),
                  (int)a.integer(3, "port", 1, 65535), (int)a.integer(4, "intervalMs", 1, 3600000),
                  (int)a.integer(5, "timeoutMs", 1, 86400000), nullptr);
  return info.Env().Undefined();
}

Napi::Value liveness_stop(const Napi::CallbackInfo& info) {
  liveness::stop();
  return info.Env().Undefined();
}

}  // namespace

RECODE_EXPORT("distLivenessStart", liveness_start);
RECODE_EXPORT("distLivenessStop", liveness_stop);

}  // namespace recode
