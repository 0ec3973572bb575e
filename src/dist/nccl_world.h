// The small collectives of a world launched torchrun / Slurm style without MPI (lib/dist World): host arrays staged
// through one device buffer and reduced with NCCL on the training device (a GPU, or device 'emulated' with recode's
// host-memory test NCCL). One per process, like MPI's world; every call blocks until the data is back on the host.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "device/device_buffer.h"
#include "device/kernels.h"
#include "dist/nccl_comm.h"

namespace recode::nccl {

class HostWorld {
 public:
  // unique_id: rank 0's 128 bytes, the same on every rank (handed over the rendezvous). Blocks until all ranks join.
  HostWorld(const void* unique_id, int rank, int size, Device device);
  int rank() const { return comm_->rank(); }
  int size() const { return comm_->size(); }
  void allreduce_sum(void* host, size_t count, ncclDataType_t type);  // in place
  void broadcast(void* host, size_t bytes, int root);                 // in place
  // Every rank's `bytes` bytes, rank r's at recv + r * bytes.
  void allgather(const void* send, void* recv, size_t bytes);
  void barrier();  // a one-element all-reduce: returns once every rank has reached it
  void abort();    // ncclCommAbort (when the library has it): a call blocked in the communicator returns
  // NCCL's asynchronous error as a sentence ("" when none), safe from another thread (the liveness watcher).
  std::string async_error() const;

 private:
  void* stage(size_t bytes);
  void sync();
  Kernels kern_;
  DeviceBuffer buf_;
  std::unique_ptr<Comm> comm_;
};

}  // namespace recode::nccl
