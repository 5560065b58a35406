// Internal helpers for CPU kernels: dtype dispatch, strided N-d iteration and lane-wise sums. Not part of the
// public API.
#pragma once
#include <array>
#include <cstdint>

#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/tensor.h"

// DGP_DISPATCH_FLOATING(dtype, "op", [&] { ... scalar_t ... }): f32 and f64 kernels.
#define DGP_DISPATCH_FLOATING(DT, NAME, ...)                                                       \
  do {                                                                                             \
    switch (DT) {                                                                                  \
      case ::dgpipe::engine::DType::f32: {                                                         \
        using scalar_t = float;                                                                    \
        __VA_ARGS__();                                                                             \
        break;                                                                                     \
      }                                                                                            \
      case ::dgpipe::engine::DType::f64: {                                                         \
        using scalar_t = double;                                                                   \
        __VA_ARGS__();                                                                             \
        break;                                                                                     \
      }                                                                                            \
      default:                                                                                     \
        DGP_FAIL(NAME << ": unsupported dtype " << ::dgpipe::engine::dtype_name(DT) << " on cpu"); \
    }                                                                                              \
  } while (0)

// DGP_DISPATCH_INDEX(dtype, "op", [&] { ... index_t ... }): i32 and i64 index tensors.
#define DGP_DISPATCH_INDEX(DT, NAME, ...)                                                           \
  do {                                                                                              \
    switch (DT) {                                                                                   \
      case ::dgpipe::engine::DType::i32: {                                                          \
        using index_t = int32_t;                                                                    \
        __VA_ARGS__();                                                                              \
        break;                                                                                      \
      }                                                                                             \
      case ::dgpipe::engine::DType::i64: {                                                          \
        using index_t = int64_t;                                                                    \
        __VA_ARGS__();                                                                              \
        break;                                                                                      \
      }                                                                                             \
      default:                                                                                      \
        DGP_FAIL(NAME << ": indices must be i32 or i64, got " << ::dgpipe::engine::dtype_name(DT)); \
    }                                                                                               \
  } while (0)

namespace dgpipe::engine::cpu {

// Calls f(offsets) for every index of `shape` in row-major order; offsets[k] is the element offset of
// tensor k given its strides (stride 0 broadcasts). Inner loop is over the last dimension.
template <size_t K, class F>
void for_each_offset(const Shape& shape, const std::array<const int64_t*, K>& strides,
                     std::array<int64_t, K> base, F&& f) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  for (int64_t d = 0; d < nd; ++d)
    if (shape[d] == 0) return;
  if (nd == 0) {
    f(base);
    return;
  }
  std::array<int64_t, 16> counter{};
  DGP_CHECK(nd <= 16, "tensors of more than 16 dimensions are not supported");
  const int64_t inner = shape[nd - 1];
  std::array<int64_t, K> inner_stride;
  for (size_t k = 0; k < K; ++k) inner_stride[k] = strides[k][nd - 1];
  std::array<int64_t, K> off = base;
  while (true) {
    std::array<int64_t, K> o = off;
    for (int64_t i = 0; i < inner; ++i) {
      f(o);
      for (size_t k = 0; k < K; ++k) o[k] += inner_stride[k];
    }
    int64_t d = nd - 2;
    for (; d >= 0; --d) {
      ++counter[d];
      for (size_t k = 0; k < K; ++k) off[k] += strides[k][d];
      if (counter[d] < shape[d]) break;
      for (size_t k = 0; k < K; ++k) off[k] -= strides[k][d] * shape[d];
      counter[d] = 0;
    }
    if (d < 0) return;
  }
}

// Calls f(r, offsets) for rows r in [r0, r1) of `shape` (a row: one index of every dim but the last, in
// row-major order); offsets[k] is the element offset of row r's first element in tensor k. For splitting a
// strided loop over threads by rows: the row counter is unravelled once per call, then carried.
template <size_t K, class F>
void for_each_row(const Shape& shape, const std::array<const int64_t*, K>& strides,
                  std::array<int64_t, K> base, int64_t r0, int64_t r1, F&& f) {
  const int64_t outer = static_cast<int64_t>(shape.size()) - 1;
  DGP_CHECK(outer >= 0 && outer < 16, "for_each_row: tensors of 1 to 16 dimensions");
  std::array<int64_t, 16> counter{};
  std::array<int64_t, K> off = base;
  for (int64_t d = outer - 1, rest = r0; d >= 0; --d) {
    counter[d] = rest % shape[d];
    rest /= shape[d];
    for (size_t k = 0; k < K; ++k) off[k] += counter[d] * strides[k][d];
  }
  for (int64_t r = r0; r < r1; ++r) {
    f(r, off);
    for (int64_t d = outer - 1; d >= 0; --d) {
      for (size_t k = 0; k < K; ++k) off[k] += strides[k][d];
      if (++counter[d] < shape[d]) break;
      for (size_t k = 0; k < K; ++k) off[k] -= strides[k][d] * shape[d];
      counter[d] = 0;
    }
  }
}

// A sum in kSumLanes double partial sums: term k of every row goes to lane k % kSumLanes, and the lanes are
// added in a fixed order at the end. The bits do not depend on the thread count when one thread makes the
// whole sum (a channel's, in batch norm and the convolution's bias gradient), and the additions form
// kSumLanes independent chains that the compiler turns into vector adds, where a single running sum is one
// dependent add per element (4 cycles each).
constexpr int64_t kSumLanes = 8;
struct LaneSums {
  double v[kSumLanes] = {};
  double total() const { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }
};

// Adds term(k) for k < n to the lanes (k % kSumLanes).
template <class F>
inline void add_row(LaneSums& s, int64_t n, F&& term) {
  int64_t k = 0;
  for (; k + kSumLanes <= n; k += kSumLanes)
    for (int64_t l = 0; l < kSumLanes; ++l) s.v[l] += term(k + l);
  for (int64_t l = 0; k + l < n; ++l) s.v[l] += term(k + l);
}

// Strided copy with dtype conversion; src must already have dst's shape (expand it first). Both on CPU.
void copy_strided(const Tensor& dst, const Tensor& src);

}  // namespace dgpipe::engine::cpu
