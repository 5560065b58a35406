#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops.h"
#include "engine/ops/reduce_kernels.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;

namespace {
// x[i][j][k] = 100 i + 10 j + k, shape [2,3,4]
Tensor digits() {
  std::vector<double> v;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) v.push_back(100 * i + 10 * j + k);
  return from_vector(v, {2, 3, 4}, DType::f64);
}
}  // namespace

TEST(Reduce, SumAndMeanValuesAndShapes) {
  Tensor x = digits();
  EXPECT_EQ(sum(x).dim(), 0);
  EXPECT_EQ(sum(x).item(), 12 * 100 + 8 * 30 + 6 * 6);  // 1200 + 240 + 36
  Tensor s1 = sum(x, {1});
  EXPECT_EQ(s1.shape(), (Shape{2, 4}));
  EXPECT_EQ(s1.to_vector()[5], 300 + 30 + 3.0);  // i=1, k=1: 3*100 + (0+10+20) + 3*1
  EXPECT_EQ(sum(x, {0, 2}, true).shape(), (Shape{1, 3, 1}));
  EXPECT_EQ(sum(x, {0, 2}, true).to_vector(), (std::vector<double>{412, 492, 572}));
  EXPECT_EQ(sum(x, {-1}).to_vector(), sum(x, {2}).to_vector());
  EXPECT_EQ(mean(x, {2}).to_vector(), (std::vector<double>{1.5, 11.5, 21.5, 101.5, 111.5, 121.5}));
  EXPECT_EQ(mean(x).item(), (1200 + 240 + 36) / 24.0);
  // Non-contiguous input gives the same reduction.
  Tensor p = x.permute({2, 0, 1});
  EXPECT_EQ(sum(p, {0}).to_vector(), sum(x, {2}).to_vector());
}

TEST(Reduce, VarianceWithCorrection) {
  Tensor x = from_vector(std::vector<double>{1, 2, 3, 4, 2, 2, 2, 2}, {2, 4}, DType::f64);
  EXPECT_EQ(var(x, {1}, 0).to_vector(), (std::vector<double>{1.25, 0}));
  EXPECT_NEAR(var(x, {1}, 1).to_vector()[0], 5.0 / 3.0, 1e-15);
  EXPECT_EQ(var(x, {1}, 1, true).shape(), (Shape{2, 1}));
  EXPECT_EQ(var(x, {0, 1}, 0).dim(), 0);
}

TEST(Reduce, GradcheckSumMeanVarOverDims) {
  Tensor x = random_leaf({2, 3, 4}, -1, 1, 1);
  std::vector<std::pair<const char*, Fn>> cases = {
      {"sum_all", [](const Inputs& in) { return sum(in[0]); }},
      {"sum_1", [](const Inputs& in) { return sum(in[0], {1}); }},
      {"sum_02_keep",
       [](const Inputs& in) {
         return sum(in[0], {0, 2}, true);
       }},
      {"sum_neg",
       [](const Inputs& in) {
         return sum(in[0], {-1, -3});
       }},
      {"mean_all", [](const Inputs& in) { return mean(in[0]); }},
      {"mean_2_keep", [](const Inputs& in) { return mean(in[0], {2}, true); }},
      {"var_1_unbiased", [](const Inputs& in) { return var(in[0], {1}); }},
      {"var_12_biased_keep",
       [](const Inputs& in) {
         return var(in[0], {1, 2}, 0, true);
       }},
      {"sum_noncontig",
       [](const Inputs& in) {
         return sum(in[0].permute({2, 0, 1}), {0, 2});
       }},
      {"var_noncontig", [](const Inputs& in) { return var(in[0].transpose(0, 2), {1}, 0); }},
  };
  for (auto& [name, f] : cases) {
    SCOPED_TRACE(name);
    EXPECT_GRADCHECK(f, (Inputs{x}));
  }
}

TEST(Reduce, MaxMinAlongADim) {
  Tensor x = from_vector(std::vector<double>{3, 9, 1, 7, -2, 5, 8, 0, 4, 6, -1, 2}, {3, 4}, DType::f64);
  ValuesIndices mx = max(x, 1);
  EXPECT_EQ(mx.values.to_vector(), (std::vector<double>{9, 8, 6}));
  EXPECT_EQ(mx.indices.dtype(), DType::i64);
  EXPECT_EQ(mx.indices.to_vector(), (std::vector<double>{1, 2, 1}));
  ValuesIndices mn = min(x, 0, true);
  EXPECT_EQ(mn.values.shape(), (Shape{1, 4}));
  EXPECT_EQ(mn.values.to_vector(), (std::vector<double>{-2, 5, -1, 0}));
  EXPECT_EQ(mn.indices.to_vector(), (std::vector<double>{1, 1, 2, 1}));
  EXPECT_EQ(argmax(x, 0).to_vector(), (std::vector<double>{2, 0, 1, 0}));
  EXPECT_EQ(argmax(x, -1, true).shape(), (Shape{3, 1}));
  EXPECT_EQ(max(x).item(), 9.0);
  EXPECT_EQ(min(x).item(), -2.0);
  EXPECT_EQ(max(x.t(), 0).values.to_vector(), (std::vector<double>{9, 8, 6}));  // non-contiguous
  // NaN wins, as in PyTorch.
  Tensor n = from_vector(std::vector<double>{1, NAN, 3}, {3}, DType::f64);
  EXPECT_TRUE(std::isnan(max(n).item()));
  EXPECT_EQ(argmax(n, 0).item(), 1.0);
}

TEST(Reduce, GradcheckMaxMin) {
  // Random values are distinct, so the arg-extremes are unique and the functions are smooth nearby.
  Tensor x = random_leaf({3, 4, 2}, -1, 1, 2);
  std::vector<std::pair<const char*, Fn>> cases = {
      {"max_dim1", [](const Inputs& in) { return max(in[0], 1).values; }},
      {"min_dim2_keep", [](const Inputs& in) { return min(in[0], 2, true).values; }},
      {"max_dim0_noncontig",
       [](const Inputs& in) {
         return max(in[0].permute({1, 2, 0}), -1).values;
       }},
      {"global_max", [](const Inputs& in) { return max(in[0]); }},
      {"global_min", [](const Inputs& in) { return min(in[0].transpose(0, 1)); }},
  };
  for (auto& [name, f] : cases) {
    SCOPED_TRACE(name);
    EXPECT_GRADCHECK(f, (Inputs{x}));
  }
}

TEST(Reduce, GlobalMaxSplitsTheGradientOverTies) {
  Tensor x = from_vector(std::vector<double>{1, 5, 5, 2}, {4}, DType::f64).requires_grad_(true);
  max(x).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{0, 0.5, 0.5, 0}));
  Tensor y = from_vector(std::vector<double>{1, 5, 5, 2}, {4}, DType::f64).requires_grad_(true);
  max(y, 0).values.backward();  // along a dim the gradient goes to the reported index only
  EXPECT_EQ(y.grad().to_vector(), (std::vector<double>{0, 1, 0, 0}));
}

TEST(Reduce, ErrorsNameTheOp) {
  Tensor x = zeros({2, 3});
  std::string e = error_of([&] { sum(x, {2}); });
  EXPECT_TRUE(contains(e, "sum")) << e;
  e = error_of([&] { sum(x, {1, -1}); });
  EXPECT_TRUE(contains(e, "sum") && contains(e, "twice")) << e;
  e = error_of([&] { var(zeros({2, 1}), {1}); });
  EXPECT_TRUE(contains(e, "var")) << e;
  e = error_of([&] { max(zeros({2, 0}), 1); });
  EXPECT_TRUE(contains(e, "max")) << e;
  EXPECT_THROW(min(zeros({0})), Error);
  EXPECT_THROW(argmax(x, 3), Error);
}

// The layouts the CUDA sum reads in place (reduce_kernels.h): dims merged into alternating kept and reduced
// groups, size-1 dims dropped.
TEST(ReductionGroups, MergesAdjacentDimsOfTheSameKind) {
  auto groups = [](const Shape& shape, const std::vector<bool>& reduced) {
    std::vector<std::pair<int64_t, bool>> out;
    for (const ReduceGroup& g : reduction_groups(shape, reduced)) out.emplace_back(g.size, g.reduced);
    return out;
  };
  using G = std::vector<std::pair<int64_t, bool>>;
  // A bias gradient: [batch, tokens, features] summed over batch and tokens.
  EXPECT_EQ(groups({8, 16, 768}, {true, true, false}), (G{{128, true}, {768, false}}));
  // Batch-norm statistics: [N, C, H, W] over N, H, W.
  EXPECT_EQ(groups({4, 3, 5, 6}, {true, false, true, true}), (G{{4, true}, {3, false}, {30, true}}));
  // A middle dim, with size-1 dims anywhere.
  EXPECT_EQ(groups({3, 1, 40, 5, 1}, {false, true, true, false, false}),
            (G{{3, false}, {40, true}, {5, false}}));
  EXPECT_EQ(groups({1, 1}, {true, false}), G{});
}
