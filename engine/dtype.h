// Element types. f64 exists for the CPU oracle (finite differences in double); the storage-only
// half types f16/bf16 are computed in f32 on the CPU and natively on the GPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace dgpipe::engine {

enum class DType : uint8_t { f32, f64, f16, bf16, i8, u8, i16, i32, i64, boolean };

size_t dtype_size(DType t);
const char* dtype_name(DType t);                 // "f32", "f16", ... (also used in error messages)
const char* safetensors_dtype_name(DType t);     // "F32", "F16", "BF16", "I64", "BOOL", ...
DType dtype_from_name(const std::string& name);  // accepts both spellings; throws on unknown
bool is_floating(DType t);
// f16 or bf16: storage-only on the CPU (CPU kernels compute them in f32), native on the GPU.
inline bool is_half(DType t) {
  return t == DType::f16 || t == DType::bf16;
}

// IEEE binary16 and bfloat16 stored as raw bits. Conversions round to nearest even, like the hardware.
struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t float_to_half_bits(float f);
float half_bits_to_float(uint16_t h);

inline uint16_t float_to_bf16_bits(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_bits_to_float(uint16_t b) {
  return bits_float(static_cast<uint32_t>(b) << 16);
}

// Maps C++ types to DTypes for typed data access.
template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct dtype_of<double> {
  static constexpr DType value = DType::f64;
};
template <>
struct dtype_of<Half> {
  static constexpr DType value = DType::f16;
};
template <>
struct dtype_of<BFloat16> {
  static constexpr DType value = DType::bf16;
};
template <>
struct dtype_of<int8_t> {
  static constexpr DType value = DType::i8;
};
template <>
struct dtype_of<uint8_t> {
  static constexpr DType value = DType::u8;
};
template <>
struct dtype_of<int16_t> {
  static constexpr DType value = DType::i16;
};
template <>
struct dtype_of<int32_t> {
  static constexpr DType value = DType::i32;
};
template <>
struct dtype_of<int64_t> {
  static constexpr DType value = DType::i64;
};
template <>
struct dtype_of<bool> {
  static constexpr DType value = DType::boolean;
};

}  // namespace dgpipe::engine
