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
#ifdef DGPIPE_WITH_CUDA
  int index = device.index;
  void* p = cuda::allocate(nbytes, index);
  return std::make_shared<Storage>(p, nbytes, device, [index](void* q) { cuda::deallocate(q, index); });
#else
  DGP_FAIL("cannot allocate on " << device.str() << ": dgpipe was built without CUDA (DGPIPE_WITH_CUDA=OFF)");
#endif
}

}  // namespace dgpipe::engine
