#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops.h"
#include "support/golden_json.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;

TEST(LayerNorm, MatchesPyTorchGoldens) {
  auto cases = load_golden_json("ops_nn.json").at("cases");
  {
    auto c = cases.at("layer_norm_last");
    Tensor x = golden_tensor(c.at("x"), DType::f32);
    Tensor w = golden_tensor(c.at("weight"), DType::f32);
    Tensor b = golden_tensor(c.at("bias"), DType::f32);
    Tensor y = layer_norm(x, c.at("normalized_shape").get<Shape>(), w, b, c.at("eps").get<double>());
    EXPECT_LT(max_rel_diff(y, golden_tensor(c.at("y"), DType::f32)), 1e-5);
  }
  {
    auto c = cases.at("layer_norm_last2_noaffine");
    Tensor x = golden_tensor(c.at("x"), DType::f32);
    Tensor y =
        layer_norm(x, c.at("normalized_shape").get<Shape>(), Tensor(), Tensor(), c.at("eps").get<double>());
    EXPECT_LT(max_rel_diff(y, golden_tensor(c.at("y"), DType::f32)), 1e-5);
  }
}

TEST(LayerNorm, RowsHaveZeroMeanAndUnitBiasedVariance) {
  Tensor x = add(mul(random_leaf({4, 16}, -1, 1, 3).detach(), 5.0), 2.0);
  Tensor y = layer_norm(x, {16}, Tensor(), Tensor(), 0.0);
  Tensor m = mean(y, {1});
  Tensor v = var(y, {1}, /*correction=*/0);
  for (double mv : m.to_vector()) EXPECT_NEAR(mv, 0.0, 1e-12);
  for (double vv : v.to_vector()) EXPECT_NEAR(vv, 1.0, 1e-12);  // biased variance, as PyTorch
}

TEST(LayerNorm, GradcheckLastDimWithAffine) {
  Tensor x = random_leaf({3, 5}, -2, 2, 11), w = random_leaf({5}, 0.5, 1.5, 12),
         b = random_leaf({5}, -1, 1, 13);
  auto f = [](const Inputs& in) { return layer_norm(in[0], {5}, in[1], in[2], 1e-5); };
  EXPECT_GRADCHECK(f, (Inputs{x, w, b}));
}

TEST(LayerNorm, GradcheckTwoTrailingDims) {
  Tensor x = random_leaf({2, 3, 4}, -2, 2, 21), w = random_leaf({3, 4}, 0.5, 1.5, 22),
         b = random_leaf({3, 4}, -1, 1, 23);
  auto f = [](const Inputs& in) { return layer_norm(in[0], {3, 4}, in[1], in[2], 1e-5); };
  EXPECT_GRADCHECK(f, (Inputs{x, w, b}));
}

TEST(LayerNorm, GradcheckAllDimsNoAffine) {
  Tensor x = random_leaf({2, 3}, -2, 2, 31);
  auto f = [](const Inputs& in) { return layer_norm(in[0], {2, 3}, Tensor(), Tensor(), 1e-5); };
  EXPECT_GRADCHECK(f, (Inputs{x}));
}

TEST(LayerNorm, GradcheckNonContiguousInputsAndOnlySomeParams) {
  // x is a transposed view, weight a strided slice; bias does not require grad.
  Tensor xt = random_leaf({6, 4}, -2, 2, 41), wbig = random_leaf({12}, 0.5, 1.5, 42);
  Tensor b = random_leaf({6}, -1, 1, 43).detach();
  auto f = [b](const Inputs& in) {
    Tensor x = in[0].t();                 // [4,6], not contiguous
    Tensor w = in[1].slice(0, 0, 12, 2);  // [6], stride 2
    return layer_norm(x, {6}, w, b, 1e-5);
  };
  EXPECT_GRADCHECK(f, (Inputs{xt, wbig}));
}

TEST(LayerNorm, BackwardGivesOnlyRequestedGradients) {
  Tensor x = random_leaf({3, 4}, -1, 1, 51);
  Tensor w = random_leaf({4}, 0.5, 1.5, 52).detach();
  Tensor b = random_leaf({4}, -1, 1, 53);
  sum(layer_norm(x, {4}, w, b, 1e-5)).backward();
  ASSERT_TRUE(x.grad().defined());
  ASSERT_TRUE(b.grad().defined());
  EXPECT_FALSE(w.grad().defined());
  for (double v : b.grad().to_vector()) EXPECT_NEAR(v, 3.0, 1e-12);  // db = sum over rows of dy
  // d/dx of sum(layer_norm(x) * w) with constant w: each row's gradient sums to zero.
  for (double v : sum(x.grad(), {1}).to_vector()) EXPECT_NEAR(v, 0.0, 1e-12);
}

TEST(LayerNorm, HalfInputComputesInFloat) {
  Tensor x = random_leaf({2, 8}, -3, 3, 61).detach().to(DType::f32);
  Tensor y32 = layer_norm(x, {8}, Tensor(), Tensor(), 1e-5);
  Tensor y16 = layer_norm(x.to(DType::f16), {8}, Tensor(), Tensor(), 1e-5);
  EXPECT_EQ(y16.dtype(), DType::f16);
  EXPECT_LT(max_rel_diff(y16.to(DType::f32), y32), 2e-3);
}

TEST(LayerNorm, ErrorsNameTheOpAndShapes) {
  Tensor x = zeros({2, 3, 4});
  std::string e = error_of([&] { layer_norm(x, {3}, Tensor(), Tensor(), 1e-5); });
  EXPECT_NE(e.find("layer_norm"), std::string::npos) << e;
  EXPECT_NE(e.find("[2,3,4]"), std::string::npos) << e;
  EXPECT_NE(e.find("[3]"), std::string::npos) << e;
  e = error_of([&] { layer_norm(x, {4}, zeros({5}), Tensor(), 1e-5); });
  EXPECT_NE(e.find("weight"), std::string::npos) << e;
  EXPECT_NE(e.find("[5]"), std::string::npos) << e;
  e = error_of([&] { layer_norm(x, {3, 4}, Tensor(), zeros({12}), 1e-5); });
  EXPECT_NE(e.find("bias"), std::string::npos) << e;
  EXPECT_THROW(layer_norm(x, {2, 3, 4, 5}, Tensor(), Tensor(), 1e-5), Error);
  EXPECT_THROW(layer_norm(x, {4}, zeros({4}, DType::f64), Tensor(), 1e-5), Error);
  EXPECT_THROW(layer_norm(zeros({2, 4}, DType::i32), {4}, Tensor(), Tensor(), 1e-5), Error);
}
