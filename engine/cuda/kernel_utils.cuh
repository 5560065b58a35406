// Device-side building blocks shared by the op kernels: dtype dispatch, accumulation types, strided indexing
// (engine/cuda/indexing.h), error reports, warp/block reductions. The Philox generator the kernels draw from
// is engine/rng.h's (DGP_HD).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "engine/cuda/cuda_context.cuh"
#include "engine/cuda/indexing.h"

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

// ---- indexing ----

// Calls launch(ix) with the 32-bit indexer when it covers the operands (engine/cuda/indexing.h), else with
// the 64-bit one; kernels take the indexer type as a template parameter.
template <int K, class Launch>
void with_indexer(const StridedIndexer<K>& ix, int64_t n, Launch&& launch) {
  if (fits_32bit(ix, n))
    launch(narrow_indexer(ix));
  else
    launch(ix);
}

// ---- errors ----

// Records bad input for the host (engine/cuda.h, check_device_errors); the first report wins. The caller
// skips the element instead of touching memory out of range.
__device__ __forceinline__ void report_device_error(DeviceErrorSlot* slot, DeviceErrorCode code,
                                                    int64_t index, int64_t bound) {
  if (atomicCAS(&slot->code, 0, static_cast<int>(code)) == 0) {
    slot->index = index;
    slot->bound = bound;
    __threadfence_system();
  }
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
