#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/ops.h"
#include "engine/optim/sgd.h"
#include "support/golden_json.h"
#include "support/optim_golden.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;
using nlohmann::json;

namespace {

// The options of golden problem `which` (its "config").
SGDOptions golden_options(const json& golden, const std::string& which) {
  const json& c = golden[which]["config"];
  SGDOptions o;
  o.lr = c["lr"];
  o.momentum = c["momentum"];
  o.dampening = c["dampening"];
  o.weight_decay = c["weight_decay"];
  o.nesterov = c["nesterov"];
  return o;
}

// Replays golden problem `which` with its options and checks the parameters after every step against PyTorch.
void replay(const json& golden, const std::string& which) {
  std::vector<Tensor> params = golden_params(golden);
  SGD opt(params, golden_options(golden, which));
  replay_golden_steps(golden, which, params, opt);
  EXPECT_EQ(opt.step_count(), static_cast<int64_t>(golden["grads"].size()));
}

}  // namespace

TEST(SGD, MatchesPyTorchWithNesterovMomentumAndWeightDecay) {
  json golden = load_golden_json("optim.json");
  ASSERT_TRUE(golden["sgd"]["config"]["nesterov"].get<bool>());
  replay(golden, "sgd");
}

TEST(SGD, MatchesPyTorchWithDampening) {
  json golden = load_golden_json("optim.json");
  replay(golden, "sgd_dampening");
}

TEST(SGD, PlainStepInDoubleAndFirstMomentumBufferIsTheGradient) {
  Tensor p = from_vector(std::vector<double>{1.0, -2.0, 0.5}, {3}, DType::f64);
  p.requires_grad_();
  p.set_grad(from_vector(std::vector<double>{0.25, 0.5, -1.0}, {3}, DType::f64));
  SGDOptions o;
  o.lr = 0.5;
  o.momentum = 0.9;
  o.dampening = 0.5;  // ignored on the first step: the buffer is a copy of the (decayed) gradient
  o.weight_decay = 0.1;
  SGD opt({p}, o);
  opt.step();
  // g = grad + 0.1 p = {0.35, 0.3, -0.95}; buf = g; p -= 0.5 g
  std::vector<double> want_buf{0.35, 0.3, -0.95};
  std::vector<double> got = p.to_vector();
  std::vector<double> init{1.0, -2.0, 0.5};
  for (size_t i = 0; i < 3; ++i) EXPECT_DOUBLE_EQ(got[i], init[i] - 0.5 * want_buf[i]);
  auto state = opt.state_dict();
  ASSERT_EQ(state.count("state.0.momentum_buffer"), 1u);
  std::vector<double> buf = state["state.0.momentum_buffer"].to_vector();
  for (size_t i = 0; i < 3; ++i) EXPECT_DOUBLE_EQ(buf[i], want_buf[i]);
  EXPECT_EQ(state["step"].item(), 1.0);
}

TEST(SGD, WithoutMomentumKeepsNoState) {
  Tensor p = ones({4});
  p.requires_grad_();
  p.set_grad(full({4}, 2.0));
  SGD opt({p}, SGDOptions{});
  opt.step();
  for (double v : p.to_vector()) EXPECT_FLOAT_EQ(v, 1.0f - 0.1f * 2.0f);
  EXPECT_EQ(opt.state_dict().count("state.0.momentum_buffer"), 0u);
}

TEST(SGD, RejectsInvalidHyperParameters) {
  Tensor p = ones({2});
  p.requires_grad_();
  SGDOptions bad;
  bad.nesterov = true;  // needs momentum
  EXPECT_THROW(SGD({p}, bad), Error);
  bad.momentum = 0.9;
  bad.dampening = 0.1;  // Nesterov needs zero dampening
  try {
    SGD opt({p}, bad);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Nesterov"), std::string::npos) << e.what();
  }
  SGDOptions negative;
  negative.lr = -1.0;
  EXPECT_THROW(SGD({p}, negative), Error);
}

TEST(SGD, ErrorsNameTheParameter) {
  Tensor a = ones({2});
  a.requires_grad_();
  Tensor b = ones({3}, DType::f16);
  b.requires_grad_();
  b.set_grad(ones({3}, DType::f16));
  SGD opt({a, b}, SGDOptions{});
  try {
    opt.step();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("SGD"), std::string::npos) << what;
    EXPECT_NE(what.find("parameter 1"), std::string::npos) << what;
    EXPECT_NE(what.find("f16"), std::string::npos) << what;
  }
  Tensor leaf = ones({2});
  leaf.requires_grad_();
  Tensor not_leaf = mul(leaf, 2.0);
  EXPECT_THROW(SGD({not_leaf}, SGDOptions{}), Error);
  EXPECT_THROW(SGD({leaf, leaf}, SGDOptions{}), Error);
  // a gradient of the wrong shape
  Tensor c = ones({2});
  c.requires_grad_();
  c.set_grad(ones({3}));
  SGD opt2({c}, SGDOptions{});
  EXPECT_THROW(opt2.step(), Error);
}

TEST(SGD, StateRoundTripResumesIdentically) {
  json golden = load_golden_json("optim.json");
  SGDOptions o;
  o.lr = 0.1;
  o.momentum = 0.9;
  o.nesterov = true;
  std::vector<Tensor> a = golden_params(golden);
  SGD opt_a(a, o);
  for (size_t s = 0; s < 2; ++s) {
    set_golden_grads(golden, a, s);
    opt_a.step();
  }
  // A second optimizer over copies of the parameters, restored from the first one's state.
  std::vector<Tensor> b = detached_copies(a);
  SGDOptions other = o;
  other.lr = 123.0;  // overwritten by the saved group lr
  SGD opt_b(b, other);
  opt_b.load_state_dict(opt_a.state_dict());
  EXPECT_EQ(opt_b.lr(), 0.1);
  EXPECT_EQ(opt_b.step_count(), 2);
  set_golden_grads(golden, a, 2);
  set_golden_grads(golden, b, 2);
  opt_a.step();
  opt_b.step();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].to_vector(), b[i].to_vector()) << "param " << i;
}

TEST(SGD, CudaMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: skipped";
  SGDOptions o;
  o.lr = 0.1;
  o.momentum = 0.9;
  o.weight_decay = 0.01;
  o.nesterov = true;
  expect_cuda_steps_match_cpu<SGD>(o, 5);
}
