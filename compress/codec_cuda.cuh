// Device helpers shared by the codec kernels (uniform.cu, sortquant.cu, fastquant.cu). Included only by .cu
// files.
//
// Work unit: a tile of kTileElems = 256 threads x 8 elements. A thread loads its 8 consecutive floats with
// two 16-byte loads (scalar loads for a ragged or misaligned tail), computes 8 codes of `bits` bits and packs
// them into exactly `bits` bytes in shared memory; the block then stores its 256*bits contiguous payload
// bytes with 16-byte stores (the payload starts 16-byte aligned in the body and 256*bits is a multiple of
// 16).
//
// CUDA calls are checked with the engine's DGP_CUDA_CHECK (engine/cuda/cuda_context.cuh: the error names the
// call and its file:line); body offsets are the layout functions of codec_impl.h, shared with the CPU.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "compress/codec.h"
#include "compress/codec_impl.h"
#include "compress/quant_math.h"
#include "engine/cuda/cuda_context.cuh"

namespace dgpipe::compress::cuda_kernels {

constexpr int kThreads = 256;
constexpr int kPerThread = 8;
constexpr int64_t kTileElems = kThreads * kPerThread;

inline cudaStream_t stream() {
  return static_cast<cudaStream_t>(codec_stream());
}
inline int64_t tiles(int64_t n) {
  return (n + kTileElems - 1) / kTileElems;
}

// Reduction functors (cub::Min/Max were removed in CCCL 3).
struct MinOp {
  template <class T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const {
    return b < a ? b : a;
  }
};
struct MaxOp {
  template <class T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const {
    return a < b ? b : a;
  }
};

// Loads x[base .. base+8) (zeros past n).
__device__ __forceinline__ void load8(const float* __restrict__ x, int64_t n, int64_t base, float v[8]) {
  if (base + 8 <= n && (reinterpret_cast<uintptr_t>(x + base) & 15) == 0) {
    float4 a = __ldg(reinterpret_cast<const float4*>(x + base));
    float4 b = __ldg(reinterpret_cast<const float4*>(x + base) + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = base + k < n ? __ldg(x + base + k) : 0.0f;
  }
}

// A quantizer's input on the device: contiguous f32, f16 or bf16 values, read as floats. A half input is read
// in its 2-byte form (8 values per 16-byte load), never through an f32 copy. The dtype is uniform across the
// grid, so its branch costs no divergence.
struct InputValues {
  const void* data;
  engine::DType dtype;
  __device__ __forceinline__ float at(int64_t i) const {
    switch (dtype) {
      case engine::DType::f16:
        return __half2float(__ushort_as_half(static_cast<const unsigned short*>(data)[i]));
      case engine::DType::bf16:
        return __uint_as_float(static_cast<uint32_t>(static_cast<const unsigned short*>(data)[i]) << 16);
      default:
        return __ldg(static_cast<const float*>(data) + i);
    }
  }
};

// x viewed as a kernel input; throws (naming the codec) unless x is a contiguous f32/f16/bf16 device tensor.
inline InputValues input_values(const engine::Tensor& x, const char* codec) {
  DGP_CHECK(
      x.is_cuda() && x.is_contiguous() && (x.dtype() == engine::DType::f32 || engine::is_half(x.dtype())),
      codec << " CUDA encode: expected a contiguous f32, f16 or bf16 CUDA tensor, got "
            << engine::dtype_name(x.dtype()) << " on " << x.device().str());
  return InputValues{x.raw_data(), x.dtype()};
}

// Loads x[base .. base+8) as floats (zeros past n).
__device__ __forceinline__ void load8(const InputValues& x, int64_t n, int64_t base, float v[8]) {
  if (x.dtype == engine::DType::f32) {
    load8(static_cast<const float*>(x.data), n, base, v);
    return;
  }
  const unsigned short* h = static_cast<const unsigned short*>(x.data);
  if (base + 8 <= n && (reinterpret_cast<uintptr_t>(h + base) & 15) == 0) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(h + base));
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const unsigned short bits = static_cast<unsigned short>(words[k / 2] >> (16 * (k % 2)));
      v[k] = x.dtype == engine::DType::f16 ? __half2float(__ushort_as_half(bits))
                                           : __uint_as_float(static_cast<uint32_t>(bits) << 16);
    }
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = base + k < n ? x.at(base + k) : 0.0f;
  }
}

// Packs this thread's 8 codes and stores the tile's payload bytes. `stage` holds kThreads*16 bytes.
__device__ __forceinline__ void store_tile(uint8_t* stage, const uint32_t codes[8], int bits,
                                           uint8_t* payload, uint64_t payload_bytes, int64_t tile) {
  pack8(codes, bits, stage + threadIdx.x * bits);
  __syncthreads();
  const uint64_t tile_bytes = static_cast<uint64_t>(kThreads) * bits;
  const uint64_t start = static_cast<uint64_t>(tile) * tile_bytes;
  uint64_t avail = payload_bytes > start ? payload_bytes - start : 0;
  if (avail >= tile_bytes) {
    const int words = static_cast<int>(tile_bytes / 16);
    for (int w = threadIdx.x; w < words; w += kThreads)
      reinterpret_cast<uint4*>(payload + start)[w] = reinterpret_cast<const uint4*>(stage)[w];
  } else {
    for (uint64_t b = threadIdx.x; b < avail; b += kThreads) payload[start + b] = stage[b];
  }
}

// Reads the 8-byte prelude + K (lo, step) pairs of a body into shared arrays.
__device__ __forceinline__ void load_group_stats(const uint8_t* body, int groups, float* lo, float* step) {
  const float* s = reinterpret_cast<const float*>(body + detail::group_stats_offset());
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    lo[g] = s[2 * g];
    step[g] = s[2 * g + 1];
  }
}

}  // namespace dgpipe::compress::cuda_kernels
