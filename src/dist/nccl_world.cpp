#include "dist/nccl_world.h"

#include "core/error.h"
#include "dist/nccl_loader.h"

namespace recode::nccl {

HostWorld::HostWorld(const void* unique_id, int rank, int size, Device device) {
  const Status& s = status();
  if (!s.loaded) throw Error("ERR_NCCL_UNAVAILABLE", "NCCL is unavailable: " + s.error);
  // the same pairing as the CUDA trainer's communicator: each device needs the library that reads its memory
  if (device == Device::Emulated && !s.host_memory)
    throw Error("ERR_UNSUPPORTED", "device 'emulated' keeps its arrays in host memory, which " + s.library +
                                       " (NCCL: GPU memory) cannot reduce; the emulated device runs data parallel "
                                       "with recode's test NCCL (test/fixtures/nccl_mpi.c)");
  if (device == Device::CUDA && s.host_memory)
    throw Error("ERR_UNSUPPORTED",
                s.library + " is recode's test NCCL, which reduces host memory: device 'cuda' needs NCCL itself");
  if (device != Device::CUDA && device != Device::Emulated)
    throw Error("ERR_UNSUPPORTED", std::string("an NCCL world on device '") + device_name(device) + "'");
  kern_ = Kernels(device);
  comm_ = std::make_unique<Comm>(unique_id, rank, size);
}

void* HostWorld::stage(size_t bytes) {
  if (buf_.bytes() < bytes) buf_ = DeviceBuffer(&kern_, std::max<size_t>(bytes, 4096));
  return buf_.as();
}

void HostWorld::sync() {
  char err[512] = {0};
  check_kernel_status(kern_.device_sync(err, sizeof err), "device_sync", err);
}

static size_t type_bytes(ncclDataType_t t) {
  switch (t) {
    case ncclUint8:
      return 1;
    case ncclFloat32:
      return 4;
    case ncclFloat64:
    case ncclInt64:
      return 8;
    default:
      throw Error("ERR_INVALID_ARG", "NCCL world: unsupported element type " + std::to_string((int)t));
  }
}

void HostWorld::allreduce_sum(void* host, size_t count, ncclDataType_t type) {
  if (count == 0) return;
  const size_t bytes = count * type_bytes(type);
  void* d = stage(bytes);
  char err[512] = {0};
  check_kernel_status(kern_.copy_to_device(d, host, bytes, err, sizeof err), "copy_to_device", err);
  comm_->allreduce_sum(d, count, type, nullptr);
  sync();
  check_kernel_status(kern_.copy_to_host(host, d, bytes, err, sizeof err), "copy_to_host", err);
}

void HostWorld::broadcast(void* host, size_t bytes, int root) {
  if (bytes == 0) return;
  if (root < 0 || root >= size())
    throw Error("ERR_INVALID_ARG", "NCCL world: broadcast root " + std::to_string(root) + " is not a rank");
  void* d = stage(bytes);
  char err[512] = {0};
  check_kernel_status(kern_.copy_to_device(d, host, bytes, err, sizeof err), "copy_to_device", err);
  comm_->broadcast({{d, bytes, root}}, nullptr);
  sync();
  check_kernel_status(kern_.copy_to_host(host, d, bytes, err, sizeof err), "copy_to_host", err);
}

void HostWorld::allgather(const void* send, void* recv, size_t bytes) {
  if (bytes == 0) return;
  const size_t n = (size_t)size();
  // one buffer: this rank's block is copied to its place, NCCL gathers in place (send == recv + rank * bytes)
  char* d = static_cast<char*>(stage(bytes * n));
  char* mine = d + (size_t)rank() * bytes;
  char err[512] = {0};
  check_kernel_status(kern_.copy_to_device(mine, send, bytes, err, sizeof err), "copy_to_device", err);
  comm_->allgather(mine, d, bytes, ncclUint8, nullptr);
  sync();
  check_kernel_status(kern_.copy_to_host(recv, d, bytes * n, err, sizeof err), "copy_to_host", err);
}

void HostWorld::barrier() {
  float one = 1.0f;
  allreduce_sum(&one, 1, ncclFloat32);
}

void HostWorld::abort() { comm_->abort(); }

std::string HostWorld::async_error() const {
  const ncclResult_t e = comm_->async_error();
  if (e == ncclSuccess) return "";
  const char* why = api().GetErrorString(e);
  return std::string("NCCL reports an asynchronous error: ") + (why ? why : "unknown") + " (ncclResult_t " +
         std::to_string((int)e) + "; a peer died or the network failed)";
}

}  // namespace recode::nccl
