#include <gtest/gtest.h>

#include <cmath>

#include "layers/init.h"

using namespace dgpipe;
using engine::Tensor;

TEST(Init, FansOfLinearAndConvWeights) {
  EXPECT_EQ(layers::init::fan_in(engine::empty({20, 50})), 50);
  EXPECT_EQ(layers::init::fan_out(engine::empty({20, 50})), 20);
  EXPECT_EQ(layers::init::fan_in(engine::empty({8, 4, 3, 3})), 36);
  EXPECT_EQ(layers::init::fan_out(engine::empty({8, 4, 3, 3})), 72);
  EXPECT_THROW(layers::init::fan_in(engine::empty({5})), engine::Error);
}

TEST(Init, DistributionsHaveTheRequestedMoments) {
  engine::Generator gen(3);
  Tensor t = engine::empty({200, 250});
  layers::init::kaiming_uniform_(t, std::sqrt(5.0), &gen);  // U(-1/sqrt(250), 1/sqrt(250))
  double bound = 1.0 / std::sqrt(250.0);
  EXPECT_LE(engine::max(engine::abs(t)).item(), bound);
  EXPECT_NEAR(engine::var(t, {0, 1}).item(), bound * bound / 3.0, 0.03 * bound * bound);
  layers::init::kaiming_normal_fan_out_(t, &gen);  // std sqrt(2/200)
  EXPECT_NEAR(std::sqrt(engine::var(t, {0, 1}).item()), std::sqrt(2.0 / 200), 0.002);
  layers::init::normal_(t, 1.5, 0.02, &gen);
  EXPECT_NEAR(engine::mean(t).item(), 1.5, 0.001);
  layers::init::uniform_(t, 2.0, 3.0, &gen);
  EXPECT_GE(engine::min(t).item(), 2.0);
  EXPECT_LT(engine::max(t).item(), 3.0);
  layers::init::constant_(t, 0.25);
  EXPECT_EQ(engine::max(t).item(), 0.25);
  // same seed, same values
  engine::Generator g1(9), g2(9);
  Tensor a = engine::empty({10}), b = engine::empty({10});
  layers::init::normal_(a, 0, 1, &g1);
  layers::init::normal_(b, 0, 1, &g2);
  EXPECT_EQ(a.to_vector(), b.to_vector());
}
