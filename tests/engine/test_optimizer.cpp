#include <gtest/gtest.h>

#include "engine/ops.h"
#include "engine/optim/sgd.h"

using namespace dgpipe::engine;

namespace {
Tensor leaf(const Shape& shape, double value) {
  Tensor t = full(shape, value);
  t.requires_grad_();
  return t;
}
}  // namespace

TEST(Optimizer, DefaultNoDecayPredicate) {
  Tensor matrix = zeros({4, 4});
  Tensor vector = zeros({4});
  Tensor conv = zeros({8, 3, 3, 3});
  EXPECT_FALSE(default_no_decay("encoder.layer.0.attention.self.query.weight", matrix));
  EXPECT_TRUE(default_no_decay("encoder.layer.0.attention.self.query.bias", vector));
  EXPECT_TRUE(default_no_decay("anything", vector));  // every 1-D parameter
  EXPECT_TRUE(default_no_decay("encoder.layer.0.output.LayerNorm.weight", matrix));
  EXPECT_TRUE(default_no_decay("layer1.0.bn2.weight", matrix));
  EXPECT_TRUE(default_no_decay("bn1.weight", matrix));
  EXPECT_TRUE(default_no_decay("features.norm5.weight", matrix));
  EXPECT_FALSE(default_no_decay("layer1.0.conv1.weight", conv));
  EXPECT_FALSE(default_no_decay("embeddings.word_embeddings.weight", matrix));  // "bn" inside a word
}

TEST(Optimizer, ParamGroupsNoDecaySplitsAndKeepsOrder) {
  Tensor w1 = leaf({3, 2}, 1.0), b1 = leaf({3}, 1.0), w2 = leaf({2, 3}, 1.0), ln = leaf({2, 2}, 1.0);
  auto groups = param_groups_no_decay(
      {{"fc1.weight", w1}, {"fc1.bias", b1}, {"fc2.weight", w2}, {"LayerNorm.weight", ln}}, 0.01);
  ASSERT_EQ(groups.size(), 2u);
  ASSERT_EQ(groups[0].params.size(), 2u);
  EXPECT_TRUE(groups[0].params[0].same(w1));
  EXPECT_TRUE(groups[0].params[1].same(w2));
  EXPECT_EQ(*groups[0].weight_decay, 0.01);
  ASSERT_EQ(groups[1].params.size(), 2u);
  EXPECT_TRUE(groups[1].params[0].same(b1));
  EXPECT_TRUE(groups[1].params[1].same(ln));
  EXPECT_EQ(*groups[1].weight_decay, 0.0);
  // A custom predicate; an empty group is left out.
  auto all_decayed = param_groups_no_decay({{"fc1.weight", w1}, {"fc1.bias", b1}}, 0.1,
                                           [](const std::string&, const Tensor&) { return false; });
  ASSERT_EQ(all_decayed.size(), 1u);
  EXPECT_EQ(all_decayed[0].params.size(), 2u);
}

TEST(Optimizer, GroupsHaveTheirOwnHyperParameters) {
  Tensor a = leaf({2}, 1.0), b = leaf({2}, 1.0);
  ParamGroupSpec fast, slow;
  fast.params = {a};
  fast.lr = 1.0;
  slow.params = {b};  // takes the default lr
  SGDOptions defaults;
  defaults.lr = 0.25;
  SGD opt(std::vector<ParamGroupSpec>{fast, slow}, defaults);
  EXPECT_EQ(opt.num_params(), 2);
  EXPECT_EQ(opt.lr(0), 1.0);
  EXPECT_EQ(opt.lr(1), 0.25);
  a.set_grad(ones({2}));
  b.set_grad(ones({2}));
  opt.step();
  EXPECT_EQ(a.to_vector(), (std::vector<double>{0.0, 0.0}));
  EXPECT_EQ(b.to_vector(), (std::vector<double>{0.75, 0.75}));
  opt.set_lr(0.5);
  EXPECT_EQ(opt.lr(0), 0.5);
  EXPECT_EQ(opt.lr(1), 0.5);
  EXPECT_THROW(opt.lr(2), Error);
  EXPECT_THROW(opt.set_lr(-1.0), Error);
}

TEST(Optimizer, ZeroGradDropsGradientsAndStepSkipsThem) {
  Tensor a = leaf({2}, 1.0), b = leaf({2}, 1.0);
  SGD opt({a, b}, SGDOptions{});
  a.set_grad(ones({2}));
  b.set_grad(ones({2}));
  opt.zero_grad();
  EXPECT_FALSE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
  opt.step();  // nothing to do, nothing changes
  EXPECT_EQ(a.to_vector(), (std::vector<double>{1.0, 1.0}));
  // Gradients from a real backward pass reach the optimizer.
  Tensor loss = sum(mul(a, a));
  loss.backward();
  opt.step();  // a -= 0.1 * 2a
  for (double v : a.to_vector()) EXPECT_FLOAT_EQ(v, 0.8f);
  EXPECT_EQ(b.to_vector(), (std::vector<double>{1.0, 1.0}));
}

TEST(Optimizer, RejectsDuplicatesAcrossGroupsAndEmptyGroupLists) {
  Tensor a = leaf({2}, 1.0);
  ParamGroupSpec g1, g2;
  g1.params = {a};
  g2.params = {a};
  try {
    SGD opt(std::vector<ParamGroupSpec>{g1, g2}, SGDOptions{});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("two groups"), std::string::npos) << e.what();
  }
  EXPECT_THROW(SGD(std::vector<ParamGroupSpec>{}, SGDOptions{}), Error);
  EXPECT_THROW(SGD(std::vector<Tensor>{Tensor()}, SGDOptions{}), Error);
}

TEST(Optimizer, StateDictRecordsGroupHyperParameters) {
  Tensor a = leaf({2}, 1.0);
  SGDOptions o;
  o.lr = 0.3;
  o.weight_decay = 0.02;
  SGD opt({a}, o);
  auto state = opt.state_dict();
  EXPECT_DOUBLE_EQ(state.at("param_groups.0.lr").item(), 0.3);
  EXPECT_DOUBLE_EQ(state.at("param_groups.0.weight_decay").item(), 0.02);
  EXPECT_EQ(state.at("step").item(), 0.0);
  auto bad = state;
  bad["param_groups.3.lr"] = full({}, 1.0, DType::f64);
  EXPECT_THROW(opt.load_state_dict(bad), Error);
  auto odd = state;
  odd["something.else"] = full({}, 1.0);
  EXPECT_THROW(opt.load_state_dict(odd), Error);
}
