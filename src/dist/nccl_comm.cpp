#include "dist/nccl_comm.h"

#include <cstring>

#include "core/error.h"
#include "dist/nccl_loader.h"

namespace recode::nccl {

void check(ncclResult_t rc, const char* call, int rank) {
  if (rc == ncclSuccess) return;
  const char* why = api().GetErrorString(rc);
  throw Error("ERR_NCCL", std::string(call) + " failed on rank " + std::to_string(rank) + ": " +
                              (why ? why : "unknown NCCL error") + " (ncclResult_t " + std::to_string((int)rc) + ")");
}

Comm::Comm(const void* unique_id, int rank, int size) : rank_(rank), size_(size) {
  if (size < 1 || rank < 0 || rank >= size)
    throw Error("ERR_INVALID_ARG",
                "NCCL communicator: rank " + std::to_string(rank) + " of " + std::to_string(size) + " is out of range");
  const Api& a = api();
  ncclUniqueId id;
  std::memcpy(id.internal, unique_id, sizeof id.internal);
  check(a.CommInitRank(&comm_, size, id, rank), "ncclCommInitRank", rank);
}

Comm::~Comm() {
  // a failure here has no one to report to: the communicator is gone either way
  if (comm_) (void)api().CommDestroy(comm_);
}

void Comm::allreduce_sum(void* buf, size_t count, ncclDataType_t type, cudaStream_t stream) {
  check(api().AllReduce(buf, buf, count, type, ncclSum, comm_, stream), "ncclAllReduce", rank_);
}

void Comm::allgather(const void* send, void* recv, size_t count, ncclDataType_t type, cudaStream_t stream) {
  check(api().AllGather(send, recv, count, type, comm_, stream), "ncclAllGather", rank_);
}

ncclResult_t Comm::async_error() const {
  const Api& a = api();
  ncclResult_t e = ncclSuccess;
  if (!comm_ || !a.CommGetAsyncError || a.CommGetAsyncError(comm_, &e) != ncclSuccess) return ncclSuccess;
  return e == ncclInProgress ? ncclSuccess : e;
}

void Comm::abort() {
  const Api& a = api();
  if (comm_ && a.CommAbort) {
    (void)a.CommAbort(comm_);
    comm_ = nullptr;
  }
}

void Comm::allreduce_sum_f32(const std::vector<std::pair<float*, size_t>>& bufs, cudaStream_t stream) {
  const Api& a = api();
  check(a.GroupStart(), "ncclGroupStart", rank_);
  ncclResult_t first = ncclSuccess;
  for (const auto& [p, n] : bufs) {
    if (n == 0) continue;
    first = a.AllReduce(p, p, n, ncclFloat32, ncclSum, comm_, stream);
    if (first != ncclSuccess) break;
  }
  // the group is closed whatever happened inside it (NCCL requires every GroupStart to be ended)
  const ncclResult_t end = a.GroupEnd();
  check(first, "ncclAllReduce", rank_);
  check(end, "ncclGroupEnd", rank_);
}

void Comm::broadcast(const std::vector<Broadcast>& bufs, cudaStream_t stream) {
  const Api& a = api();
  check(a.GroupStart(), "ncclGroupStart", rank_);
  ncclResult_t first = ncclSuccess;
  for (const Broadcast& b : bufs) {
    if (b.bytes == 0) continue;
    first = a.Broadcast(b.buf, b.buf, b.bytes, ncclUint8, b.root, comm_, stream);
    if (first != ncclSuccess) break;
  }
  const ncclResult_t end = a.GroupEnd();
  check(first, "ncclBroadcast", rank_);
  check(end, "ncclGroupEnd", rank_);
}

}  // namespace recode::nccl
