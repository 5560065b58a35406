#include <gtest/gtest.h>

#include <limits>
#include <memory>

#include "engine/ops.h"
#include "engine/optim/loss_scaler.h"
#include "engine/optim/sgd.h"
#include "support/gradcheck.h"

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

namespace {
// An SGD over four gradients (f32 and f64) on `device`, the one at `bad` (if any) holding `value` once.
struct FourGrads {
  std::vector<Tensor> params;
  std::unique_ptr<SGD> opt;
};
FourGrads four_grads(Device device, int bad, double value) {
  FourGrads f;
  for (int i = 0; i < 4; ++i) {
    DType dtype = i == 2 ? DType::f64 : DType::f32;
    Tensor p = zeros({5}, TensorOptions(dtype, device));
    p.requires_grad_();
    std::vector<double> g = {1024.0 * i, -2048.0, 512.0, 0.0, 4096.0};
    if (i == bad) g[3] = value;
    p.set_grad(from_vector(g, {5}, TensorOptions(dtype, Device::cpu())).to(device));
    f.params.push_back(p);
  }
  f.opt = std::make_unique<SGD>(f.params, SGDOptions{});
  return f;
}

// The finite check is one reduction over all gradients on their device: a non-finite value in any of them is
// found, and every gradient is unscaled all the same.
void expect_finds_non_finite_anywhere(Device device) {
  for (int bad = -1; bad < 4; ++bad)
    for (double value : {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
      SCOPED_TRACE(device.str() + " bad gradient " + std::to_string(bad) + " value " + std::to_string(value));
      FourGrads f = four_grads(device, bad, value);
      LossScalerOptions so;
      so.init_scale = 1024.0;
      DynamicLossScaler scaler(so);
      EXPECT_EQ(scaler.unscale(*f.opt), bad < 0);
      for (int i = 0; i < 4; ++i) {
        std::vector<double> g = f.params[i].grad().to_vector();
        EXPECT_EQ(g[0], static_cast<double>(i));
        EXPECT_EQ(g[1], -2.0);
        if (i != bad) {
          EXPECT_EQ(g[3], 0.0);
        }
      }
    }
}

}  // namespace

TEST(LossScaler, FindsANonFiniteGradientWhereverItIsAndUnscalesEveryOne) {
  expect_finds_non_finite_anywhere(Device::cpu());
}

TEST(LossScaler, CudaFindsANonFiniteGradientWhereverItIs) {
  DGP_SKIP_WITHOUT_CUDA();
  expect_finds_non_finite_anywhere(Device::cuda(0));
}
