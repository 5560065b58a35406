// The image classifiers, with torchvision's module names so torchvision checkpoints load:
//  MobileNetV2 (features.N…, classifier.1), ResNet18 (conv1, bn1, layerK.J…, fc), VGG11 with batch norm
//  (features.N…, classifier…). Each comes in the CIFAR geometry (32×32 input) and in torchvision's ImageNet
//  geometry (224×224 input):
//  - MobileNetV2/CIFAR: stride-1 stem and stride-1 second stage (the rest as torchvision).
//  - ResNet18/CIFAR: 3×3 stride-1 stem conv, no max-pool.
//  - VGG11-BN/CIFAR: the same features, global 1×1 map flattened into one Linear 512→classes named
//  "classifier";
//    ImageNet: 7×7 adaptive pool and torchvision's three-layer classifier.
// Initialisation as torchvision's: convs kaiming-normal (fan_out, relu), batch norm 1/0, MobileNetV2 and VGG
// linears N(0, 0.01) with zero bias, the ResNet fc nn.Linear's default.
#pragma once
#include <array>
#include <vector>

#include "models/model.h"

namespace dgpipe::models {

struct MobileNetV2Config {
  int64_t num_classes = 10;
  bool cifar = true;
  double width_mult = 1.0;
  int64_t round_nearest = 8;
  int64_t last_channel = 1280;  // before width scaling (torchvision scales by max(1, width_mult))
  // (expansion t, channels c, repeats n, stride s) per stage, torchvision's table by default.
  std::vector<std::array<int64_t, 4>> stages = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                                {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  double dropout = 0.2;
  uint64_t seed = 0;
};

struct ResNet18Config {
  int64_t num_classes = 10;
  bool cifar = true;
  int64_t base_width = 64;  // channels of layer1 (doubling per stage)
  std::array<int64_t, 4> blocks_per_stage = {2, 2, 2, 2};
  uint64_t seed = 0;
};

struct VGG11Config {
  int64_t num_classes = 10;
  bool cifar = true;
  // Conv widths, -1 = 2×2 max-pool. VGG11 ("A") by default.
  std::vector<int64_t> layers = {64, -1, 128, -1, 256, 256, -1, 512, 512, -1, 512, 512, -1};
  int64_t hidden = 4096;  // ImageNet classifier width
  double dropout = 0.5;   // ImageNet classifier dropout
  uint64_t seed = 0;
};

// torchvision's _make_divisible: nearest multiple of divisor, at least divisor, never below 90% of v.
int64_t make_divisible(double v, int64_t divisor);

ModelPtr make_mobilenetv2(const MobileNetV2Config& cfg);
ModelPtr make_resnet18(const ResNet18Config& cfg);
ModelPtr make_vgg11_bn(const VGG11Config& cfg);

}  // namespace dgpipe::models
