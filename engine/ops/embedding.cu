// CUDA twins of the embedding lookup and its scatter-add backward (engine/ops/embedding.cpp).
// Forward copies whole rows with 16-byte words when the row size allows; backward accumulates with atomics
// (float/double/half atomics are native on sm_70+/sm_80+). The caller cannot validate the indices without a
// host sync, so an out-of-range index is reported through the device error slot (the host throws at its next
// synchronisation, cuda::check_device_errors) and its row is written as zeros (forward) or dropped
// (backward); the kernel never reads or writes outside the table, and the CUDA context stays usable.
#include "engine/cuda/kernel_utils.cuh"
#include "engine/ops/embedding_kernels.h"

namespace dgpipe::engine::cuda_kernels {

using namespace cuda;  // the helpers of engine/cuda/kernel_utils.cuh and cuda_context.cuh

namespace {

template <class W>
__global__ void embedding_gather(W* __restrict__ out, const W* __restrict__ weight,
                                 const int64_t* __restrict__ idx, int64_t n, int64_t vocab, int64_t row_words,
                                 DeviceErrorSlot* errors) {
  int64_t total = n * row_words;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t j = i / row_words, k = i % row_words;
    int64_t r = idx[j];
    if (r < 0 || r >= vocab) {
      if (k == 0) report_device_error(errors, DeviceErrorCode::embedding_index, r, vocab);
      out[i] = W{};
      continue;
    }
    out[i] = weight[r * row_words + k];
  }
}

template <class T>
__global__ void embedding_scatter_add(T* __restrict__ grad_weight, const T* __restrict__ grad_out,
                                      const int64_t* __restrict__ idx, int64_t n, int64_t vocab,
                                      int64_t width, int64_t padding_idx, DeviceErrorSlot* errors) {
  int64_t total = n * width;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t j = i / width, k = i % width;
    int64_t r = idx[j];
    if (r == padding_idx) continue;
    if (r < 0 || r >= vocab) {
      if (k == 0) report_device_error(errors, DeviceErrorCode::embedding_index, r, vocab);
      continue;
    }
    atomicAdd(grad_weight + r * width + k, grad_out[i]);
  }
}

}  // namespace

void embedding_forward(const Tensor& out, const Tensor& weight, const Tensor& indices) {
  DGP_CHECK(indices.dtype() == DType::i64 && indices.is_contiguous() && weight.is_contiguous() &&
                out.is_contiguous(),
            "embedding: cuda kernel expects contiguous tensors and i64 indices");
  int64_t n = indices.numel(), vocab = weight.size(0);
  size_t row_bytes = static_cast<size_t>(weight.numel() / std::max<int64_t>(vocab, 1)) * weight.itemsize();
  if (n == 0 || row_bytes == 0) return;
  TensorDeviceGuard g(out);
  cudaStream_t s = stream_of(out);
  const int64_t* ip = static_cast<const int64_t*>(indices.raw_data());
  void* o = out.raw_data();
  const void* w = weight.raw_data();
  auto aligned = [&](size_t a) {
    return row_bytes % a == 0 && reinterpret_cast<uintptr_t>(o) % a == 0 &&
           reinterpret_cast<uintptr_t>(w) % a == 0;
  };
  int dev = out.device().index;
  DeviceErrorSlot* errors = device_error_slot(dev);
  if (aligned(16)) {
    int64_t words = static_cast<int64_t>(row_bytes / 16);
    embedding_gather<uint4><<<grid_for(n * words, 256, dev), 256, 0, s>>>((uint4*)o, (const uint4*)w, ip, n,
                                                                          vocab, words, errors);
  } else if (aligned(4)) {
    int64_t words = static_cast<int64_t>(row_bytes / 4);
    embedding_gather<uint32_t><<<grid_for(n * words, 256, dev), 256, 0, s>>>((uint32_t*)o, (const uint32_t*)w,
                                                                             ip, n, vocab, words, errors);
  } else {
    int64_t words = static_cast<int64_t>(row_bytes / 2);
    embedding_gather<uint16_t><<<grid_for(n * words, 256, dev), 256, 0, s>>>((uint16_t*)o, (const uint16_t*)w,
                                                                             ip, n, vocab, words, errors);
  }
  DGP_CUDA_CHECK_LAUNCH();
}

void embedding_backward(const Tensor& grad_weight, const Tensor& grad_out, const Tensor& indices,
                        int64_t padding_idx) {
  DGP_CHECK(indices.dtype() == DType::i64 && indices.is_contiguous() && grad_weight.is_contiguous() &&
                grad_out.is_contiguous(),
            "embedding backward: cuda kernel expects contiguous tensors and i64 indices");
  DGP_CHECK(grad_weight.dtype() == grad_out.dtype(), "embedding backward: dtype mismatch");
  int64_t n = indices.numel(), vocab = grad_weight.size(0);
  int64_t width = grad_weight.numel() / std::max<int64_t>(vocab, 1);
  if (n == 0 || width == 0) return;
  TensorDeviceGuard g(grad_weight);
  cudaStream_t s = stream_of(grad_weight);
  DGP_CUDA_DISPATCH_FLOATING(grad_weight.dtype(), "embedding backward", [&] {
    embedding_scatter_add<scalar_t><<<grid_for(n * width, 256, grad_weight.device().index), 256, 0, s>>>(
        static_cast<scalar_t*>(grad_weight.raw_data()), static_cast<const scalar_t*>(grad_out.raw_data()),
        static_cast<const int64_t*>(indices.raw_data()), n, vocab, width, padding_idx,
        device_error_slot(grad_weight.device().index));
  });
  DGP_CUDA_CHECK_LAUNCH();
}

}  // namespace dgpipe::engine::cuda_kernels
