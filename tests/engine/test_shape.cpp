#include <gtest/gtest.h>

#include "engine/ops.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;

namespace {
Tensor iota(const Shape& shape, double start = 0) {
  return add(arange(0, shape_numel(shape), 1, DType::f64).view(shape), start);
}
std::vector<int64_t> sizes_along(const std::vector<Tensor>& parts, int64_t dim) {
  std::vector<int64_t> s;
  for (const Tensor& p : parts) s.push_back(p.size(dim));
  return s;
}
}  // namespace

TEST(Shape, ConcatValues) {
  Tensor a = iota({2, 2}), b = iota({1, 2}, 10), c = iota({2, 3}, 20);
  Tensor r = concat({a, b}, 0);
  EXPECT_EQ(r.shape(), (Shape{3, 2}));
  EXPECT_EQ(r.to_vector(), (std::vector<double>{0, 1, 2, 3, 10, 11}));
  Tensor s = concat({a, c}, -1);
  EXPECT_EQ(s.shape(), (Shape{2, 5}));
  EXPECT_EQ(s.to_vector(), (std::vector<double>{0, 1, 20, 21, 22, 2, 3, 23, 24, 25}));
  EXPECT_EQ(concat({a.t(), b.t()}, 1).to_vector(),
            (std::vector<double>{0, 2, 10, 1, 3, 11}));  // non-contiguous
}

TEST(Shape, GradcheckConcat) {
  Tensor a = random_leaf({2, 3}, -1, 1, 1), b = random_leaf({2, 1}, -1, 1, 2),
         c = random_leaf({3, 2}, -1, 1, 3);
  Fn f = [](const Inputs& in) { return concat({in[0], in[1], in[2].t()}, 1); };
  EXPECT_GRADCHECK(f, (Inputs{a, b, c}));
  Fn g = [](const Inputs& in) { return concat({in[0], in[0].slice(0, 1, 2)}, 0); };  // one input used twice
  EXPECT_GRADCHECK(g, (Inputs{a}));
}

TEST(Shape, SplitAndChunkSizesFollowPyTorch) {
  Tensor x = iota({10, 2});
  EXPECT_EQ(sizes_along(split(x, {3, 0, 7}, 0), 0), (std::vector<int64_t>{3, 0, 7}));
  EXPECT_EQ(split(x, {3, 7}, 0)[1].to_vector()[0], 6.0);
  EXPECT_EQ(sizes_along(chunk(x, 3, 0), 0), (std::vector<int64_t>{4, 4, 2}));
  EXPECT_EQ(sizes_along(chunk(iota({5}), 3, 0), 0), (std::vector<int64_t>{2, 2, 1}));
  EXPECT_EQ(sizes_along(chunk(iota({6}), 4, 0), 0),
            (std::vector<int64_t>{2, 2, 2}));  // fewer chunks, as torch
  EXPECT_EQ(sizes_along(chunk(x, 2, -1), 1), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(chunk(x, 2, 1)[1].to_vector()[0], 1.0);
}

TEST(Shape, GradcheckSplitAndChunk) {
  Tensor x = random_leaf({5, 4}, -1, 1, 4);
  Fn f = [](const Inputs& in) {
    std::vector<Tensor> parts = split(in[0], {1, 3}, 1);
    return add(mul(parts[1], 2.0), parts[0]);  // both parts, broadcasting [5,1] over [5,3]
  };
  EXPECT_GRADCHECK(f, (Inputs{x}));
  Fn g = [](const Inputs& in) {
    std::vector<Tensor> parts = chunk(in[0].t(), 2, 1);  // [4,3] and [4,2] of a transposed view
    return mul(parts[0].slice(1, 0, 2), parts[1]);
  };
  EXPECT_GRADCHECK(g, (Inputs{x}));
}

TEST(Shape, StackValuesAndGradcheck) {
  Tensor a = iota({2, 3}), b = iota({2, 3}, 10);
  Tensor s0 = stack({a, b}, 0), s1 = stack({a, b}, 1), sl = stack({a, b}, -1);
  EXPECT_EQ(s0.shape(), (Shape{2, 2, 3}));
  EXPECT_EQ(s1.shape(), (Shape{2, 2, 3}));
  EXPECT_EQ(sl.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(s1.to_vector(), (std::vector<double>{0, 1, 2, 10, 11, 12, 3, 4, 5, 13, 14, 15}));
  EXPECT_EQ(sl.to_vector()[1], 10.0);
  Tensor x = random_leaf({2, 3}, -1, 1, 5), y = random_leaf({3, 2}, -1, 1, 6);
  Fn f = [](const Inputs& in) { return stack({in[0], in[1].t(), in[0]}, 2); };
  // in[0] appears twice: gradcheck perturbs the leaf, and both uses see it, so analytic and numeric agree.
  EXPECT_GRADCHECK(f, (Inputs{x, y}));
}

TEST(Shape, IndexSelectValuesAndGradcheck) {
  Tensor x = iota({3, 4});
  Tensor rows = index_select(x, 0, from_vector(std::vector<int64_t>{2, 0, 2}, {3}));
  EXPECT_EQ(rows.shape(), (Shape{3, 4}));
  EXPECT_EQ(rows.to_vector(), (std::vector<double>{8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11}));
  Tensor cols = index_select(x.t(), 0, from_vector(std::vector<int64_t>{3, 1}, {2}).to(DType::i32));
  EXPECT_EQ(cols.to_vector(), (std::vector<double>{3, 7, 11, 1, 5, 9}));
  EXPECT_EQ(index_select(x, 1, from_vector(std::vector<int64_t>{}, {0})).shape(), (Shape{3, 0}));

  Tensor leaf = random_leaf({3, 4, 2}, -1, 1, 7);
  Tensor idx = from_vector(std::vector<int64_t>{1, 3, 1, 1, 0}, {5});  // repeats accumulate in the backward
  Fn f = [idx](const Inputs& in) { return index_select(in[0], 1, idx); };
  EXPECT_GRADCHECK(f, (Inputs{leaf}));
  Fn g = [idx](const Inputs& in) { return index_select(in[0].permute({1, 0, 2}), 0, idx); };
  EXPECT_GRADCHECK(g, (Inputs{leaf}));
  leaf.zero_grad();
  sum(index_select(leaf, 1, idx)).backward();
  std::vector<double> gv = leaf.grad().to_vector();
  EXPECT_EQ(gv[0], 1.0);  // [0,0,0]: index 0 once
  EXPECT_EQ(gv[2], 3.0);  // [0,1,0]: index 1 three times
  EXPECT_EQ(gv[4], 0.0);  // [0,2,0]: never selected
  EXPECT_EQ(gv[6], 1.0);  // [0,3,0]
}

TEST(Shape, ErrorsNameTheOpAndValues) {
  std::string e = error_of([] { concat({zeros({2, 3}), zeros({2, 4})}, 0); });
  EXPECT_TRUE(contains(e, "concat") && contains(e, "[2,4]")) << e;
  e = error_of([] { concat({zeros({2, 3}), zeros({2, 3}, DType::f64)}, 0); });
  EXPECT_TRUE(contains(e, "concat") && contains(e, "f64")) << e;
  EXPECT_THROW(concat({}, 0), Error);
  e = error_of([] { split(zeros({5}), {2, 2}, 0); });
  EXPECT_TRUE(contains(e, "split") && contains(e, "5")) << e;
  EXPECT_TRUE(contains(error_of([] { chunk(zeros({5}), 0, 0); }), "chunk"));
  e = error_of([] { stack({zeros({2}), zeros({3})}, 0); });
  EXPECT_TRUE(contains(e, "stack") && contains(e, "[3]")) << e;
  e = error_of([] { index_select(zeros({3, 4}), 1, from_vector(std::vector<int64_t>{0, 4}, {2})); });
  EXPECT_TRUE(contains(e, "index_select") && contains(e, "index 4") && contains(e, "size 4")) << e;
  e = error_of([] { index_select(zeros({3, 4}), 0, from_vector(std::vector<int64_t>{0, 1}, {1, 2})); });
  EXPECT_TRUE(contains(e, "1-D")) << e;
}
