#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "engine/ops.h"
#include "engine/optim/adamw.h"
#include "support/golden_json.h"
#include "support/optim_golden.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;
using nlohmann::json;

namespace {

AdamWOptions golden_options(const json& golden) {
  const json& c = golden["adamw"]["config"];
  AdamWOptions o;
  o.lr = c["lr"];
  o.beta1 = c["beta1"];
  o.beta2 = c["beta2"];
  o.eps = c["eps"];
  o.weight_decay = c["weight_decay"];
  return o;
}

}  // namespace

TEST(AdamW, MatchesPyTorchWithWeightDecayAndASkippedParameter) {
  json golden = load_golden_json("optim.json");
  std::vector<Tensor> params = golden_params(golden);
  AdamW opt(params, golden_options(golden));
  replay_golden_steps(golden, "adamw", params, opt);
  // Parameter 1 had no gradient on one of the three steps: its own step count (bias correction) is 2.
  auto state = opt.state_dict();
  EXPECT_EQ(state.at("state.0.step").item(), 3.0);
  EXPECT_EQ(state.at("state.1.step").item(), 2.0);
  EXPECT_EQ(state.at("step").item(), 3.0);
  EXPECT_EQ(state.count("state.0.exp_avg"), 1u);
  EXPECT_EQ(state.count("state.0.exp_avg_sq"), 1u);
}

TEST(AdamW, FirstStepMatchesTheClosedForm) {
  // After one step m = (1-b1) g, v = (1-b2) g^2, so m/(1-b1) / (sqrt(v/(1-b2)) + eps) = g / (|g| + eps):
  // every element moves by lr * sign(g) (plus the decoupled decay).
  Tensor p = from_vector(std::vector<double>{2.0, -1.0, 0.0}, {3}, DType::f64);
  p.requires_grad_();
  p.set_grad(from_vector(std::vector<double>{0.3, -4.0, 1e-3}, {3}, DType::f64));
  AdamWOptions o;
  o.lr = 0.1;
  o.weight_decay = 0.5;
  o.eps = 0.0;
  AdamW opt({p}, o);
  opt.step();
  std::vector<double> got = p.to_vector();
  EXPECT_NEAR(got[0], 2.0 * (1 - 0.05) - 0.1, 1e-12);
  EXPECT_NEAR(got[1], -1.0 * (1 - 0.05) + 0.1, 1e-12);
  EXPECT_NEAR(got[2], -0.1, 1e-12);
}

TEST(AdamW, NoDecayGroupIsNotDecayed) {
  Tensor w = full({2, 2}, 1.0);
  w.requires_grad_();
  Tensor b = full({2}, 1.0);
  b.requires_grad_();
  AdamWOptions o;
  o.lr = 0.1;
  o.weight_decay = 0.5;
  AdamW opt(param_groups_no_decay({{"linear.weight", w}, {"linear.bias", b}}, 0.5), o);
  ASSERT_EQ(opt.param_groups().size(), 2u);
  // Zero gradients: only the decoupled decay moves a parameter.
  w.set_grad(zeros({2, 2}));
  b.set_grad(zeros({2}));
  opt.step();
  for (double v : w.to_vector()) EXPECT_FLOAT_EQ(v, 1.0f - 0.1f * 0.5f);
  for (double v : b.to_vector()) EXPECT_FLOAT_EQ(v, 1.0f);
}

TEST(AdamW, RejectsInvalidHyperParameters) {
  Tensor p = ones({2});
  p.requires_grad_();
  AdamWOptions o;
  o.beta1 = 1.0;
  try {
    AdamW opt({p}, o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("beta1"), std::string::npos) << e.what();
  }
  o.beta1 = 0.9;
  o.eps = -1.0;
  EXPECT_THROW(AdamW({p}, o), Error);
  // Invalid values set later through the groups are caught at step().
  AdamW opt({p}, AdamWOptions{});
  opt.param_groups()[0].hyper.beta2 = 1.5;
  p.set_grad(ones({2}));
  EXPECT_THROW(opt.step(), Error);
}

TEST(AdamW, StateRoundTripResumesIdentically) {
  json golden = load_golden_json("optim.json");
  std::vector<Tensor> a = golden_params(golden);
  AdamW opt_a(a, golden_options(golden));
  for (size_t s = 0; s < 2; ++s) {
    set_golden_grads(golden, a, s);
    opt_a.step();
  }
  std::vector<Tensor> b = detached_copies(a);
  AdamW opt_b(b, golden_options(golden));
  opt_b.load_state_dict(opt_a.state_dict());
  set_golden_grads(golden, a, 2);
  set_golden_grads(golden, b, 2);
  opt_a.step();
  opt_b.step();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].to_vector(), b[i].to_vector()) << "param " << i;
  // And the resumed run matches PyTorch's third step.
  std::vector<double> want = golden["adamw"]["after"][2][0].get<std::vector<double>>();
  std::vector<double> got = b[0].to_vector();
  for (size_t k = 0; k < got.size(); ++k) EXPECT_NEAR(got[k], want[k], 1e-6 + 1e-6 * std::abs(want[k]));
}

TEST(AdamW, LoadStateDictRejectsMismatches) {
  Tensor p = ones({3});
  p.requires_grad_();
  p.set_grad(ones({3}));
  AdamW opt({p}, AdamWOptions{});
  opt.step();
  auto state = opt.state_dict();

  Tensor q = ones({4});
  q.requires_grad_();
  AdamW other({q}, AdamWOptions{});
  try {
    other.load_state_dict(state);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("state.0.exp_avg"), std::string::npos) << what;
    EXPECT_NE(what.find("[4]"), std::string::npos) << what;
  }
  EXPECT_EQ(other.step_count(), 0);  // a failed load changes nothing

  auto extra = state;
  extra["state.7.exp_avg"] = ones({3});
  EXPECT_THROW(opt.load_state_dict(extra), Error);
  auto unknown = state;
  unknown["state.0.momentum_buffer"] = ones({3});  // an SGD buffer in an AdamW state
  EXPECT_THROW(opt.load_state_dict(unknown), Error);
  auto missing = state;
  missing.erase("step");
  EXPECT_THROW(opt.load_state_dict(missing), Error);
}

TEST(AdamW, CudaMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: skipped";
  AdamWOptions o;
  o.lr = 0.01;
  o.weight_decay = 0.1;
  auto state = expect_cuda_steps_match_cpu<AdamW>(o, 6);
  EXPECT_TRUE(state.at("state.0.exp_avg").is_cuda());
}
