#include <gtest/gtest.h>

#include <limits>

#include "engine/ops.h"
#include "engine/optim/loss_scaler.h"
#include "engine/optim/sgd.h"

using namespace dgpipe::engine;

namespace {
Tensor leaf(std::vector<double> values) {
  Tensor t = from_vector(values, {static_cast<int64_t>(values.size())});
  t.requires_grad_();
  return t;
}
}  // namespace

TEST(LossScaler, ScalesTheLossAndUnscalesTheGradients) {
  Tensor w = leaf({1.0, 2.0});
  SGDOptions o;
  o.lr = 1.0;
  SGD opt({w}, o);
  DynamicLossScaler scaler;
  EXPECT_EQ(scaler.scale_value(), 65536.0);
  Tensor loss = sum(mul(w, w));  // d/dw = 2w
  Tensor scaled = scaler.scale(loss);
  EXPECT_DOUBLE_EQ(scaled.item(), 5.0 * 65536.0);
  scaled.backward();
  EXPECT_DOUBLE_EQ(w.grad().to_vector()[0], 2.0 * 65536.0);
  EXPECT_TRUE(scaler.unscale(opt));
  EXPECT_EQ(w.grad().to_vector(), (std::vector<double>{2.0, 4.0}));
  EXPECT_THROW(scaler.unscale(opt), Error);  // twice in one iteration would divide twice
  EXPECT_TRUE(scaler.step(opt));             // does not unscale again
  EXPECT_EQ(w.to_vector(), (std::vector<double>{-1.0, -2.0}));
  scaler.update();
  EXPECT_EQ(scaler.scale_value(), 65536.0);
  EXPECT_EQ(scaler.growth_tracker(), 1);
}

TEST(LossScaler, SkipsTheStepAndBacksOffOnInfOrNan) {
  for (double bad : {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
    Tensor w = leaf({1.0, 2.0});
    Tensor v = leaf({3.0});
    SGD opt({w, v}, SGDOptions{});
    LossScalerOptions so;
    so.init_scale = 1024.0;
    DynamicLossScaler scaler(so);
    w.set_grad(from_vector(std::vector<double>{1.0, 1.0}, {2}));
    v.set_grad(from_vector(std::vector<double>{bad}, {1}));
    EXPECT_FALSE(scaler.step(opt));
    EXPECT_EQ(w.to_vector(), (std::vector<double>{1.0, 2.0}))
        << "a skipped step must not touch any parameter";
    EXPECT_EQ(v.to_vector(), (std::vector<double>{3.0}));
    EXPECT_EQ(opt.step_count(), 0);
    scaler.update();
    EXPECT_EQ(scaler.scale_value(), 512.0);
    EXPECT_EQ(scaler.skipped_steps(), 1);
  }
}

TEST(LossScaler, GrowsAfterGrowthIntervalGoodSteps) {
  Tensor w = leaf({1.0});
  SGD opt({w}, SGDOptions{});
  LossScalerOptions so;
  so.init_scale = 8.0;
  so.growth_interval = 3;
  DynamicLossScaler scaler(so);
  auto iteration = [&](double grad) {
    w.set_grad(full({1}, grad));
    bool stepped = scaler.step(opt);
    scaler.update();
    return stepped;
  };
  EXPECT_TRUE(iteration(1.0));
  EXPECT_TRUE(iteration(1.0));
  EXPECT_EQ(scaler.scale_value(), 8.0);
  EXPECT_TRUE(iteration(1.0));
  EXPECT_EQ(scaler.scale_value(), 16.0);  // third good step in a row
  EXPECT_EQ(scaler.growth_tracker(), 0);
  EXPECT_TRUE(iteration(1.0));
  EXPECT_FALSE(iteration(std::numeric_limits<double>::infinity()));
  EXPECT_EQ(scaler.scale_value(), 8.0);  // backoff resets the good-step count
  EXPECT_EQ(scaler.growth_tracker(), 0);
  EXPECT_TRUE(iteration(1.0));
  EXPECT_TRUE(iteration(1.0));
  EXPECT_EQ(scaler.scale_value(), 8.0);
  EXPECT_EQ(opt.step_count(), 6);
}

TEST(LossScaler, StateRoundTripAndMisuse) {
  LossScalerOptions so;
  so.init_scale = 256.0;
  DynamicLossScaler a(so);
  Tensor w = leaf({1.0});
  SGD opt({w}, SGDOptions{});
  w.set_grad(full({1}, 1.0));
  a.step(opt);
  a.update();
  DynamicLossScaler b;
  b.load_state_dict(a.state_dict());
  EXPECT_EQ(b.scale_value(), 256.0);
  EXPECT_EQ(b.growth_tracker(), 1);
  EXPECT_THROW(b.update(), Error);  // update() without step()
  EXPECT_THROW(b.load_state_dict({{"scale", full({}, -1.0, DType::f64)}, {"growth_tracker", full({}, 0.0)}}),
               Error);
  EXPECT_THROW(DynamicLossScaler(LossScalerOptions{65536.0, 0.5, 0.5, 2000, true}), Error);  // growth <= 1
}

TEST(LossScaler, DisabledIsAPassThrough) {
  LossScalerOptions so;
  so.enabled = false;
  DynamicLossScaler scaler(so);
  EXPECT_EQ(scaler.scale_value(), 1.0);
  Tensor w = leaf({1.0});
  SGD opt({w}, SGDOptions{});
  Tensor loss = sum(w);
  EXPECT_TRUE(scaler.scale(loss).same(loss));
  w.set_grad(full({1}, 2.0));
  EXPECT_TRUE(scaler.step(opt));
  scaler.update();
  EXPECT_FLOAT_EQ(static_cast<float>(w.to_vector()[0]), 0.8f);
}
