// The CUDA runtime services (engine/cuda/runtime.cu, engine/device.cpp): what a machine without a usable
// device reports (and that it tells "no driver" from "a driver that cannot be used"), bad indices that
// kernels report at the next synchronisation without poisoning the context, the TF32 defaults, and one cuBLAS
// workspace per stream. The checks of the host-side logic run everywhere; the rest skip without a device.
#include <gtest/gtest.h>

#include "engine/cuda.h"
#include "engine/ops.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::engine;
using dgpipe::testing::contains;
using dgpipe::testing::error_of;

TEST(CudaDeviceStatus, IsConsistentWithTheDeviceCount) {
  const cuda::DeviceStatus st = cuda::device_status();
  EXPECT_EQ(st.count, cuda_device_count());
  if (st.count == 0) {
    EXPECT_FALSE(st.reason.empty());
  }
  // A machine whose NVIDIA driver is installed but cannot run this build (e.g. older than its CUDA runtime)
  // must not pass for a CPU-only one: every CUDA test would skip.
  EXPECT_FALSE(st.error) << cuda::describe(st);
}

TEST(CudaDeviceStatus, DescribesEachCase) {
  cuda::DeviceStatus ok;
  ok.count = 1;
  ok.driver_version = 13000;
  ok.runtime_version = 13000;
  EXPECT_EQ(cuda::describe(ok), "1 CUDA device(s); driver supports CUDA 13.0, runtime 13.0");
  cuda::DeviceStatus none;
  none.reason = "no NVIDIA driver on this machine";
  EXPECT_EQ(cuda::describe(none), "no CUDA device: no NVIDIA driver on this machine");
  cuda::DeviceStatus old_driver;
  old_driver.error = true;
  old_driver.reason =
      "cudaErrorInsufficientDriver (CUDA driver version is insufficient) from cudaGetDeviceCount";
  old_driver.driver_version = 12040;
  old_driver.runtime_version = 13000;
  const std::string text = cuda::describe(old_driver);
  EXPECT_TRUE(contains(text, "CUDA ERROR: cudaErrorInsufficientDriver")) << text;
  EXPECT_TRUE(contains(text, "the driver supports CUDA 12.4, dgpipe's runtime is 13.0")) << text;
  EXPECT_TRUE(contains(text, "older than the runtime")) << text;
}

TEST(CudaDeviceErrors, NameTheOpTheIndexAndTheRange) {
  EXPECT_EQ(cuda::describe_device_error(cuda::DeviceErrorCode::embedding_index, 9, 5),
            "embedding: index 9 is out of range for a table of 5 rows");
  EXPECT_EQ(cuda::describe_device_error(cuda::DeviceErrorCode::index_select_index, -1, 4),
            "index_select: index -1 is out of range for a dimension of size 4");
  EXPECT_TRUE(
      contains(cuda::describe_device_error(cuda::DeviceErrorCode::index_add_index, 7, 3), "index_add"));
  EXPECT_NO_THROW(cuda::check_device_errors());  // nothing reported
}

TEST(CudaMathModes, Tf32IsOnForConvolutionsAndOffForGemmByDefault) {
  EXPECT_TRUE(cuda::allow_tf32_conv()) << "as in PyTorch (DGPIPE_TF32=0 turns it off for a process)";
  EXPECT_FALSE(cuda::allow_tf32_matmul());
  {
    cuda::MathModeGuard exact(false, false);
    EXPECT_FALSE(cuda::allow_tf32_conv());
    EXPECT_FALSE(cuda::allow_tf32_matmul());
  }
  EXPECT_TRUE(cuda::allow_tf32_conv());
  EXPECT_FALSE(cuda::allow_tf32_matmul());
}

namespace {
Tensor on_cuda(const std::vector<int64_t>& v) {
  return from_vector(v, {static_cast<int64_t>(v.size())}).to(Device::cuda(0));
}
}  // namespace

// A bad index neither traps (which would poison the context for every later test in this process) nor
// touches memory: it surfaces as an Error at the next synchronisation, once, and the device keeps working.
TEST(CudaDeviceErrors, BadEmbeddingIndexIsReportedAtTheNextSync) {
  DGP_SKIP_WITHOUT_CUDA();
  const Tensor weight = ones({5, 4}, TensorOptions(DType::f32, Device::cuda(0)));
  Tensor out = embedding(weight, on_cuda({2, 9, 1}), -1);
  const std::string error = error_of([&] { out.to(Device::cpu()); });
  EXPECT_TRUE(contains(error, "embedding: index 9 is out of range for a table of 5 rows")) << error;
  // Reported once; the context is usable afterwards.
  EXPECT_EQ(error_of([&] { out.to(Device::cpu()); }), "(no error)");
  EXPECT_EQ(sum(embedding(weight, on_cuda({0, 4}), -1)).item(), 8.0);
}

TEST(CudaDeviceErrors, BadSelectAndAddIndicesAreReported) {
  DGP_SKIP_WITHOUT_CUDA();
  const Tensor x = ones({3, 4}, TensorOptions(DType::f32, Device::cuda(0)));
  Tensor picked = index_select(x, 1, on_cuda({0, 4}));
  std::string error = error_of([&] { cuda::current_stream().synchronize(); });
  EXPECT_TRUE(contains(error, "index_select: index 4 is out of range for a dimension of size 4")) << error;
  Tensor leaf = x.detach();
  leaf.requires_grad_(true);
  Tensor y = index_select(leaf, 0, on_cuda({1, 3}));
  error = error_of([&] {
    sum(y).backward();
    cuda::device_synchronize();
  });
  EXPECT_TRUE(contains(error, "index 3 is out of range")) << error;
  EXPECT_EQ(sum(x).item(), 12.0);
}

// One cuBLAS workspace per (handle, stream): the first GEMM on a new stream takes a workspace of its own
// from the allocator (32 MiB), the next one on that stream reuses it, and GEMMs on two streams at once
// give the CPU's results.
TEST(CudaBlasWorkspace, OnePerStream) {
  DGP_SKIP_WITHOUT_CUDA();
  Generator g(4);
  const TensorOptions o(DType::f32, Device::cuda(0));
  const Tensor a = randn({256, 256}, o, &g), b = randn({256, 256}, o, &g);
  Tensor warm = matmul(a, b);  // the current stream's workspace exists
  cuda::Stream s1 = cuda::Stream::create(), s2 = cuda::Stream::create();
  cuda::device_synchronize();
  const size_t before = cuda::memory_stats().allocated;
  Tensor r1, r2;
  {
    cuda::StreamGuard sg(s1);
    r1 = matmul(a, b);
  }
  const size_t after_first = cuda::memory_stats().allocated;
  EXPECT_GE(after_first, before + (32u << 20)) << "a new stream gets its own workspace";
  {
    cuda::StreamGuard sg(s1);
    r1 = matmul(a, b);
  }
  EXPECT_EQ(cuda::memory_stats().allocated, after_first) << "the same stream reuses it";
  for (int i = 0; i < 20; ++i) {
    {
      cuda::StreamGuard sg(s1);
      r1 = matmul(a, b);
    }
    {
      cuda::StreamGuard sg(s2);
      r2 = matmul(a, b);
    }
  }
  s1.synchronize();
  s2.synchronize();
  const Tensor expect = matmul(a.to(Device::cpu()), b.to(Device::cpu()));
  EXPECT_LE(dgpipe::testing::max_rel_diff(r1.to(Device::cpu()), expect), 1e-4);
  EXPECT_LE(dgpipe::testing::max_rel_diff(r2.to(Device::cpu()), expect), 1e-4);
}

TEST(CudaRuntime, ReportsDevicesAndLibraries) {
  DGP_SKIP_WITHOUT_CUDA();
  const std::string report = cuda::runtime_report();
  EXPECT_TRUE(contains(report, "cuda:0 ")) << report;
  EXPECT_TRUE(contains(report, "cuBLAS")) << report;
  EXPECT_TRUE(contains(report, "cuDNN")) << report;
}
