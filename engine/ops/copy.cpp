// Strided copy with dtype conversion (CPU), and the generic element load/store used by printing and
// factories.
#include <cstring>

#include "engine/ops.h"
#include "engine/ops/cpu_loops.h"

namespace dgpipe::engine::cpu {

double load_as_double(const void* base, int64_t i, DType t) {
  switch (t) {
    case DType::f32:
      return static_cast<const float*>(base)[i];
    case DType::f64:
      return static_cast<const double*>(base)[i];
    case DType::f16:
      return half_bits_to_float(static_cast<const uint16_t*>(base)[i]);
    case DType::bf16:
      return bf16_bits_to_float(static_cast<const uint16_t*>(base)[i]);
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

void store_from_double(void* base, int64_t i, DType t, double v) {
  switch (t) {
    case DType::f32:
      static_cast<float*>(base)[i] = static_cast<float>(v);
      break;
    case DType::f64:
      static_cast<double*>(base)[i] = v;
      break;
    case DType::f16:
      static_cast<uint16_t*>(base)[i] = float_to_half_bits(static_cast<float>(v));
      break;
    case DType::bf16:
      static_cast<uint16_t*>(base)[i] = float_to_bf16_bits(static_cast<float>(v));
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

namespace {

template <class T>
void copy_same(const Tensor& dst, const Tensor& src) {
  T* d = static_cast<T*>(dst.storage()->data());
  const T* s = static_cast<const T*>(src.storage()->data());
  std::array<const int64_t*, 2> st{dst.strides().data(), src.strides().data()};
  for_each_offset<2>(dst.shape(), st, {dst.offset(), src.offset()},
                     [&](const std::array<int64_t, 2>& o) { d[o[0]] = s[o[1]]; });
}

// Typed conversions for the common float paths; everything else goes through double.
template <class D, class S>
void copy_convert(const Tensor& dst, const Tensor& src, D (*cv)(S)) {
  D* d = static_cast<D*>(dst.storage()->data());
  const S* s = static_cast<const S*>(src.storage()->data());
  std::array<const int64_t*, 2> st{dst.strides().data(), src.strides().data()};
  for_each_offset<2>(dst.shape(), st, {dst.offset(), src.offset()},
                     [&](const std::array<int64_t, 2>& o) { d[o[0]] = cv(s[o[1]]); });
}

float f16_to_f32(uint16_t h) {
  return half_bits_to_float(h);
}
uint16_t f32_to_f16(float f) {
  return float_to_half_bits(f);
}
float bf16_to_f32(uint16_t h) {
  return bf16_bits_to_float(h);
}
uint16_t f32_to_bf16(float f) {
  return float_to_bf16_bits(f);
}
double f32_to_f64(float f) {
  return f;
}
float f64_to_f32(double d) {
  return static_cast<float>(d);
}

}  // namespace

void copy_strided(const Tensor& dst, const Tensor& src) {
  DGP_CHECK(dst.shape() == src.shape(),
            "copy: shapes " << shape_str(dst.shape()) << " and " << shape_str(src.shape()) << " differ");
  if (dst.dtype() == src.dtype()) {
    if (dst.is_contiguous() && src.is_contiguous()) {
      std::memcpy(dst.raw_data(), src.raw_data(), dst.nbytes());
      return;
    }
    switch (dst.itemsize()) {
      case 1:
        copy_same<uint8_t>(dst, src);
        return;
      case 2:
        copy_same<uint16_t>(dst, src);
        return;
      case 4:
        copy_same<uint32_t>(dst, src);
        return;
      case 8:
        copy_same<uint64_t>(dst, src);
        return;
    }
  }
  DType dt = dst.dtype(), stt = src.dtype();
  if (dt == DType::f32 && stt == DType::f16) return copy_convert<float, uint16_t>(dst, src, f16_to_f32);
  if (dt == DType::f16 && stt == DType::f32) return copy_convert<uint16_t, float>(dst, src, f32_to_f16);
  if (dt == DType::f32 && stt == DType::bf16) return copy_convert<float, uint16_t>(dst, src, bf16_to_f32);
  if (dt == DType::bf16 && stt == DType::f32) return copy_convert<uint16_t, float>(dst, src, f32_to_bf16);
  if (dt == DType::f64 && stt == DType::f32) return copy_convert<double, float>(dst, src, f32_to_f64);
  if (dt == DType::f32 && stt == DType::f64) return copy_convert<float, double>(dst, src, f64_to_f32);
  void* d = dst.storage()->data();
  const void* s = src.storage()->data();
  std::array<const int64_t*, 2> st{dst.strides().data(), src.strides().data()};
  for_each_offset<2>(dst.shape(), st, {dst.offset(), src.offset()}, [&](const std::array<int64_t, 2>& o) {
    store_from_double(d, o[0], dt, load_as_double(s, o[1], stt));
  });
}

}  // namespace dgpipe::engine::cpu
