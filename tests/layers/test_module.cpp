#include <gtest/gtest.h>

#include "layers/layers.h"
#include "support/gradcheck.h"

using namespace dgpipe;
using namespace dgpipe::layers;
using engine::Tensor;

namespace {
// conv -> bn -> relu, named as a torchvision Sequential would be, inside a parent with a head.
class Net : public Module {
 public:
  Net() {
    auto body = std::make_shared<Sequential>();
    Conv2dOptions o;
    o.kernel = 3;
    o.padding = 1;
    o.bias = false;
    body->push_back(std::make_shared<Conv2d>(3, 4, o));
    body->push_back(std::make_shared<BatchNorm2d>(4));
    body->push_back(ReLU());
    features = register_module("features", body);
    fc = register_module("fc", std::make_shared<Linear>(4, 2));
  }
  Tensor forward(const Tensor& x, const BlockContext& ctx) override {
    return fc->forward(engine::adaptive_avg_pool2d(features->forward(x, ctx), 1, 1).flatten(1), ctx);
  }
  std::string type_name() const override { return "Net"; }
  std::shared_ptr<Sequential> features;
  std::shared_ptr<Linear> fc;
};
}  // namespace

TEST(Module, NamesFollowPyTorchStateDictOrder) {
  auto net = std::make_shared<Net>();
  std::vector<std::string> names;
  for (auto& [n, t] : net->state_dict()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"features.0.weight", "features.1.weight", "features.1.bias",
                                             "features.1.running_mean", "features.1.running_var",
                                             "features.1.num_batches_tracked", "fc.weight", "fc.bias"}));
  EXPECT_EQ(net->named_parameters().size(), 5u);
  EXPECT_EQ(net->num_parameters(), 4 * 3 * 9 + 4 + 4 + 4 * 2 + 2);
  for (auto& p : net->parameters()) EXPECT_TRUE(p.requires_grad());
  for (auto& [n, b] : net->named_buffers()) EXPECT_FALSE(b.requires_grad()) << n;
}

TEST(Module, TrainEvalPropagatesToChildren) {
  auto net = std::make_shared<Net>();
  EXPECT_TRUE(net->features->is_training());
  net->eval();
  EXPECT_FALSE(net->is_training());
  EXPECT_FALSE((*net->features)[1]->is_training());
  net->train();
  EXPECT_TRUE((*net->features)[1]->is_training());
}

TEST(Module, StateDictRoundTripsThroughSafetensors) {
  auto a = std::make_shared<Net>();
  engine::manual_seed(99);
  auto b = std::make_shared<Net>();  // different init
  a->train();
  a->forward(engine::randn({2, 3, 5, 5}), {});  // moves running stats and the counter
  std::string path = ::testing::TempDir() + "module_roundtrip.safetensors";
  save_state_dict(*a, path);
  LoadReport r = load_state_dict_file(*b, path);
  EXPECT_EQ(r.loaded.size(), 8u);
  auto sa = a->state_dict(), sb = b->state_dict();
  for (size_t i = 0; i < sa.size(); ++i)
    EXPECT_EQ(sa[i].second.to_vector(), sb[i].second.to_vector()) << sa[i].first;
  EXPECT_EQ(sb[5].second.item(), 1.0);  // num_batches_tracked
  EXPECT_EQ(sb[5].second.dtype(), engine::DType::i64);
}

TEST(Module, LoadStateDictReportsMismatches) {
  auto net = std::make_shared<Net>();
  std::map<std::string, Tensor> sd;
  for (auto& [n, t] : net->state_dict()) sd[n] = t.detach().clone();
  sd.erase("fc.bias");
  sd["extra.weight"] = engine::zeros({1});
  try {
    net->load_state_dict(sd, true);
    FAIL() << "expected an error";
  } catch (const engine::Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("fc.bias"), std::string::npos) << what;
    EXPECT_NE(what.find("extra.weight"), std::string::npos) << what;
  }
  LoadReport r = net->load_state_dict(sd, false);
  EXPECT_EQ(r.missing, std::vector<std::string>{"fc.bias"});
  EXPECT_EQ(r.unexpected, std::vector<std::string>{"extra.weight"});
  sd["fc.weight"] = engine::zeros({3, 4});
  try {
    net->load_state_dict(sd, false);
    FAIL() << "expected a shape error";
  } catch (const engine::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[3,4]"), std::string::npos) << e.what();
  }
}

TEST(Module, ToKeepsHandlesAndZeroGradClears) {
  auto net = std::make_shared<Net>();
  Tensor w = net->fc->weight;
  net->to(engine::DType::f64);
  EXPECT_EQ(w.dtype(), engine::DType::f64);  // the layer's own handle changed in place
  EXPECT_TRUE(w.same(net->named_parameters()[3].second));
  EXPECT_EQ(net->named_buffers()[2].second.dtype(), engine::DType::i64);  // counter stays an integer
  Tensor y = net->forward(engine::randn({2, 3, 4, 4}, engine::DType::f64), {});
  engine::sum(y).backward();
  EXPECT_TRUE(w.grad().defined());
  net->zero_grad();
  EXPECT_FALSE(w.grad().defined());
}

TEST(Module, ReprListsTheTree) {
  auto net = std::make_shared<Net>();
  std::string r = net->repr();
  EXPECT_NE(r.find("features: Sequential"), std::string::npos) << r;
  EXPECT_NE(r.find("0: Conv2d(3->4, k=3, s=1, p=1, no bias)"), std::string::npos) << r;
  EXPECT_NE(r.find("fc: Linear(4->2)"), std::string::npos) << r;
}
