// One NCCL communicator of a training run (ncclCommInitRank from rank 0's unique id), destroyed with the object.
// Every failing NCCL call becomes recode::Error(ERR_NCCL) naming the call, this rank and ncclGetErrorString.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "dist/nccl_api.h"

namespace recode::nccl {

// Throws ERR_NCCL for a result other than ncclSuccess.
void check(ncclResult_t rc, const char* call, int rank);

class Comm {
 public:
  // unique_id: the 128 bytes ncclGetUniqueId gave rank 0, the same on every rank. Blocks until all ranks join.
  Comm(const void* unique_id, int rank, int size);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  // Sums each float32 buffer over the ranks in place: one ncclAllReduce per buffer, grouped so NCCL may fuse
  // them, queued on `stream` (nullptr: the default stream the trainer's kernels run on).
  void allreduce_sum_f32(const std::vector<std::pair<float*, size_t>>& bufs, cudaStream_t stream);
  // Each buffer in place from its root rank (`bytes` bytes), one ncclBroadcast each inside one group.
  struct Broadcast {
    void* buf;
    size_t bytes;
    int root;
  };
  void broadcast(const std::vector<Broadcast>& bufs, cudaStream_t stream);
  // One buffer of `count` elements: the sum in place; rank r's `count` elements to block r of `recv` on every rank.
  void allreduce_sum(void* buf, size_t count, ncclDataType_t type, cudaStream_t stream);
  void allgather(const void* send, void* recv, size_t count, ncclDataType_t type, cudaStream_t stream);
  // The error NCCL saw in the background (a peer gone, a network failure), ncclSuccess when none or unknown.
  ncclResult_t async_error() const;
  // Ends the communicator's pending work so that a call blocked in it returns (ncclCommAbort, when the library has it).
  void abort();

 private:
  ncclComm_t comm_ = nullptr;
  int rank_ = 0, size_ = 1;
};

}  // namespace recode::nccl
