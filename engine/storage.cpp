#include "engine/storage.h"

#include <malloc.h>

#include <cstdint>
#include <cstdlib>

#include "engine/error.h"

namespace dgpipe::engine {

namespace {

// glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh mmap and unmaps it on free,
// and returns the top of its heap to the system once 128 KiB are free there. A training step allocates and
// frees the same large activations and gradients every step (MobileNetV2 at batch 64: 824 MB per step), so
// each one was faulted in page by page again. Serving everything from the heap and never trimming it keeps
// those pages: after the first step the process holds its peak, as a caching allocator would, and steps fault
// nothing. Chosen over a caching allocator of our own because it is two settings and glibc's bins already
// reuse blocks by size; the cost is the same (the peak stays resident). Set once, at the first host
// allocation.
bool keep_host_heap() {
  mallopt(M_MMAP_MAX, 0);         // no block is mmapped (glibc still maps new heaps for its thread arenas)
  mallopt(M_TRIM_THRESHOLD, -1);  // never return freed heap pages to the system
  return true;
}

}  // namespace

std::shared_ptr<Storage> Storage::allocate(size_t nbytes, Device device) {
  if (device.is_cpu()) {
    static const bool heap_kept = keep_host_heap();
    (void)heap_kept;
    // 64-byte alignment by hand over a plain malloc of the size plus 64, not aligned_alloc: glibc's memalign
    // asks its bins for the size plus the alignment plus a header, so the block a freed tensor leaves is
    // never big enough for the next tensor of the same size, and the heap grows into fresh pages (which fault
    // in) until holes happen to merge. A plain malloc of the same size reuses the freed block exactly.
    constexpr size_t kAlign = 64;
    size_t padded = (nbytes + kAlign - 1) / kAlign * kAlign + kAlign;
    void* block = std::malloc(padded);
    DGP_CHECK(block != nullptr, "out of host memory allocating " << nbytes << " bytes");
    auto address = reinterpret_cast<uintptr_t>(block);
    void* p = reinterpret_cast<void*>((address + kAlign) & ~uintptr_t(kAlign - 1));
    return std::make_shared<Storage>(p, nbytes, device, [block](void*) { std::free(block); });
  }
  int index = device.index;
  void* p = cuda::allocate(nbytes, index);  // throws in a build without CUDA (engine/cuda/cuda_stub.cpp)
  return std::make_shared<Storage>(p, nbytes, device, [index](void* q) { cuda::deallocate(q, index); });
}

}  // namespace dgpipe::engine
