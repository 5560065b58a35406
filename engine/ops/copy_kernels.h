// Copies, fills and random factories: the element load/store both twins use (DGP_HD) and the CUDA launchers
// (engine/ops/copy.cu; the CPU twin is copy.cpp). Tensor::copy_, fill_ and rand/randn call the launchers, so
// filling or copying a device tensor needs no host round trip (and can be captured in a CUDA graph).
#pragma once
#include <cstdint>

#include "engine/dtype.h"
#include "engine/host_device.h"
#include "engine/rng.h"
#include "engine/tensor.h"

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace dgpipe::engine {

// Half-precision bits <-> float, rounding to nearest even: the hardware conversion on the device, the
// bit-exact software one (engine/dtype.h) on the host.
DGP_HD float f16_to_float(uint16_t h) {
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(h));
#else
  return half_bits_to_float(h);
#endif
}
DGP_HD uint16_t float_to_f16(float f) {
#ifdef __CUDA_ARCH__
  return __half_as_ushort(__float2half_rn(f));
#else
  return float_to_half_bits(f);
#endif
}
DGP_HD float bf16_to_float(uint16_t b) {
#ifdef __CUDA_ARCH__
  return __bfloat162float(__ushort_as_bfloat16(b));
#else
  return bf16_bits_to_float(b);
#endif
}
DGP_HD uint16_t float_to_bf16(float f) {
#ifdef __CUDA_ARCH__
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
#else
  return float_to_bf16_bits(f);
#endif
}

// Element i of an array of dtype t, read as double / written from double (the generic, slow path: printing,
// factories, conversions between integer types). Halves go through float, like every other conversion.
DGP_HD double load_as_double(const void* base, int64_t i, DType t) {
  switch (t) {
    case DType::f32:
      return static_cast<const float*>(base)[i];
    case DType::f64:
      return static_cast<const double*>(base)[i];
    case DType::f16:
      return f16_to_float(static_cast<const uint16_t*>(base)[i]);
    case DType::bf16:
      return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
    case DType::i8:
      return static_cast<const int8_t*>(base)[i];
    case DType::u8:
      return static_cast<const uint8_t*>(base)[i];
    case DType::i16:
      return static_cast<const int16_t*>(base)[i];
    case DType::i32:
      return static_cast<const int32_t*>(base)[i];
    case DType::i64:
      return static_cast<double>(static_cast<const int64_t*>(base)[i]);
    case DType::boolean:
      return static_cast<const uint8_t*>(base)[i] ? 1.0 : 0.0;
  }
  return 0;
}

DGP_HD void store_from_double(void* base, int64_t i, DType t, double v) {
  switch (t) {
    case DType::f32:
      static_cast<float*>(base)[i] = static_cast<float>(v);
      break;
    case DType::f64:
      static_cast<double*>(base)[i] = v;
      break;
    case DType::f16:
      static_cast<uint16_t*>(base)[i] = float_to_f16(static_cast<float>(v));
      break;
    case DType::bf16:
      static_cast<uint16_t*>(base)[i] = float_to_bf16(static_cast<float>(v));
      break;
    case DType::i8:
      static_cast<int8_t*>(base)[i] = static_cast<int8_t>(v);
      break;
    case DType::u8:
      static_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(v);
      break;
    case DType::i16:
      static_cast<int16_t*>(base)[i] = static_cast<int16_t>(v);
      break;
    case DType::i32:
      static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v);
      break;
    case DType::i64:
      static_cast<int64_t*>(base)[i] = static_cast<int64_t>(v);
      break;
    case DType::boolean:
      static_cast<uint8_t*>(base)[i] = v != 0.0;
      break;
  }
}

namespace cuda_kernels {
// dst = src (same shape, same device, any dtypes and strides), converting as store_from_double does.
void copy_strided(const Tensor& dst, const Tensor& src);
// dst (any dtype, any strides) = value, converted as store_from_double does.
void fill(const Tensor& dst, double value);
// Contiguous floating out = Philox uniform [0,1) (normal=false) or standard normal draws, element i following
// the rules of engine/rng.h from `state` (the caller reserves the counter blocks).
void philox_fill(const Tensor& out, PhiloxState state, bool normal);
}  // namespace cuda_kernels

}  // namespace dgpipe::engine
