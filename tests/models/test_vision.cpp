#include <gtest/gtest.h>

#include <cmath>

#include "engine/cuda.h"
#include "golden.h"
#include "models/registry.h"
#include "models/vision.h"
#include "support/gradcheck.h"

using namespace dgpipe;
using namespace dgpipe::models;
using dgpipe::testing::expect_matches_golden;
using dgpipe::testing::source_path;
using engine::Device;

namespace {

// The reduced sizes of scripts/goldens_models.py (TINY_MBV2, TINY_RESNET, TINY_VGG).
ModelPtr tiny_mobilenetv2() {
  MobileNetV2Config c;
  c.width_mult = 0.25;
  c.last_channel = 64;
  c.stages = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 2, 2}, {6, 64, 1, 2}};
  c.dropout = 0.0;
  return make_mobilenetv2(c);
}
ModelPtr tiny_resnet18() {
  ResNet18Config c;
  c.base_width = 4;
  return make_resnet18(c);
}
ModelPtr tiny_vgg11() {
  VGG11Config c;
  c.layers = {4, -1, 8, -1, 16, 16, -1, 32, 32, -1, 32, 32, -1};
  return make_vgg11_bn(c);
}

// The goldens are exact fp32 (PyTorch without TF32): on CUDA the convolutions are pinned to exact fp32 too
// (TF32 is the engine's default for them).
void check(const std::string& tag, ModelPtr model, Device device) {
  engine::cuda::MathModeGuard exact_fp32(false, false);
  expect_matches_golden(*model, source_path("tests/data/models/" + tag + "_weights.safetensors"),
                        source_path("tests/data/models/" + tag + "_golden.safetensors"), device);
}

}  // namespace

TEST(Vision, MobileNetV2MatchesPyTorchOnCpu) {
  check("mobilenetv2_tiny", tiny_mobilenetv2(), Device::cpu());
}
TEST(Vision, ResNet18MatchesPyTorchOnCpu) {
  check("resnet18_tiny", tiny_resnet18(), Device::cpu());
}
TEST(Vision, VGG11MatchesPyTorchOnCpu) {
  check("vgg11_tiny", tiny_vgg11(), Device::cpu());
}

TEST(Vision, MobileNetV2MatchesPyTorchOnCuda) {
  DGP_SKIP_WITHOUT_CUDA();
  check("mobilenetv2_tiny", tiny_mobilenetv2(), Device::cuda(0));
}
TEST(Vision, ResNet18MatchesPyTorchOnCuda) {
  DGP_SKIP_WITHOUT_CUDA();
  check("resnet18_tiny", tiny_resnet18(), Device::cuda(0));
}
TEST(Vision, VGG11MatchesPyTorchOnCuda) {
  DGP_SKIP_WITHOUT_CUDA();
  check("vgg11_tiny", tiny_vgg11(), Device::cuda(0));
}

// Full-size models: every state_dict name and shape, in order, and the parameter count equal PyTorch's.
TEST(Vision, FullSizeNamesShapesAndCountsMatchPyTorch) {
  struct Case {
    const char* model;
    int64_t input_size;
    const char* title;
  };
  for (Case c :
       {Case{"mobilenetv2", 32, "mobilenetv2 classes=10"},
        Case{"mobilenetv2", 224, "mobilenetv2-imagenet classes=1000"},
        Case{"resnet18", 32, "resnet18 classes=10"}, Case{"resnet18", 224, "resnet18-imagenet classes=1000"},
        Case{"vgg11", 32, "vgg11 classes=10"}}) {
    ModelOptions opts;
    opts.input_size = c.input_size;
    dgpipe::testing::expect_matches_name_list(*build_model(c.model, opts), c.title);
  }
}

// Cutting the model anywhere and running the pieces in turn gives the same output and gradients.
TEST(Vision, BlocksComposeAtEveryCut) {
  ModelPtr m = tiny_resnet18();
  m->eval();
  engine::Tensor x = engine::randn({2, 3, 32, 32});
  layers::BlockContext ctx = m->make_context(x);
  engine::Tensor full = m->forward(x, ctx);
  for (size_t cut = 0; cut <= m->num_blocks(); ++cut) {
    engine::Tensor mid = m->forward_blocks(x, ctx, 0, cut);
    engine::Tensor out = m->forward_blocks(mid.detach(), ctx, cut, m->num_blocks());
    EXPECT_LT(dgpipe::testing::scaled_error(out, full), 1e-6) << "cut " << cut;
  }
  int64_t total = 0;
  for (size_t i = 0; i < m->num_blocks(); ++i) total += m->block_num_parameters(i);
  EXPECT_EQ(total, m->num_parameters());
  EXPECT_EQ(m->block_named_parameters(1).front().first, "layer1.0.conv1.weight");
  EXPECT_EQ(m->block_named_parameters(0).front().first, "conv1.weight");
  EXPECT_EQ(m->block_named_parameters(m->num_blocks() - 1).front().first, "fc.weight");
}

TEST(Vision, InitialisationFollowsTorchvision) {
  ModelPtr m = build_model("resnet18");
  for (auto& [name, t] : m->state_dict()) {
    if (name == "conv1.weight") {
      // kaiming_normal_(fan_out, relu): std = sqrt(2 / (64 * 9))
      double s = engine::sqrt(engine::var(t, {0, 1, 2, 3})).item();
      EXPECT_NEAR(s, std::sqrt(2.0 / (64 * 9)), 0.01);
    }
    if (name == "bn1.weight") {
      EXPECT_EQ(engine::min(t).item(), 1.0);
    }
    if (name == "bn1.running_var") {
      EXPECT_EQ(engine::max(t).item(), 1.0);
    }
  }
  ModelPtr mb = build_model("mobilenetv2");
  for (auto& [name, t] : mb->named_parameters())
    if (name == "classifier.1.weight") {
      EXPECT_NEAR(engine::sqrt(engine::var(t, {0, 1})).item(), 0.01, 0.001);
    }
}

TEST(Vision, WrongInputsAreClearErrors) {
  ModelOptions opts;
  opts.input_size = 64;
  EXPECT_THROW(build_model("resnet18", opts), engine::Error);
  EXPECT_THROW(build_model("alexnet"), engine::Error);
  ModelPtr m = tiny_vgg11();
  try {
    m->forward(engine::randn({1, 3, 64, 64}), {});
    FAIL() << "expected an error";
  } catch (const engine::Error& e) {
    EXPECT_NE(std::string(e.what()).find("1x1 feature map"), std::string::npos) << e.what();
  }
  EXPECT_EQ(make_divisible(32 * 0.25, 8), 8);
  EXPECT_EQ(make_divisible(24 * 0.75, 8), 24);  // 18 rounds to 16, below 90% of 18 -> 24
  EXPECT_EQ(make_divisible(1280 * 1.4, 8), 1792);
}
