// Liveness of a world bootstrapped without MPI (torchrun / Slurm): NCCL cannot say which rank died, so every rank keeps
// one TCP connection to rank 0 (MASTER_ADDR:MASTER_PORT, after the id's rendezvous) and a thread exchanges one-byte
// heartbeats on it. Bytes of liveness only, never tensors. A connection that closes without a goodbye or stays silent
// for the timeout ends the run on every rank, naming the rank: rank 0 tells the others who it was, aborts its
// communicator through `on_fault` (so a call blocked in NCCL returns) and exits; the others do the same.
#pragma once

#include <functional>
#include <string>

namespace recode::liveness {

// Connects the world (blocks until every rank is connected, or throws ERR_DIST naming the missing ranks once
// 2 * timeout_ms has passed) and starts the heartbeat thread. on_fault runs on that thread just before the process
// exits; `health` (may be empty), polled there too, returns why the run cannot go on ("" while it can: NCCL's
// asynchronous error).
void start(int rank, int size, const std::string& host, int port, int interval_ms, int timeout_ms,
           std::function<void()> on_fault, std::function<std::string()> health = {});
// A clean end: says goodbye (so the others do not count this rank as failed) and stops the thread.
void stop();

}  // namespace recode::liveness
