// Internal CUDA helpers shared by every .cu file: checked calls with file:line, the current stream as a
// cudaStream_t, per-thread cuBLAS / cuBLASLt / cuDNN handles, launch geometry and scratch memory from the
// caching allocator. Include only from .cu files (it pulls in the CUDA headers).
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdint>
#include <memory>

#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/tensor.h"

namespace dgpipe::engine::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t st, const char* expr, const char* file, int line);
[[noreturn]] void throw_cudnn_error(cudnnStatus_t st, const char* expr, const char* file, int line);

}  // namespace dgpipe::engine::cuda

#define DGP_CUDA_CHECK(expr)                                                         \
  do {                                                                               \
    cudaError_t dgp_err_ = (expr);                                                   \
    if (dgp_err_ != cudaSuccess)                                                     \
      ::dgpipe::engine::cuda::throw_cuda_error(dgp_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define DGP_CUBLAS_CHECK(expr)                                                        \
  do {                                                                                \
    cublasStatus_t dgp_st_ = (expr);                                                  \
    if (dgp_st_ != CUBLAS_STATUS_SUCCESS)                                             \
      ::dgpipe::engine::cuda::throw_cublas_error(dgp_st_, #expr, __FILE__, __LINE__); \
  } while (0)

#define DGP_CUDNN_CHECK(expr)                                                        \
  do {                                                                               \
    cudnnStatus_t dgp_st_ = (expr);                                                  \
    if (dgp_st_ != CUDNN_STATUS_SUCCESS)                                             \
      ::dgpipe::engine::cuda::throw_cudnn_error(dgp_st_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: reports launch-configuration errors at the launch site (asynchronous faults surface
// at the next synchronising call, which is checked too).
#define DGP_CUDA_CHECK_LAUNCH() DGP_CUDA_CHECK(cudaGetLastError())

namespace dgpipe::engine::cuda {

// The current stream of `device` on this thread, as the runtime type.
inline cudaStream_t stream_of(int device) {
  return static_cast<cudaStream_t>(current_stream(device).raw());
}
inline cudaStream_t stream_of(const Tensor& t) {
  return stream_of(t.device().index);
}

// Makes t's device current for the calling scope (kernels launch on the current device).
class TensorDeviceGuard {
 public:
  explicit TensorDeviceGuard(const Tensor& t);
  ~TensorDeviceGuard();

 private:
  int previous_ = -1;
};

// Handles: one per (thread, device), created on first use, bound to the current stream on every call.
cublasHandle_t cublas_handle(int device);
cublasLtHandle_t cublaslt_handle(int device);
cudnnHandle_t cudnn_handle(int device);

// Scratch device memory from the caching allocator (freed stream-ordered when the pointer goes out of scope).
struct ScratchDeleter {
  int device;
  void operator()(void* p) const;
};
using Scratch = std::unique_ptr<void, ScratchDeleter>;
Scratch scratch(size_t nbytes, int device);

// Private-pool hooks used by Graph (allocator.cu): while `stream` is captured, its allocations come from the
// graph's pool; after release (the graph is gone and its replays have finished) the pool's blocks and the
// frees deferred during capture return to general use.
uint64_t allocator_begin_graph_pool(int device, cudaStream_t stream);
void allocator_end_graph_capture(int device, cudaStream_t stream);
void allocator_release_graph_pool(int device, uint64_t pool);

// The slot kernels report bad input through (see check_device_errors in engine/cuda.h): mapped pinned host
// memory, so the host reads it after a synchronisation without a copy. report_device_error (kernel_utils.cuh)
// writes it.
struct DeviceErrorSlot {
  int code = 0;  // DeviceErrorCode; the first reporter wins
  int64_t index = 0;
  int64_t bound = 0;
};
DeviceErrorSlot* device_error_slot(int device);

// Number of streaming multiprocessors of the device (cached).
int sm_count(int device);

// Grid size for a grid-stride loop over n items with `threads` per block: enough blocks to fill the GPU
// (several waves' worth of resident blocks) without launching one block per element for huge n.
inline unsigned grid_for(int64_t n, int threads, int device) {
  int64_t blocks = (n + threads - 1) / threads;
  int64_t cap = static_cast<int64_t>(sm_count(device)) * 32;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks);
}

}  // namespace dgpipe::engine::cuda
