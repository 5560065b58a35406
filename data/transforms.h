// Image transforms on 8-bit HWC images, composed and driven by a per-sample random stream. The stream of
// sample i in epoch e is a pure function of (run seed, e, i), so augmentation does not depend on which worker
// thread ran it or in which order: a run is reproducible from its seed.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "data/image.h"

namespace dgpipe::data {

// Counter-based (Philox4x32-10, engine/rng.h) stream keyed by (seed, stream id, epoch, index).
class SampleRng {
 public:
  SampleRng(uint64_t seed, uint64_t stream, uint64_t epoch, uint64_t index);
  uint32_t next_u32();
  double uniform();                         // [0, 1), 53 bits
  int64_t randint(int64_t lo, int64_t hi);  // uniform in [lo, hi], inclusive
 private:
  uint64_t key_;
  uint64_t counter_ = 0;
  uint32_t buffer_[4];
  int used_ = 4;
};

using ImageTransform = std::function<void(Image&, SampleRng&)>;

// Applies its steps in order.
class Compose {
 public:
  Compose() = default;
  explicit Compose(std::vector<ImageTransform> steps) : steps_(std::move(steps)) {}
  Compose& add(ImageTransform step) {
    steps_.push_back(std::move(step));
    return *this;
  }
  void operator()(Image& image, SampleRng& rng) const {
    for (const auto& step : steps_) step(image, rng);
  }
  size_t size() const { return steps_.size(); }

 private:
  std::vector<ImageTransform> steps_;
};

// Pads every side by `padding` (zeros) then takes a size x size crop at a uniform position (torchvision
// RandomCrop(size, padding)).
ImageTransform random_crop(int64_t size, int64_t padding = 0);
// Mirrors left-right with probability p.
ImageTransform random_horizontal_flip(double p = 0.5);
// Bilinear resize to height x width (half-pixel centres, no antialiasing: torch interpolate(bilinear,
// align_corners=False)); values rounded to the nearest integer.
ImageTransform resize(int64_t height, int64_t width);
// Bilinear resize so the shorter side is `size`, keeping the aspect ratio (torchvision Resize(int)).
ImageTransform resize_shorter_side(int64_t size);
// Central height x width crop (torchvision CenterCrop: offsets rounded; zero-padded when the image is
// smaller).
ImageTransform center_crop(int64_t height, int64_t width);
// torchvision RandomResizedCrop: an area fraction in `scale` and a log-uniform aspect ratio in `ratio`, up to
// ten tries, falling back to a central crop; then a bilinear resize to height x width.
ImageTransform random_resized_crop(int64_t height, int64_t width,
                                   std::pair<double, double> scale = {0.08, 1.0},
                                   std::pair<double, double> ratio = {3.0 / 4.0, 4.0 / 3.0});

// The individual operations, deterministic, for direct use and tests.
Image crop_image(const Image& image, int64_t top, int64_t left, int64_t height,
                 int64_t width);  // zero outside
Image pad_image(const Image& image, int64_t padding);
Image flip_horizontal(const Image& image);
Image resize_bilinear(const Image& image, int64_t height, int64_t width);

// ToTensor + Normalize: out[c][y][x] = (pixel / 255 - mean[c]) / std[c], written planar (CHW) to `out`.
struct Normalize {
  std::array<float, 3> mean{0.f, 0.f, 0.f};
  std::array<float, 3> std{1.f, 1.f, 1.f};
  void apply(const Image& image, float* out) const;
};
// Per-channel statistics of the usual data sets.
Normalize cifar10_normalize();   // mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616)
Normalize imagenet_normalize();  // mean (0.485, 0.456, 0.406),   std (0.229, 0.224, 0.225)

// Standard recipes: CIFAR training (random crop 32 with padding 4, flip) and evaluation (identity).
Compose cifar_train_transforms();

}  // namespace dgpipe::data
