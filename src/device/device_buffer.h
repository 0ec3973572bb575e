// Device memory for the CUDA model code (src/model/cuda_backend.cpp, cuda_train_step.cpp): one owned allocation,
// made and freed through the kernel table of its device (a GPU, or the emulation's host memory).
#pragma once

#include <algorithm>
#include <cstddef>
#include <utility>

#include "device/kernels.h"

namespace recode {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const Kernels* k, size_t bytes) : kern_(k), bytes_(bytes) {
    char err[512] = {0};
    void* p = nullptr;
    // never zero bytes: an empty tensor still gets a valid pointer
    check_kernel_status(k->device_alloc(std::max<size_t>(bytes, 16), &p, err, sizeof err), "device_alloc", err);
    ptr_ = p;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    release();
    kern_ = o.kern_;
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
    return *this;
  }
  ~DeviceBuffer() { release(); }
  template <class T = void>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void release() {
    if (ptr_ != nullptr) {
      char err[512];
      kern_->device_free(ptr_, err, sizeof err);  // nothing useful to do with a failure while freeing
    }
    ptr_ = nullptr;
  }
  const Kernels* kern_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace recode

// Runs one kernel call through the table `kern_` in scope and turns its error code into an exception naming the op.
#define RECODE_KERNEL_CALL(op, ...)                                           \
  do {                                                                        \
    char err_[512] = {0};                                                     \
    check_kernel_status(kern_.op(__VA_ARGS__, err_, sizeof err_), #op, err_); \
  } while (0)
