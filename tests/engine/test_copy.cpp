#include <gtest/gtest.h>

#include <vector>

#include "engine/ops.h"

using namespace dgpipe::engine;

namespace {

// Reads element (i0, i1, i2, i3) of a view through its strides, the definition a copy must follow.
double at(const std::vector<double>& base, const Tensor& view, std::array<int64_t, 4> idx) {
  int64_t off = view.offset();
  for (int64_t d = 0; d < view.dim(); ++d) off += idx[static_cast<size_t>(d)] * view.stride(d);
  return base[static_cast<size_t>(off)];
}

// contiguous() of a 4-d view of `base` (values 0, 1, 2, ...) against the element-by-element definition.
void expect_copied_in_logical_order(const Tensor& view, const std::vector<double>& base) {
  std::vector<double> got = view.contiguous().to_vector();
  size_t k = 0;
  for (int64_t a = 0; a < view.size(0); ++a)
    for (int64_t b = 0; b < view.size(1); ++b)
      for (int64_t c = 0; c < view.size(2); ++c)
        for (int64_t d = 0; d < view.size(3); ++d, ++k)
          ASSERT_EQ(got[k], at(base, view, {a, b, c, d})) << "element " << k;
}

}  // namespace

TEST(Copy, ViewsWithUnitStrideRowsCopyInLogicalOrder) {
  // The attention heads' split and merge (a permutation keeping the last dim), a slice of the last dim
  // (rows shorter than their stride, an offset), and a broadcast outer dim (stride 0), in every item size.
  std::vector<double> base(2 * 3 * 4 * 6);
  for (size_t i = 0; i < base.size(); ++i) base[i] = static_cast<double>(i % 251);
  for (DType dt : {DType::f32, DType::f64, DType::i64, DType::f16, DType::u8}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor x = from_vector(base, {2, 3, 4, 6}, TensorOptions(dt));
    expect_copied_in_logical_order(x.permute({0, 2, 1, 3}), base);
    expect_copied_in_logical_order(x.permute({2, 1, 0, 3}).slice(3, 1, 5), base);
    expect_copied_in_logical_order(x.slice(0, 1, 2).expand({3, 3, 4, 6}), base);
    expect_copied_in_logical_order(x.permute({0, 1, 3, 2}), base);  // last dim strided: the element loop
  }
}
