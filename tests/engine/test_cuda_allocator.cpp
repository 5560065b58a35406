// The caching allocator (engine/cuda/allocator.cu): reuse without new driver allocations, block splitting,
// stream ordering (no cross-stream reuse; record_stream holds a block back), peak accounting, empty_cache,
// and a clear out-of-memory error; with NCCL communicators live, no device-wide wait and a pool for receive
// buffers. Streams and events are exercised along the way. Skipped without a CUDA device; the CPU-only
// checks at the end run everywhere.
#include <gtest/gtest.h>

#include <chrono>
#include <future>

#include "engine/cuda.h"
#include "engine/ops.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::engine;

namespace {
Tensor dev_bytes(int64_t nbytes) {
  return empty({nbytes}, TensorOptions(DType::u8, Device::cuda(0)));
}
}  // namespace

TEST(CudaAllocator, ReusesFreedBlocksWithoutDriverCalls) {
  DGP_SKIP_WITHOUT_CUDA();
  void* first = nullptr;
  { first = dev_bytes(3 << 20).raw_data(); }
  uint64_t mallocs = cuda::memory_stats().num_device_mallocs;
  for (int i = 0; i < 10; ++i) {
    Tensor t = dev_bytes(3 << 20);
    EXPECT_EQ(t.raw_data(), first) << "a freed block of the same size must be reused";
  }
  EXPECT_EQ(cuda::memory_stats().num_device_mallocs, mallocs);
}

TEST(CudaAllocator, SplitsSegmentsForSmallRequests) {
  DGP_SKIP_WITHOUT_CUDA();
  cuda::empty_cache();
  uint64_t mallocs = cuda::memory_stats().num_device_mallocs;
  Tensor a = dev_bytes(1000), b = dev_bytes(1000), c = dev_bytes(70000);
  // Three small requests fit one 2 MiB segment: one driver allocation, blocks side by side (rounded to 512
  // B).
  EXPECT_EQ(cuda::memory_stats().num_device_mallocs, mallocs + 1);
  EXPECT_EQ(static_cast<char*>(b.raw_data()) - static_cast<char*>(a.raw_data()), 1024);
}

TEST(CudaAllocator, PeakAndAllocatedAccounting) {
  DGP_SKIP_WITHOUT_CUDA();
  cuda::reset_peak_stats();
  size_t base = cuda::memory_stats().allocated;
  {
    Tensor a = dev_bytes(4 << 20);
    Tensor b = dev_bytes(8 << 20);
    cuda::MemoryStats s = cuda::memory_stats();
    EXPECT_GE(s.allocated, base + (12u << 20));
    EXPECT_GE(s.reserved, s.allocated);
    EXPECT_GE(s.peak_allocated, s.allocated);
  }
  cuda::MemoryStats after = cuda::memory_stats();
  EXPECT_EQ(after.allocated, base);
  EXPECT_GE(after.peak_allocated, base + (12u << 20)) << "the peak survives the frees";
  cuda::reset_peak_stats();
  EXPECT_EQ(cuda::memory_stats().peak_allocated, base);
}

TEST(CudaAllocator, BlocksAreStreamOrdered) {
  DGP_SKIP_WITHOUT_CUDA();
  cuda::Stream s1 = cuda::Stream::create(), s2 = cuda::Stream::create();
  void* p1 = nullptr;
  {
    cuda::StreamGuard g(s1);
    p1 = dev_bytes(5 << 20).raw_data();
  }
  {
    // Another stream must not get s1's block: s1 may still be using it.
    cuda::StreamGuard g(s2);
    Tensor t = dev_bytes(5 << 20);
    EXPECT_NE(t.raw_data(), p1);
  }
  {
    cuda::StreamGuard g(s1);
    EXPECT_EQ(dev_bytes(5 << 20).raw_data(), p1) << "the same stream reuses its block at once";
  }
  // record_stream: a block used on s2 comes back to s1 only after s2 has passed the point of the free.
  void* p2 = nullptr;
  {
    cuda::StreamGuard g(s1);
    Tensor t = dev_bytes(6 << 20);
    p2 = t.raw_data();
    cuda::record_stream(t, s2);
  }
  s2.synchronize();
  {
    cuda::StreamGuard g(s1);
    EXPECT_EQ(dev_bytes(6 << 20).raw_data(), p2);
  }
}

TEST(CudaAllocator, EmptyCacheReturnsMemory) {
  DGP_SKIP_WITHOUT_CUDA();
  { Tensor t = dev_bytes(64 << 20); }
  EXPECT_GE(cuda::memory_stats().reserved, 64u << 20);
  cuda::empty_cache();
  cuda::MemoryStats s = cuda::memory_stats();
  EXPECT_LT(s.reserved, (64u << 20) + s.allocated);
  EXPECT_GT(s.num_device_frees, 0u);
}

TEST(CudaAllocator, OutOfMemoryIsAClearError) {
  DGP_SKIP_WITHOUT_CUDA();
  try {
    dev_bytes(int64_t(1) << 50);  // 1 PiB
    FAIL() << "expected an out-of-memory error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of memory"), std::string::npos) << e.what();
  }
}

// With a communicator live, a transfer kernel may wait for a peer that waits for this process: empty_cache
// and the out-of-memory path must return without waiting for the device. A host function holds a stream busy
// (as a transfer waiting for its peer would) until the test lets it go.
TEST(CudaAllocator, WithCommunicatorsLiveNothingWaitsForTheDevice) {
  DGP_SKIP_WITHOUT_CUDA();
  { Tensor cached = dev_bytes(8 << 20); }
  cuda::Stream busy = cuda::Stream::create();
  std::promise<void> release;
  std::shared_future<void> go = release.get_future().share();
  busy.launch_host_func([go] { go.wait(); });
  cuda::CommunicatorScope communicator(0);
  EXPECT_TRUE(cuda::communicators_live());
  const uint64_t frees = cuda::memory_stats().num_device_frees;
  auto attempt = std::async(std::launch::async, [] {
    cuda::empty_cache();
    return dgpipe::testing::error_of([] { dev_bytes(int64_t(1) << 50); });
  });
  const bool returned = attempt.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  release.set_value();  // in any case, so that the stream (and a stuck attempt) can finish
  busy.synchronize();
  ASSERT_TRUE(returned) << "empty_cache or the out-of-memory path waited for the device";
  const std::string error = attempt.get();
  EXPECT_TRUE(dgpipe::testing::contains(error, "NCCL communicators are live")) << error;
  EXPECT_EQ(cuda::memory_stats().num_device_frees, frees)
      << "nothing may go back to the driver (cudaFree waits)";
}

// Receive buffers come from a pool of their own: compute allocations do not take its blocks, and it is never
// returned to the driver, so a steady stream of receives never meets the out-of-memory path.
TEST(CudaAllocator, ReceiveBuffersHaveTheirOwnPool) {
  DGP_SKIP_WITHOUT_CUDA();
  void* received = nullptr;
  {
    cuda::ReceivePoolGuard pool;
    received = dev_bytes(3 << 20).raw_data();
  }
  {
    Tensor compute = dev_bytes(3 << 20);
    EXPECT_NE(compute.raw_data(), received) << "a compute allocation took a receive buffer";
  }
  cuda::empty_cache();
  {
    cuda::ReceivePoolGuard pool;
    EXPECT_EQ(dev_bytes(3 << 20).raw_data(), received) << "the receive pool is kept and reused";
  }
}

TEST(CudaStreams, EventsOrderWorkAcrossStreams) {
  DGP_SKIP_WITHOUT_CUDA();
  cuda::Stream producer = cuda::Stream::create(), consumer = cuda::Stream::create();
  Tensor x, y;
  {
    cuda::StreamGuard g(producer);
    x = full({1 << 20}, 3.0, TensorOptions(DType::f32, Device::cuda(0)));
  }
  cuda::Event ready;
  ready.record(producer);
  ready.wait(consumer);
  {
    cuda::StreamGuard g(consumer);
    y = mul(x, 2.0);
    cuda::record_stream(x, consumer);
  }
  consumer.synchronize();
  EXPECT_EQ(sum(y).item(), 6.0 * (1 << 20));
  cuda::Event start(true), end(true);
  start.record(consumer);
  end.record(consumer);
  end.synchronize();
  EXPECT_GE(start.elapsed_ms(end), 0.0f);
  EXPECT_TRUE(consumer.query());
}

TEST(CudaStreams, CurrentStreamIsPerThreadAndRestored) {
  DGP_SKIP_WITHOUT_CUDA();
  cuda::Stream before = cuda::current_stream();
  cuda::Stream s = cuda::Stream::create();
  {
    cuda::StreamGuard g(s);
    EXPECT_EQ(cuda::current_stream(), s);
  }
  EXPECT_EQ(cuda::current_stream(), before);
}

// Runs everywhere: without a device the API answers queries and refuses the rest with a message.
TEST(CudaRuntime, QueriesWorkWithoutADevice) {
  int n = cuda::device_count();
  EXPECT_EQ(n, cuda_device_count());
  EXPECT_GE(n, 0);
  if (n == 0) {
    EXPECT_EQ(cuda::memory_stats().allocated, 0u);
    EXPECT_FALSE(cuda::is_capturing());
    EXPECT_THROW(empty({4}, TensorOptions(DType::f32, Device::cuda(0))), Error);
  }
}
