#include "data/transforms.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "engine/error.h"

using namespace dgpipe::data;
using dgpipe::engine::Error;

namespace {

Image one_channel_as_rgb(int64_t h, int64_t w, const std::vector<int>& values) {
  Image img(h, w, 3);
  for (int64_t i = 0; i < h * w; ++i) {
    for (int c = 0; c < 3; ++c) img.pixels[i * 3 + c] = static_cast<uint8_t>(values[i]);
  }
  return img;
}

std::vector<int> channel0(const Image& img) {
  std::vector<int> out;
  for (int64_t i = 0; i < img.height * img.width; ++i) out.push_back(img.pixels[i * 3]);
  return out;
}

// Pixel (y, x) holds y*16 + x in channel 0 (a position marker) and 255 in channel 1.
Image marker_image(int64_t size) {
  Image img(size, size, 3);
  for (int64_t y = 0; y < size; ++y) {
    for (int64_t x = 0; x < size; ++x) {
      img.at(y, x, 0) = static_cast<uint8_t>(y * 16 + x);
      img.at(y, x, 1) = 255;
    }
  }
  return img;
}

}  // namespace

TEST(Transforms, SampleRngIsAPureFunctionOfItsKey) {
  SampleRng a(7, 1, 2, 3), b(7, 1, 2, 3), c(7, 1, 2, 4), d(8, 1, 2, 3);
  std::vector<uint32_t> va, vb, vc, vd;
  for (int i = 0; i < 9; ++i) {
    va.push_back(a.next_u32());
    vb.push_back(b.next_u32());
    vc.push_back(c.next_u32());
    vd.push_back(d.next_u32());
  }
  EXPECT_EQ(va, vb);
  EXPECT_NE(va, vc);
  EXPECT_NE(va, vd);
  SampleRng r(1, 2, 3, 4);
  double sum = 0;
  std::set<int64_t> seen;
  for (int i = 0; i < 4000; ++i) {
    const double u = r.uniform();
    ASSERT_TRUE(u >= 0.0 && u < 1.0);
    sum += u;
    const int64_t k = r.randint(-2, 3);
    ASSERT_TRUE(k >= -2 && k <= 3);
    seen.insert(k);
  }
  EXPECT_NEAR(sum / 4000, 0.5, 0.02);
  EXPECT_EQ(seen.size(), 6u);
}

TEST(Transforms, BilinearResizeMatchesTorchInterpolate) {
  const Image src = one_channel_as_rgb(2, 3, {0, 100, 50, 200, 255, 10});
  // torch.nn.functional.interpolate(mode="bilinear", align_corners=False) before rounding; ours rounds to u8,
  // so each value is within 0.5 (ties such as 85.5 may go either way).
  const std::vector<double> torch_values = {0,   40,    100,    70,   50, 50,  85.5, 138.75, 79.5, 40,
                                            150, 176.5, 216.25, 98.5, 20, 200, 222,  255,    108,  10};
  const std::vector<int> got = channel0(resize_bilinear(src, 4, 5));
  ASSERT_EQ(got.size(), torch_values.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_LE(std::abs(got[i] - torch_values[i]), 0.5) << i;
  EXPECT_EQ(channel0(resize_bilinear(src, 1, 2)), (std::vector<int>{119, 67}));
  EXPECT_EQ(resize_bilinear(src, 2, 3).pixels, src.pixels);
  EXPECT_THROW(resize_bilinear(src, 0, 3), Error);
}

TEST(Transforms, CropPadFlipCenterCrop) {
  const Image img = marker_image(4);
  const Image crop = crop_image(img, -1, 2, 3, 3);  // one row above the image, one column past its right edge
  EXPECT_EQ(crop.at(0, 0, 1), 0);                   // zero fill outside
  EXPECT_EQ(crop.at(1, 0, 0), 0 * 16 + 2);
  EXPECT_EQ(crop.at(2, 1, 0), 1 * 16 + 3);
  EXPECT_EQ(crop.at(2, 2, 1), 0);
  const Image padded = pad_image(img, 2);
  EXPECT_EQ(padded.height, 8);
  EXPECT_EQ(padded.at(2, 2, 0), 0);
  EXPECT_EQ(padded.at(2, 2, 1), 255);
  EXPECT_EQ(padded.at(1, 1, 1), 0);
  const Image flipped = flip_horizontal(img);
  EXPECT_EQ(flipped.at(1, 0, 0), 1 * 16 + 3);
  EXPECT_EQ(flip_horizontal(flipped).pixels, img.pixels);
  Image centre = marker_image(5);
  SampleRng rng(0, 0, 0, 0);
  center_crop(3, 2)(centre, rng);  // torchvision: top = round(1.0) = 1, left = round(1.5) = 2
  EXPECT_EQ(centre.height, 3);
  EXPECT_EQ(centre.width, 2);
  EXPECT_EQ(centre.at(0, 0, 0), 1 * 16 + 2);
}

TEST(Transforms, RandomCropCoversEveryOffsetAndFlipIsFair) {
  // 32x32 padded by 4: 9 x 9 possible crops; every one should turn up, and the same key gives the same crop.
  std::set<int> offsets;
  const ImageTransform crop = random_crop(8, 4);
  for (uint64_t i = 0; i < 3000; ++i) {
    Image img = marker_image(8);
    SampleRng rng(5, 0, 0, i);
    crop(img, rng);
    ASSERT_EQ(img.height, 8);
    // Find where the original (0,0) landed, or infer the offset from the first in-image pixel.
    int offset = -1;
    for (int64_t y = 0; y < 8 && offset < 0; ++y) {
      for (int64_t x = 0; x < 8 && offset < 0; ++x) {
        if (img.at(y, x, 1) == 255) {
          const int sy = img.at(y, x, 0) / 16, sx = img.at(y, x, 0) % 16;
          offset = (sy - static_cast<int>(y) + 4) * 9 + (sx - static_cast<int>(x) + 4);
        }
      }
    }
    offsets.insert(offset);
    Image again = marker_image(8);
    SampleRng same(5, 0, 0, i);
    crop(again, same);
    ASSERT_EQ(again.pixels, img.pixels);
  }
  EXPECT_EQ(offsets.size(), 81u);
  int flips = 0;
  const ImageTransform flip = random_horizontal_flip(0.5);
  for (uint64_t i = 0; i < 4000; ++i) {
    Image img = marker_image(4);
    SampleRng rng(9, 0, 1, i);
    flip(img, rng);
    flips += img.at(0, 0, 0) == 3;
  }
  EXPECT_NEAR(flips / 4000.0, 0.5, 0.03);
  EXPECT_THROW(random_crop(0, 1), Error);
  Image small = marker_image(4);
  SampleRng rng(0, 0, 0, 0);
  EXPECT_THROW(random_crop(16, 2)(small, rng), Error);
}

TEST(Transforms, RandomResizedCropAndResizeShorterSide) {
  const ImageTransform rrc = random_resized_crop(16, 12);
  std::set<std::vector<uint8_t>> distinct;
  for (uint64_t i = 0; i < 20; ++i) {
    Image img = marker_image(15);
    SampleRng rng(3, 0, 0, i);
    rrc(img, rng);
    ASSERT_EQ(img.height, 16);
    ASSERT_EQ(img.width, 12);
    for (int64_t k = 0; k < 16 * 12; ++k) ASSERT_EQ(img.pixels[k * 3 + 1], 255);  // always inside the image
    distinct.insert(img.pixels);
  }
  EXPECT_GT(distinct.size(), 15u);
  // An aspect ratio no crop can meet falls back to the central crop of the whole image.
  Image wide(4, 40, 3, 7);
  SampleRng rng(0, 0, 0, 0);
  random_resized_crop(8, 8, {0.9, 1.0}, {1.0, 1.0})(wide, rng);
  EXPECT_EQ(wide.height, 8);
  EXPECT_EQ(wide.pixels[0], 7);
  Image tall(40, 20, 3);
  resize_shorter_side(10)(tall, rng);
  EXPECT_EQ(tall.height, 20);
  EXPECT_EQ(tall.width, 10);
}

TEST(Transforms, NormalizeWritesPlanarStandardisedValues) {
  Image img(1, 2, 3);
  img.pixels = {0, 255, 51, 102, 204, 153};
  const Normalize norm{{0.5f, 0.25f, 0.0f}, {0.5f, 0.25f, 2.0f}};
  std::vector<float> out(6);
  norm.apply(img, out.data());
  const std::vector<float> want = {
      (0 / 255.f - 0.5f) / 0.5f,     (102 / 255.f - 0.5f) / 0.5f, (255 / 255.f - 0.25f) / 0.25f,
      (204 / 255.f - 0.25f) / 0.25f, (51 / 255.f) / 2.f,          (153 / 255.f) / 2.f};
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(out[i], want[i], 1e-6) << i;
  EXPECT_NEAR(cifar10_normalize().mean[0], 0.4914f, 1e-7);
  const Normalize zero_std{{0, 0, 0}, {1, 0, 1}};
  EXPECT_THROW(zero_std.apply(img, out.data()), Error);
}
