// Host storage: 64-byte aligned blocks, and a freed block serves the next block of the same size, so a steady
// loop of allocations (a training step, a codec call) stops growing the heap after its first rounds.
#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/storage.h"

using namespace dgpipe::engine;

TEST(Storage, HostBlocksAreAlignedTo64Bytes) {
  for (size_t n : {1, 3, 64, 65, 1000, 1 << 20}) {
    auto s = Storage::allocate(n, Device::cpu());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(s->data()) % 64, 0u) << n << " bytes";
  }
}

// The pattern of a codec call or a layer: the next output is allocated while the previous one is alive, and
// a smaller block (a packet) is taken in between. Over many rounds the heap must stop growing; with blocks
// that cannot reuse a freed block of their own size (aligned_alloc's extra demand) it grows by one output per
// round.
TEST(Storage, AFreedHostBlockServesTheNextOfTheSameSize) {
  constexpr size_t kOutput = 8 << 20, kPacket = 1 << 20;
  auto input = Storage::allocate(kOutput, Device::cpu());
  std::shared_ptr<Storage> output = Storage::allocate(kOutput, Device::cpu());
  std::shared_ptr<Storage> packet;
  std::vector<size_t> heap;
  for (int round = 0; round < 12; ++round) {
    packet = Storage::allocate(kPacket, Device::cpu());
    output = Storage::allocate(kOutput, Device::cpu());
    heap.push_back(mallinfo2().arena);
  }
  EXPECT_EQ(heap.back(), heap[4]) << "the heap grew from " << heap[4] << " to " << heap.back()
                                  << " bytes over 7 rounds of the same sizes";
}
