// Device-side strided copy with dtype conversion (the CUDA twin of engine/ops/copy.cpp), fill, and the Philox
// random fills (engine/rng.h's generator, so the same sequence as the CPU). Strided operands go through the
// 32-bit indexer of engine/cuda/indexing.h whenever the sizes allow.
#include "engine/cuda/kernel_utils.cuh"
#include "engine/ops/copy_kernels.h"

namespace dgpipe::engine::cuda_kernels {

using namespace cuda;  // the helpers of engine/cuda/kernel_utils.cuh and cuda_context.cuh

namespace {

constexpr int kThreads = 256;

// Same-dtype copy moving whole elements of `Word` size.
template <class Word, class Ix>
__global__ void copy_same_kernel(Word* __restrict__ dst, const Word* __restrict__ src, int64_t n, Ix ix) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets(i, off);
    dst[off[0]] = src[off[1]];
  }
}

template <class D, class S, class Ix>
__global__ void copy_convert_kernel(D* __restrict__ dst, const S* __restrict__ src, int64_t n, Ix ix) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets(i, off);
    dst[off[0]] = from_acc<D>(static_cast<float>(to_acc<S>(src[off[1]])));
  }
}

// Any pair of dtypes through double (integers and bool; exact for values below 2^53).
template <class Ix>
__global__ void copy_generic_kernel(void* dst, DType dt, const void* src, DType st, int64_t n, Ix ix) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets(i, off);
    store_from_double(dst, off[0], dt, load_as_double(src, off[1], st));
  }
}

template <class Ix>
__global__ void fill_kernel(void* dst, DType dt, double value, int64_t n, Ix ix) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[1];
    ix.offsets(i, off);
    store_from_double(dst, off[0], dt, value);
  }
}

// Each thread draws one Philox block and writes the (up to) 4 uniforms or 2 normals it yields.
template <class T>
__global__ void uniform_kernel(T* __restrict__ out, int64_t n, uint64_t seed, uint64_t offset) {
  int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks;
       b += int64_t(gridDim.x) * blockDim.x) {
    uint32_t w[4];
    philox4x32(seed, offset + static_cast<uint64_t>(b), w);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int64_t i = b * 4 + j;
      if (i < n) out[i] = from_acc<T>(static_cast<acc_t<T>>(uniform_from_bits(w[j])));
    }
  }
}

template <class T>
__global__ void normal_kernel(T* __restrict__ out, int64_t n, uint64_t seed, uint64_t offset) {
  int64_t blocks = (n + 1) / 2;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks;
       b += int64_t(gridDim.x) * blockDim.x) {
    uint32_t w[4];
    philox4x32(seed, offset + static_cast<uint64_t>(b), w);
    float r, theta;
    box_muller(w, r, theta);
    if (b * 2 < n) out[b * 2] = from_acc<T>(static_cast<acc_t<T>>(r * cosf(theta)));
    if (b * 2 + 1 < n) out[b * 2 + 1] = from_acc<T>(static_cast<acc_t<T>>(r * sinf(theta)));
  }
}

template <class D, class S, class Ix>
void launch_convert(const Tensor& dst, const Tensor& src, int64_t n, const Ix& ix, cudaStream_t s) {
  copy_convert_kernel<D, S, Ix><<<grid_for(n, kThreads, dst.device().index), kThreads, 0, s>>>(
      static_cast<D*>(dst.storage()->data()), static_cast<const S*>(src.storage()->data()), n, ix);
}

// The float conversions autocast uses on every step get typed kernels; the rest take the generic path.
template <class Ix>
bool try_float_convert(const Tensor& dst, const Tensor& src, int64_t n, const Ix& ix, cudaStream_t s) {
  DType d = dst.dtype(), t = src.dtype();
  if (d == DType::f16 && t == DType::f32) return launch_convert<__half, float>(dst, src, n, ix, s), true;
  if (d == DType::bf16 && t == DType::f32)
    return launch_convert<__nv_bfloat16, float>(dst, src, n, ix, s), true;
  if (d == DType::f32 && t == DType::f16) return launch_convert<float, __half>(dst, src, n, ix, s), true;
  if (d == DType::f32 && t == DType::bf16)
    return launch_convert<float, __nv_bfloat16>(dst, src, n, ix, s), true;
  return false;
}

}  // namespace

void copy_strided(const Tensor& dst, const Tensor& src) {
  DGP_CHECK(dst.shape() == src.shape(),
            "copy: shapes " << shape_str(dst.shape()) << " and " << shape_str(src.shape()) << " differ");
  DGP_CHECK(dst.device() == src.device(),
            "copy: cuda copy between " << src.device().str() << " and " << dst.device().str());
  int64_t n = dst.numel();
  if (n == 0) return;
  TensorDeviceGuard g(dst);
  cudaStream_t s = stream_of(dst);
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    DGP_CUDA_CHECK(
        cudaMemcpyAsync(dst.raw_data(), src.raw_data(), dst.nbytes(), cudaMemcpyDeviceToDevice, s));
    return;
  }
  const Tensor* ts[2] = {&dst, &src};
  unsigned grid = grid_for(n, kThreads, dst.device().index);
  with_indexer(make_indexer<2>(dst.shape(), ts, "copy"), n, [&](const auto& ix) {
    if (dst.dtype() == src.dtype()) {
      void* d = dst.storage()->data();
      const void* sp = src.storage()->data();
      switch (dst.itemsize()) {
        case 1:
          copy_same_kernel<<<grid, kThreads, 0, s>>>((uint8_t*)d, (const uint8_t*)sp, n, ix);
          break;
        case 2:
          copy_same_kernel<<<grid, kThreads, 0, s>>>((uint16_t*)d, (const uint16_t*)sp, n, ix);
          break;
        case 4:
          copy_same_kernel<<<grid, kThreads, 0, s>>>((uint32_t*)d, (const uint32_t*)sp, n, ix);
          break;
        case 8:
          copy_same_kernel<<<grid, kThreads, 0, s>>>((uint64_t*)d, (const uint64_t*)sp, n, ix);
          break;
        default:
          DGP_FAIL("copy: unsupported item size " << dst.itemsize());
      }
    } else if (!try_float_convert(dst, src, n, ix, s)) {
      copy_generic_kernel<<<grid, kThreads, 0, s>>>(dst.storage()->data(), dst.dtype(), src.storage()->data(),
                                                    src.dtype(), n, ix);
    }
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void fill(const Tensor& dst, double value) {
  int64_t n = dst.numel();
  if (n == 0) return;
  TensorDeviceGuard g(dst);
  cudaStream_t s = stream_of(dst);
  if (value == 0.0 && dst.is_contiguous()) {
    DGP_CUDA_CHECK(cudaMemsetAsync(dst.raw_data(), 0, dst.nbytes(), s));
    return;
  }
  const Tensor* ts[1] = {&dst};
  with_indexer(make_indexer<1>(dst.shape(), ts, "fill_"), n, [&](const auto& ix) {
    fill_kernel<<<grid_for(n, kThreads, dst.device().index), kThreads, 0, s>>>(dst.storage()->data(),
                                                                               dst.dtype(), value, n, ix);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void philox_fill(const Tensor& out, PhiloxState state, bool normal) {
  DGP_CHECK(out.is_contiguous(), "philox_fill: output must be contiguous");
  int64_t n = out.numel();
  if (n == 0) return;
  TensorDeviceGuard g(out);
  cudaStream_t s = stream_of(out);
  int64_t blocks = normal ? (n + 1) / 2 : (n + 3) / 4;
  unsigned grid = grid_for(blocks, kThreads, out.device().index);
  DGP_CUDA_DISPATCH_FLOATING(out.dtype(), (normal ? "randn" : "rand"), [&] {
    if (normal)
      normal_kernel<scalar_t>
          <<<grid, kThreads, 0, s>>>(static_cast<scalar_t*>(out.raw_data()), n, state.seed, state.offset);
    else
      uniform_kernel<scalar_t>
          <<<grid, kThreads, 0, s>>>(static_cast<scalar_t*>(out.raw_data()), n, state.seed, state.offset);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

}  // namespace dgpipe::engine::cuda_kernels
