#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/ops.h"
#include "engine/optim/lr_schedule.h"
#include "engine/optim/sgd.h"
#include "support/golden_json.h"

using namespace dgpipe::engine;
using dgpipe::testing::load_golden_json;
using nlohmann::json;

namespace {

void expect_trace(const LRSchedule& s, const json& golden, const char* name) {
  std::vector<double> lrs = golden["lrs"].get<std::vector<double>>();
  ASSERT_FALSE(lrs.empty());
  for (size_t t = 0; t < lrs.size(); ++t)
    EXPECT_NEAR(s.lr(static_cast<int64_t>(t)), lrs[t], 1e-12 + 1e-12 * std::abs(lrs[t]))
        << name << " at t=" << t;
}

}  // namespace

TEST(LRSchedule, CosineWithWarmupMatchesTransformers) {
  json g = load_golden_json("optim.json")["schedules"]["cosine"];
  expect_trace(LRSchedule::cosine_with_warmup(g["base_lr"], g["warmup"], g["total"]), g, "cosine");
}

TEST(LRSchedule, PolynomialWithWarmupMatchesTransformers) {
  json g = load_golden_json("optim.json")["schedules"]["polynomial"];
  expect_trace(
      LRSchedule::polynomial_with_warmup(g["base_lr"], g["warmup"], g["total"], g["lr_end"], g["power"]), g,
      "polynomial");
}

TEST(LRSchedule, LinearWithWarmupMatchesTransformers) {
  json g = load_golden_json("optim.json")["schedules"]["linear"];
  expect_trace(LRSchedule::linear_with_warmup(g["base_lr"], g["warmup"], g["total"]), g, "linear");
}

TEST(LRSchedule, StepDecayMatchesStepLR) {
  json g = load_golden_json("optim.json")["schedules"]["step"];
  expect_trace(LRSchedule::step_decay(g["base_lr"], g["step_size"], g["gamma"]), g, "step");
}

TEST(LRSchedule, ConstantAndShapeOfWarmup) {
  LRSchedule c = LRSchedule::constant(0.3);
  EXPECT_EQ(c.lr(0), 0.3);
  EXPECT_EQ(c.lr(1000000), 0.3);
  LRSchedule cos = LRSchedule::cosine_with_warmup(1.0, 10, 110);
  EXPECT_EQ(cos.lr(0), 0.0);
  EXPECT_DOUBLE_EQ(cos.lr(5), 0.5);
  EXPECT_DOUBLE_EQ(cos.lr(10), 1.0);
  EXPECT_NEAR(cos.lr(60), 0.5, 1e-12);  // half-way through the decay
  EXPECT_NEAR(cos.lr(110), 0.0, 1e-12);
  // No warm-up: the first step runs at the full rate.
  EXPECT_EQ(LRSchedule::linear_with_warmup(0.1, 0, 10).lr(0), 0.1);
  EXPECT_EQ(LRSchedule::linear_with_warmup(0.1, 0, 10).lr(20), 0.0);
}

TEST(LRSchedule, ApplySetsEveryGroup) {
  Tensor a = ones({1}), b = ones({1});
  a.requires_grad_();
  b.requires_grad_();
  ParamGroupSpec g1, g2;
  g1.params = {a};
  g2.params = {b};
  g2.lr = 5.0;
  SGD opt(std::vector<ParamGroupSpec>{g1, g2}, SGDOptions{});
  LRSchedule s = LRSchedule::step_decay(0.8, 2, 0.5);
  EXPECT_DOUBLE_EQ(s.apply(opt, 5), 0.2);
  EXPECT_DOUBLE_EQ(opt.lr(0), 0.2);
  EXPECT_DOUBLE_EQ(opt.lr(1), 0.2);
}

TEST(LRSchedule, RejectsInvalidArguments) {
  EXPECT_THROW(LRSchedule::cosine_with_warmup(0.1, 20, 10), Error);  // warm-up longer than the run
  EXPECT_THROW(LRSchedule::linear_with_warmup(0.1, -1, 10), Error);
  EXPECT_THROW(LRSchedule::polynomial_with_warmup(0.1, 0, 10, 0.5), Error);  // lr_end above the base lr
  EXPECT_THROW(LRSchedule::step_decay(0.1, 0, 0.5), Error);
  EXPECT_THROW(LRSchedule::constant(-1.0), Error);
  EXPECT_THROW(LRSchedule::constant(0.1).lr(-1), Error);
  EXPECT_EQ(LRSchedule::cosine_with_warmup(0.5, 1, 9).describe(), "cosine(lr=0.5, warmup=1, total=9)");
}
