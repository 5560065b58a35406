// batch_norm2d: PyTorch goldens (train output, updated running stats, eval output), hand-checked running-stat
// updates, finite-difference gradients in train and eval mode (with and without affine, strided inputs),
// errors.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/ops.h"
#include "support/golden_json.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;

namespace {

// Written by scripts/goldens_conv_pool_bn.py.
const char* const kGoldens = "ops_conv_pool_bn.json";

constexpr double kMomentum = 0.1, kEps = 1e-5;

}  // namespace

TEST(BatchNorm, MatchesPyTorchTrainThenEval) {
  const nlohmann::json& c = golden_case(kGoldens, "batch_norm");
  const double momentum = c.at("params").at("momentum"), eps = c.at("params").at("eps");
  for (DType dt : {DType::f64, DType::f32}) {
    Tensor w = golden_tensor(c.at("weight"), dt), b = golden_tensor(c.at("bias"), dt);
    Tensor rm = golden_tensor(c.at("running_mean"), dt), rv = golden_tensor(c.at("running_var"), dt);
    Tensor y = batch_norm2d(golden_tensor(c.at("input"), dt), w, b, rm, rv, true, momentum, eps);
    EXPECT_LT(max_rel_diff(y, golden_tensor(c.at("output_train"), DType::f64)), 1e-5) << dtype_name(dt);
    EXPECT_LT(max_rel_diff(rm, golden_tensor(c.at("running_mean_after"), DType::f64)), 1e-5)
        << dtype_name(dt);
    EXPECT_LT(max_rel_diff(rv, golden_tensor(c.at("running_var_after"), DType::f64)), 1e-5) << dtype_name(dt);
    Tensor ye = batch_norm2d(golden_tensor(c.at("eval_input"), dt), w, b, rm, rv, false, momentum, eps);
    EXPECT_LT(max_rel_diff(ye, golden_tensor(c.at("output_eval"), DType::f64)), 1e-5) << dtype_name(dt);
    Tensor yn = batch_norm2d(golden_tensor(c.at("input"), dt), Tensor(), Tensor(), Tensor(), Tensor(), true,
                             momentum, eps);
    EXPECT_LT(max_rel_diff(yn, golden_tensor(c.at("output_train_noaffine"), DType::f64)), 1e-5)
        << dtype_name(dt);
  }
}

TEST(BatchNorm, RunningStatsUpdateByHand) {
  // Channel 0 holds {1,2,3,4}, channel 1 holds {10,10,10,14}, spread over N=2, H*W=2.
  Tensor x = from_vector(std::vector<double>{1, 2, 10, 10, 3, 4, 10, 14}, {2, 2, 1, 2}, DType::f64);
  Tensor rm = from_vector(std::vector<double>{0, 1}, {2}, DType::f64);
  Tensor rv = from_vector(std::vector<double>{1, 2}, {2}, DType::f64);
  Tensor y = batch_norm2d(x, Tensor(), Tensor(), rm, rv, true, 0.25, 0.0);
  // means 2.5 and 11; biased vars 1.25 and 3, unbiased 5/3 and 4.
  std::vector<double> m = rm.to_vector(), v = rv.to_vector();
  EXPECT_DOUBLE_EQ(m[0], 0.75 * 0 + 0.25 * 2.5);
  EXPECT_DOUBLE_EQ(m[1], 0.75 * 1 + 0.25 * 11);
  EXPECT_DOUBLE_EQ(v[0], 0.75 * 1 + 0.25 * (5.0 / 3.0));
  EXPECT_DOUBLE_EQ(v[1], 0.75 * 2 + 0.25 * 4);
  // Normalised with the biased variance: (1 - 2.5) / sqrt(1.25).
  EXPECT_NEAR(y.to_vector()[0], -1.5 / std::sqrt(1.25), 1e-12);
  // f32 running stats are updated from an f64 input too (buffers keep their own dtype).
  Tensor rm32 = zeros({2}), rv32 = ones({2});
  batch_norm2d(x, Tensor(), Tensor(), rm32, rv32, true, 0.5, 0.0);
  EXPECT_FLOAT_EQ(static_cast<float>(rm32.to_vector()[1]), 5.5f);
  EXPECT_FLOAT_EQ(static_cast<float>(rv32.to_vector()[1]), 2.5f);
  // Eval leaves them alone.
  std::vector<double> before = rm.to_vector();
  batch_norm2d(x, Tensor(), Tensor(), rm, rv, false, 0.25, 1e-5);
  EXPECT_EQ(rm.to_vector(), before);
}

TEST(BatchNorm, RunningStatsThroughStridedView) {
  // Running stats that are a strided view of a bigger buffer are updated in place, every other element.
  Tensor buf = zeros({4}, DType::f64);
  Tensor rm = buf.slice(0, 0, 4, 2);
  Tensor rv = ones({2}, DType::f64);
  Tensor x = from_vector(std::vector<double>{1, 3, 5, 7}, {2, 2}, DType::f64);  // [N=2, C=2]
  batch_norm2d(x, Tensor(), Tensor(), rm, rv, true, 1.0, 0.0);
  EXPECT_EQ(buf.to_vector(), (std::vector<double>{3, 0, 5, 0}));
}

TEST(BatchNorm, GradTraining) {
  Tensor x = random_leaf({3, 2, 3, 2}, -2, 2, 41), w = random_leaf({2}, 0.5, 1.5, 42),
         b = random_leaf({2}, -1, 1, 43);
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) {
        return batch_norm2d(in[0], in[1], in[2], Tensor(), Tensor(), true, kMomentum, kEps);
      },
      std::vector<Tensor>({x, w, b}));
  // With running stats being updated on every call: the output must not depend on them in training.
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) {
        Tensor rm = zeros({2}, DType::f64), rv = ones({2}, DType::f64);
        return batch_norm2d(in[0], in[1], in[2], rm, rv, true, kMomentum, kEps);
      },
      std::vector<Tensor>({x, w, b}));
}

TEST(BatchNorm, GradTrainingNoAffine) {
  Tensor x = random_leaf({4, 3, 2, 2}, -2, 2, 44);
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) {
        return batch_norm2d(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true, kMomentum, kEps);
      },
      std::vector<Tensor>({x}));
}

TEST(BatchNorm, GradEval) {
  Tensor x = random_leaf({2, 3, 3, 3}, -2, 2, 45), w = random_leaf({3}, 0.5, 1.5, 46),
         b = random_leaf({3}, -1, 1, 47);
  Tensor rm = from_vector(std::vector<double>{0.1, -0.3, 0.5}, {3}, DType::f64);
  Tensor rv = from_vector(std::vector<double>{0.8, 1.5, 2.0}, {3}, DType::f64);
  EXPECT_GRADCHECK(
      [rm, rv](const std::vector<Tensor>& in) {
        return batch_norm2d(in[0], in[1], in[2], rm, rv, false, kMomentum, kEps);
      },
      std::vector<Tensor>({x, w, b}));
  // Eval is affine in x: the input gradient is exactly g * w / sqrt(rv + eps).
  Tensor x2 = random_leaf({1, 3, 1, 1}, -1, 1, 48);
  Tensor y = batch_norm2d(x2, w.detach(), Tensor(), rm, rv, false, kMomentum, kEps);
  y.backward(ones_like(y));
  EXPECT_NEAR(x2.grad().to_vector()[1], w.to_vector()[1] / std::sqrt(1.5 + kEps), 1e-12);
}

TEST(BatchNorm, GradNonContiguousAndOtherRanks) {
  Tensor x_nhwc = random_leaf({2, 3, 2, 3}, -2, 2, 49), w = random_leaf({3}, 0.5, 1.5, 50);
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) {
        Tensor x = in[0].permute({0, 3, 1, 2});
        return batch_norm2d(x, in[1], Tensor(), Tensor(), Tensor(), true, kMomentum, kEps);
      },
      std::vector<Tensor>({x_nhwc, w}));
  Tensor x2 = random_leaf({5, 4}, -2, 2, 51);  // [N,C] as BatchNorm1d
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) {
        return batch_norm2d(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true, kMomentum, kEps);
      },
      std::vector<Tensor>({x2}));
}

TEST(BatchNorm, TrainingOutputIsNormalised) {
  Tensor x = add(mul(random_leaf({8, 2, 4, 4}, -1, 1, 52).detach(), 3.0), 5.0);
  Tensor y = batch_norm2d(x.to(DType::f32), Tensor(), Tensor(), Tensor(), Tensor(), true, kMomentum, kEps);
  std::vector<double> mu = mean(y, {0, 2, 3}).to_vector(), var_b = var(y, {0, 2, 3}, 0).to_vector();
  for (int c = 0; c < 2; ++c) {
    EXPECT_NEAR(mu[c], 0.0, 1e-5);
    EXPECT_NEAR(var_b[c], 1.0, 1e-3);
  }
}

TEST(BatchNorm, ErrorsNameOpAndShapes) {
  Tensor x = zeros({2, 3, 4, 4});
  std::string msg =
      error_of([&] { batch_norm2d(x, ones({4}), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5); });
  EXPECT_NE(msg.find("batch_norm2d"), std::string::npos) << msg;
  EXPECT_NE(msg.find("weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2,3,4,4]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[4]"), std::string::npos) << msg;
  EXPECT_THROW(batch_norm2d(x, ones({4}), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5), Error);

  msg = error_of([&] { batch_norm2d(x, Tensor(), Tensor(), Tensor(), Tensor(), false, 0.1, 1e-5); });
  EXPECT_NE(msg.find("eval"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2,3,4,4]"), std::string::npos) << msg;

  msg = error_of([&] {
    batch_norm2d(zeros({1, 3, 1, 1}), Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5);
  });
  EXPECT_NE(msg.find("more than 1 value per channel"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[1,3,1,1]"), std::string::npos) << msg;

  msg = error_of(
      [&] { batch_norm2d(x, ones({3}, DType::f64), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5); });
  EXPECT_NE(msg.find("dtype"), std::string::npos) << msg;

  msg = error_of([&] { batch_norm2d(x, Tensor(), Tensor(), zeros({3}), Tensor(), true, 0.1, 1e-5); });
  EXPECT_NE(msg.find("running_var"), std::string::npos) << msg;

  msg = error_of([&] { batch_norm2d(zeros({4}), Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5); });
  EXPECT_NE(msg.find("batch_norm2d"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[4]"), std::string::npos) << msg;
}
