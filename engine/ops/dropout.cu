// CUDA twin of dropout (engine/ops/dropout.cpp): the mask is regenerated from Philox (one block per four
// consecutive elements, as engine/rng.h documents), so the CPU and GPU drop exactly the same elements.
#include "engine/cuda/kernel_utils.cuh"
#include "engine/ops/dropout_kernels.h"
#include "engine/rng.h"

namespace dgpipe::engine::cuda_kernels {

using namespace cuda;  // the helpers of engine/cuda/kernel_utils.cuh and cuda_context.cuh

namespace {

template <class T>
__global__ void dropout_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t n, uint64_t seed,
                               uint64_t offset, float threshold, acc_t<T> scale) {
  int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks;
       b += int64_t(gridDim.x) * blockDim.x) {
    uint32_t w[4];
    philox4x32(seed, offset + static_cast<uint64_t>(b), w);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      int64_t i = b * 4 + k;
      if (i < n) {
        bool keep = uniform_from_bits(w[k]) >= threshold;
        out[i] = keep ? from_acc<T>(to_acc(x[i]) * scale) : from_acc<T>(acc_t<T>(0));
      }
    }
  }
}

}  // namespace

void dropout_apply(const Tensor& out, const Tensor& x, PhiloxState state, float keep_threshold,
                   double scale) {
  DGP_CHECK(x.is_contiguous() && out.is_contiguous(), "dropout: cuda kernel expects contiguous tensors");
  int64_t n = x.numel();
  if (n == 0) return;
  TensorDeviceGuard g(out);
  cudaStream_t s = stream_of(out);
  DGP_CUDA_DISPATCH_FLOATING(x.dtype(), "dropout", [&] {
    dropout_kernel<scalar_t><<<grid_for((n + 3) / 4, 256, out.device().index), 256, 0, s>>>(
        static_cast<scalar_t*>(out.raw_data()), static_cast<const scalar_t*>(x.raw_data()), n, state.seed,
        state.offset, keep_threshold, static_cast<acc_t<scalar_t>>(scale));
  });
  DGP_CUDA_CHECK_LAUNCH();
}

}  // namespace dgpipe::engine::cuda_kernels
