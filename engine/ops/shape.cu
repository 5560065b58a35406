// CUDA twins of index_select and its backward scatter-add (engine/ops/shape.cpp). src/out are contiguous and
// seen as [outer, size_along_dim, inner]. An index outside [0, size) cannot be checked on the host without a
// sync: the kernels report it through the device error slot (the host throws at its next synchronisation,
// cuda::check_device_errors) and write zeros for it (select) or drop it (add) instead of touching memory
// they do not own.
#include "engine/cuda/kernel_utils.cuh"
#include "engine/ops/shape_kernels.h"

namespace dgpipe::engine::cuda_kernels {

using namespace cuda;  // the helpers of engine/cuda/kernel_utils.cuh and cuda_context.cuh

namespace {

constexpr int kThreads = 256;

template <class W>
__global__ void index_select_kernel(W* __restrict__ out, const W* __restrict__ src,
                                    const int64_t* __restrict__ index, int64_t outer, int64_t nidx,
                                    int64_t src_dim, int64_t inner, DeviceErrorSlot* errors) {
  int64_t n = outer * nidx * inner;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t k = i % inner;
    int64_t j = (i / inner) % nidx;
    int64_t o = i / (inner * nidx);
    int64_t s = index[j];
    if (s < 0 || s >= src_dim) {
      if (k == 0 && o == 0) report_device_error(errors, DeviceErrorCode::index_select_index, s, src_dim);
      out[i] = W{};
      continue;
    }
    out[i] = src[(o * src_dim + s) * inner + k];
  }
}

template <class T>
__device__ __forceinline__ void atomic_add(T* p, T v) {
  atomicAdd(p, v);
}

template <class T>
__global__ void index_add_kernel(T* __restrict__ dst, const T* __restrict__ src,
                                 const int64_t* __restrict__ index, int64_t outer, int64_t nidx,
                                 int64_t dst_dim, int64_t inner, DeviceErrorSlot* errors) {
  int64_t n = outer * nidx * inner;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t k = i % inner;
    int64_t j = (i / inner) % nidx;
    int64_t o = i / (inner * nidx);
    int64_t d = index[j];
    if (d < 0 || d >= dst_dim) {
      if (k == 0 && o == 0) report_device_error(errors, DeviceErrorCode::index_add_index, d, dst_dim);
      continue;
    }
    atomic_add(dst + (o * dst_dim + d) * inner + k, src[i]);
  }
}

void split_dims(const Shape& shape, int64_t dim, int64_t& outer, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= shape[d];
  for (size_t d = dim + 1; d < shape.size(); ++d) inner *= shape[d];
}

}  // namespace

void index_select(const Tensor& out, const Tensor& src, int64_t dim, const Tensor& index) {
  DGP_CHECK(
      src.is_contiguous() && out.is_contiguous() && index.is_contiguous() && index.dtype() == DType::i64,
      "index_select: cuda kernel expects contiguous tensors and an i64 index");
  int64_t n = out.numel();
  if (n == 0) return;
  int64_t outer, inner;
  split_dims(src.shape(), dim, outer, inner);
  int64_t nidx = index.numel(), src_dim = src.shape()[dim];
  TensorDeviceGuard g(out);
  cudaStream_t s = stream_of(out);
  unsigned grid = grid_for(n, kThreads, out.device().index);
  const int64_t* ip = static_cast<const int64_t*>(index.raw_data());
  DeviceErrorSlot* errors = device_error_slot(out.device().index);
  void* o = out.raw_data();
  const void* sp = src.raw_data();
  switch (out.itemsize()) {
    case 1:
      index_select_kernel<uint8_t><<<grid, kThreads, 0, s>>>((uint8_t*)o, (const uint8_t*)sp, ip, outer, nidx,
                                                             src_dim, inner, errors);
      break;
    case 2:
      index_select_kernel<uint16_t><<<grid, kThreads, 0, s>>>((uint16_t*)o, (const uint16_t*)sp, ip, outer,
                                                              nidx, src_dim, inner, errors);
      break;
    case 4:
      index_select_kernel<uint32_t><<<grid, kThreads, 0, s>>>((uint32_t*)o, (const uint32_t*)sp, ip, outer,
                                                              nidx, src_dim, inner, errors);
      break;
    case 8:
      index_select_kernel<uint64_t><<<grid, kThreads, 0, s>>>((uint64_t*)o, (const uint64_t*)sp, ip, outer,
                                                              nidx, src_dim, inner, errors);
      break;
    default:
      DGP_FAIL("index_select: unsupported item size " << out.itemsize());
  }
  DGP_CUDA_CHECK_LAUNCH();
}

void index_add(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src) {
  DGP_CHECK(
      src.is_contiguous() && dst.is_contiguous() && index.is_contiguous() && index.dtype() == DType::i64,
      "index_add: cuda kernel expects contiguous tensors and an i64 index");
  DGP_CHECK(src.dtype() == dst.dtype(), "index_add: dtype mismatch (" << dtype_name(dst.dtype()) << " and "
                                                                      << dtype_name(src.dtype()) << ")");
  int64_t n = src.numel();
  if (n == 0) return;
  int64_t outer, inner;
  split_dims(dst.shape(), dim, outer, inner);
  int64_t nidx = index.numel(), dst_dim = dst.shape()[dim];
  TensorDeviceGuard g(dst);
  cudaStream_t s = stream_of(dst);
  unsigned grid = grid_for(n, kThreads, dst.device().index);
  const int64_t* ip = static_cast<const int64_t*>(index.raw_data());
  DGP_CUDA_DISPATCH_FLOATING(dst.dtype(), "index_add", [&] {
    index_add_kernel<scalar_t><<<grid, kThreads, 0, s>>>(
        static_cast<scalar_t*>(dst.raw_data()), static_cast<const scalar_t*>(src.raw_data()), ip, outer, nidx,
        dst_dim, inner, device_error_slot(dst.device().index));
  });
  DGP_CUDA_CHECK_LAUNCH();
}

}  // namespace dgpipe::engine::cuda_kernels
