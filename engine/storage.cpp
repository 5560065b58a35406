#include "engine/storage.h"

#include <cstdlib>

#include "engine/error.h"

namespace dgpipe::engine {

std::shared_ptr<Storage> Storage::allocate(size_t nbytes, Device device) {
  if (device.is_cpu()) {
    size_t rounded = (nbytes + 63) / 64 * 64;
    if (rounded == 0) rounded = 64;
    void* p = std::aligned_alloc(64, rounded);
    DGP_CHECK(p != nullptr, "out of host memory allocating " << nbytes << " bytes");
    return std::make_shared<Storage>(p, nbytes, device, [](void* q) { std::free(q); });
  }
  int index = device.index;
  void* p = cuda::allocate(nbytes, index);  // throws in a build without CUDA (engine/cuda/cuda_stub.cpp)
  return std::make_shared<Storage>(p, nbytes, device, [index](void* q) { cuda::deallocate(q, index); });
}

}  // namespace dgpipe::engine
