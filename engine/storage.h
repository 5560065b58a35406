// Storage: one allocation of raw bytes on one device, shared by every tensor view over it.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>

#include "engine/device.h"

namespace dgpipe::engine {

class Storage {
 public:
  using Deleter = std::function<void(void*)>;
  Storage(void* data, size_t nbytes, Device device, Deleter deleter)
      : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)) {}
  ~Storage() {
    if (deleter_ && data_) deleter_(data_);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  // Allocates nbytes on the device: 64-byte aligned host memory on the CPU, the caching allocator on CUDA.
  static std::shared_ptr<Storage> allocate(size_t nbytes, Device device);
  // Wraps memory owned elsewhere (no deleter) — e.g. a memory-mapped file or a caller's buffer.
  static std::shared_ptr<Storage> wrap(void* data, size_t nbytes, Device device) {
    return std::make_shared<Storage>(data, nbytes, device, nullptr);
  }

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_;
  size_t nbytes_;
  Device device_;
  Deleter deleter_;
};

// Hooks the CUDA backend provides (engine/cuda/*.cu). Declared here without CUDA types.
namespace cuda {
void* allocate(size_t nbytes, int device);
void deallocate(void* ptr, int device);
// Copies between any two of host/device memory; synchronous with respect to the current stream's prior work.
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);
}  // namespace cuda

}  // namespace dgpipe::engine
