// Strided copy with dtype conversion (CPU twin of copy.cu).
#include <cstring>

#include "engine/ops.h"
#include "engine/ops/copy_kernels.h"
#include "engine/ops/cpu_loops.h"

namespace dgpipe::engine::cpu {

namespace {

template <class T>
void copy_same(const Tensor& dst, const Tensor& src) {
  T* d = static_cast<T*>(dst.storage()->data());
  const T* s = static_cast<const T*>(src.storage()->data());
  std::array<const int64_t*, 2> st{dst.strides().data(), src.strides().data()};
  const Shape& shape = dst.shape();
  const size_t nd = shape.size();
  if (nd >= 2 && dst.stride(-1) == 1 && src.stride(-1) == 1) {
    // Rows of unit stride on both sides (a permutation that keeps the last dim, as the attention heads'
    // split and merge do): one memmove per row instead of an element loop. for_each_offset over the shape
    // without its last dim reads only the strides of those dims.
    const Shape rows(shape.begin(), shape.end() - 1);
    const size_t row_bytes = static_cast<size_t>(shape[nd - 1]) * sizeof(T);
    for_each_offset<2>(rows, st, {dst.offset(), src.offset()},
                       [&](const std::array<int64_t, 2>& o) { std::memmove(d + o[0], s + o[1], row_bytes); });
    return;
  }
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
  if (dt == DType::f32 && stt == DType::f16) return copy_convert<float, uint16_t>(dst, src, f16_to_float);
  if (dt == DType::f16 && stt == DType::f32) return copy_convert<uint16_t, float>(dst, src, float_to_f16);
  if (dt == DType::f32 && stt == DType::bf16) return copy_convert<float, uint16_t>(dst, src, bf16_to_float);
  if (dt == DType::bf16 && stt == DType::f32) return copy_convert<uint16_t, float>(dst, src, float_to_bf16);
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
