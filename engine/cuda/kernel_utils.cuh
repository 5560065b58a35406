// Device-side building blocks shared by the op kernels: dtype dispatch, accumulation types, strided indexing,
// warp/block reductions. The Philox generator the kernels draw from is engine/rng.h's (DGP_HD).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "engine/cuda/cuda_context.cuh"

namespace dgpipe::engine::cuda {

// Storage type -> arithmetic type: halves compute in float, everything else in itself.
template <class T>
struct AccOf {
  using type = T;
};
template <>
struct AccOf<__half> {
  using type = float;
};
template <>
struct AccOf<__nv_bfloat16> {
  using type = float;
};
template <class T>
using acc_t = typename AccOf<T>::type;

template <class T>
__device__ __forceinline__ acc_t<T> to_acc(T v) {
  return static_cast<acc_t<T>>(v);
}
template <>
__device__ __forceinline__ float to_acc<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_acc<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <class T, class A>
__device__ __forceinline__ T from_acc(A v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __half from_acc<__half, float>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}

}  // namespace dgpipe::engine::cuda

// DGP_CUDA_DISPATCH_FLOATING(dtype, "op", [&] { ... scalar_t ... }): f32, f64, f16, bf16.
#define DGP_CUDA_DISPATCH_FLOATING(DT, NAME, ...)                                                   \
  do {                                                                                              \
    switch (DT) {                                                                                   \
      case ::dgpipe::engine::DType::f32: {                                                          \
        using scalar_t = float;                                                                     \
        __VA_ARGS__();                                                                              \
        break;                                                                                      \
      }                                                                                             \
      case ::dgpipe::engine::DType::f64: {                                                          \
        using scalar_t = double;                                                                    \
        __VA_ARGS__();                                                                              \
        break;                                                                                      \
      }                                                                                             \
      case ::dgpipe::engine::DType::f16: {                                                          \
        using scalar_t = __half;                                                                    \
        __VA_ARGS__();                                                                              \
        break;                                                                                      \
      }                                                                                             \
      case ::dgpipe::engine::DType::bf16: {                                                         \
        using scalar_t = __nv_bfloat16;                                                             \
        __VA_ARGS__();                                                                              \
        break;                                                                                      \
      }                                                                                             \
      default:                                                                                      \
        DGP_FAIL(NAME << ": unsupported dtype " << ::dgpipe::engine::dtype_name(DT) << " on cuda"); \
    }                                                                                               \
  } while (0)

namespace dgpipe::engine::cuda {

// Up to kMaxDims dims after merging; offsets of K operands for a row-major linear index.
constexpr int kMaxDims = 10;

template <int K>
struct StridedIndexer {
  int ndim = 0;
  int64_t sizes[kMaxDims];
  int64_t strides[K][kMaxDims];
  int64_t base[K];

  __device__ __forceinline__ void offsets(int64_t linear, int64_t out[K]) const {
#pragma unroll
    for (int k = 0; k < K; ++k) out[k] = base[k];
    for (int d = ndim - 1; d >= 0; --d) {
      int64_t i = linear % sizes[d];
      linear /= sizes[d];
#pragma unroll
      for (int k = 0; k < K; ++k) out[k] += i * strides[k][d];
    }
  }
};

// Builds an indexer for tensors of one shape, merging dims that are contiguous in every operand and dropping
// size-1 dims, so the common cases need one or two divisions per element. Throws if more than kMaxDims
// remain.
template <int K>
StridedIndexer<K> make_indexer(const Shape& shape, const Tensor* const ts[K], const char* op) {
  StridedIndexer<K> ix;
  DGP_CHECK(shape.size() <= 64, op << ": tensors of more than 64 dimensions are not supported");
  int n = 0;
  int64_t sizes[64];
  int64_t strides[K][64];
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (n > 0) {
      bool merge = true;
      for (int k = 0; k < K; ++k)
        if (strides[k][n - 1] != ts[k]->strides()[d] * shape[d]) merge = false;
      if (merge) {
        sizes[n - 1] *= shape[d];
        for (int k = 0; k < K; ++k) strides[k][n - 1] = ts[k]->strides()[d];
        continue;
      }
    }
    sizes[n] = shape[d];
    for (int k = 0; k < K; ++k) strides[k][n] = ts[k]->strides()[d];
    ++n;
  }
  DGP_CHECK(n <= kMaxDims, op << ": tensors with more than " << kMaxDims
                              << " non-mergeable dims are not supported "
                              << "on cuda (shape " << shape_str(shape) << "); call contiguous() first");
  ix.ndim = n;
  for (int d = 0; d < n; ++d) {
    ix.sizes[d] = sizes[d];
    for (int k = 0; k < K; ++k) ix.strides[k][d] = strides[k][d];
  }
  for (int k = 0; k < K; ++k) ix.base[k] = ts[k]->offset();
  return ix;
}

// ---- reductions ----

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
template <class T>
__device__ T block_sum(T v, T* shared32) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // shared32 may still be read by a previous call
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  int nwarps = (blockDim.x + 31) >> 5;
  T r = lane < nwarps ? shared32[lane] : T(0);
  return warp_sum(r);
}

template <class T>
__device__ T block_max(T v, T* shared32) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  int nwarps = (blockDim.x + 31) >> 5;
  T r = lane < nwarps ? shared32[lane] : shared32[0];
  return warp_max(r);
}

}  // namespace dgpipe::engine::cuda
