#include "data/transforms.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"
#include "engine/rng.h"

namespace dgpipe::data {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint8_t round_to_u8(float v) {
  const float r = std::nearbyint(v);
  return static_cast<uint8_t>(std::min(255.f, std::max(0.f, r)));
}

}  // namespace

SampleRng::SampleRng(uint64_t seed, uint64_t stream, uint64_t epoch, uint64_t index) {
  // Hash the four coordinates into one Philox key; distinct samples get unrelated streams.
  key_ = splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ epoch) ^ index);
}

uint32_t SampleRng::next_u32() {
  if (used_ == 4) {
    engine::philox4x32(key_, counter_++, buffer_);
    used_ = 0;
  }
  return buffer_[used_++];
}

double SampleRng::uniform() {
  const uint64_t hi = next_u32() >> 5, lo = next_u32() >> 6;  // 27 + 26 bits
  return (static_cast<double>(hi) * 67108864.0 + static_cast<double>(lo)) * (1.0 / 9007199254740992.0);
}

int64_t SampleRng::randint(int64_t lo, int64_t hi) {
  DGP_CHECK(lo <= hi, "SampleRng::randint: empty range [" << lo << ", " << hi << "]");
  const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
  const uint64_t bits = (static_cast<uint64_t>(next_u32()) << 32) | next_u32();
  // Multiply-shift maps 64 random bits onto the span; the bias (span / 2^64) is negligible.
  return lo + static_cast<int64_t>((static_cast<unsigned __int128>(bits) * span) >> 64);
}

Image crop_image(const Image& image, int64_t top, int64_t left, int64_t height, int64_t width) {
  DGP_CHECK(height > 0 && width > 0, "crop: size " << height << "x" << width << " must be positive");
  Image out(height, width, image.channels);
  const int64_t c = image.channels;
  for (int64_t y = 0; y < height; ++y) {
    const int64_t sy = top + y;
    if (sy < 0 || sy >= image.height) continue;
    const int64_t x0 = std::max<int64_t>(0, -left), x1 = std::min<int64_t>(width, image.width - left);
    if (x1 <= x0) continue;
    std::copy_n(&image.pixels[static_cast<size_t>((sy * image.width + left + x0) * c)], (x1 - x0) * c,
                &out.pixels[static_cast<size_t>((y * width + x0) * c)]);
  }
  return out;
}

Image pad_image(const Image& image, int64_t padding) {
  return crop_image(image, -padding, -padding, image.height + 2 * padding, image.width + 2 * padding);
}

Image flip_horizontal(const Image& image) {
  Image out(image.height, image.width, image.channels);
  const int64_t c = image.channels;
  for (int64_t y = 0; y < image.height; ++y) {
    for (int64_t x = 0; x < image.width; ++x) {
      for (int64_t k = 0; k < c; ++k) out.at(y, image.width - 1 - x, k) = image.at(y, x, k);
    }
  }
  return out;
}

Image resize_bilinear(const Image& image, int64_t height, int64_t width) {
  DGP_CHECK(height > 0 && width > 0, "resize: target " << height << "x" << width << " must be positive");
  DGP_CHECK(!image.empty(), "resize: empty image");
  if (height == image.height && width == image.width) return image;
  Image out(height, width, image.channels);
  const double sy = static_cast<double>(image.height) / height, sx = static_cast<double>(image.width) / width;
  // Source coordinate of each output column: half-pixel centres, clamped at the border.
  std::vector<int64_t> x_lo(width), x_hi(width);
  std::vector<float> x_w(width);
  for (int64_t x = 0; x < width; ++x) {
    const double src = std::max(0.0, (x + 0.5) * sx - 0.5);
    x_lo[x] = std::min<int64_t>(static_cast<int64_t>(src), image.width - 1);
    x_hi[x] = std::min<int64_t>(x_lo[x] + 1, image.width - 1);
    x_w[x] = static_cast<float>(src - x_lo[x]);
  }
  for (int64_t y = 0; y < height; ++y) {
    const double src = std::max(0.0, (y + 0.5) * sy - 0.5);
    const int64_t y0 = std::min<int64_t>(static_cast<int64_t>(src), image.height - 1);
    const int64_t y1 = std::min<int64_t>(y0 + 1, image.height - 1);
    const float wy = static_cast<float>(src - y0);
    for (int64_t x = 0; x < width; ++x) {
      for (int64_t k = 0; k < image.channels; ++k) {
        const float top = image.at(y0, x_lo[x], k) * (1 - x_w[x]) + image.at(y0, x_hi[x], k) * x_w[x];
        const float bottom = image.at(y1, x_lo[x], k) * (1 - x_w[x]) + image.at(y1, x_hi[x], k) * x_w[x];
        out.at(y, x, k) = round_to_u8(top * (1 - wy) + bottom * wy);
      }
    }
  }
  return out;
}

ImageTransform random_crop(int64_t size, int64_t padding) {
  DGP_CHECK(size > 0 && padding >= 0, "random_crop: size " << size << " and padding " << padding);
  return [size, padding](Image& image, SampleRng& rng) {
    const int64_t h = image.height + 2 * padding, w = image.width + 2 * padding;
    DGP_CHECK(h >= size && w >= size, "random_crop: " << size << "x" << size << " crop from a "
                                                      << image.height << "x" << image.width
                                                      << " image padded by " << padding);
    const int64_t top = rng.randint(0, h - size), left = rng.randint(0, w - size);
    image = crop_image(image, top - padding, left - padding, size, size);
  };
}

ImageTransform random_horizontal_flip(double p) {
  return [p](Image& image, SampleRng& rng) {
    if (rng.uniform() < p) image = flip_horizontal(image);
  };
}

ImageTransform resize(int64_t height, int64_t width) {
  return [height, width](Image& image, SampleRng&) { image = resize_bilinear(image, height, width); };
}

ImageTransform resize_shorter_side(int64_t size) {
  DGP_CHECK(size > 0, "resize_shorter_side: size " << size);
  return [size](Image& image, SampleRng&) {
    int64_t h = size, w = size;
    if (image.height < image.width) {
      w = static_cast<int64_t>(static_cast<double>(size) * image.width / image.height);
    } else {
      h = static_cast<int64_t>(static_cast<double>(size) * image.height / image.width);
    }
    image = resize_bilinear(image, h, w);
  };
}

ImageTransform center_crop(int64_t height, int64_t width) {
  return [height, width](Image& image, SampleRng&) {
    const int64_t top = static_cast<int64_t>(std::nearbyint((image.height - height) / 2.0));
    const int64_t left = static_cast<int64_t>(std::nearbyint((image.width - width) / 2.0));
    image = crop_image(image, top, left, height, width);
  };
}

ImageTransform random_resized_crop(int64_t height, int64_t width, std::pair<double, double> scale,
                                   std::pair<double, double> ratio) {
  DGP_CHECK(scale.first > 0 && scale.first <= scale.second && ratio.first > 0 && ratio.first <= ratio.second,
            "random_resized_crop: scale (" << scale.first << ", " << scale.second << ") and ratio ("
                                           << ratio.first << ", " << ratio.second
                                           << ") must be positive, increasing ranges");
  return [=](Image& image, SampleRng& rng) {
    const double area = static_cast<double>(image.height * image.width);
    const double log_lo = std::log(ratio.first), log_hi = std::log(ratio.second);
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double target_area = area * (scale.first + (scale.second - scale.first) * rng.uniform());
      const double aspect = std::exp(log_lo + (log_hi - log_lo) * rng.uniform());
      const int64_t w = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area * aspect)));
      const int64_t h = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area / aspect)));
      if (w > 0 && h > 0 && w <= image.width && h <= image.height) {
        const int64_t top = rng.randint(0, image.height - h), left = rng.randint(0, image.width - w);
        image = resize_bilinear(crop_image(image, top, left, h, w), height, width);
        return;
      }
    }
    // Fallback: the largest central crop whose aspect ratio lies within `ratio`.
    const double in_ratio = static_cast<double>(image.width) / image.height;
    int64_t w = image.width, h = image.height;
    if (in_ratio < ratio.first) {
      h = static_cast<int64_t>(std::nearbyint(w / ratio.first));
    } else if (in_ratio > ratio.second) {
      w = static_cast<int64_t>(std::nearbyint(h * ratio.second));
    }
    const int64_t top = (image.height - h) / 2, left = (image.width - w) / 2;
    image = resize_bilinear(crop_image(image, top, left, h, w), height, width);
  };
}

void Normalize::apply(const Image& image, float* out) const {
  DGP_CHECK(image.channels == 3, "normalize: expected 3 channels, got " << image.channels);
  const int64_t plane = image.height * image.width;
  for (int64_t c = 0; c < 3; ++c) {
    DGP_CHECK(std[c] != 0.f, "normalize: std[" << c << "] is zero");
    const float scale = 1.f / (255.f * std[c]), shift = mean[c] / std[c];
    float* dst = out + c * plane;
    const uint8_t* src = image.pixels.data() + c;
    for (int64_t i = 0; i < plane; ++i) dst[i] = static_cast<float>(src[i * 3]) * scale - shift;
  }
}

Normalize cifar10_normalize() {
  return Normalize{{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
}
Normalize imagenet_normalize() {
  return Normalize{{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
}

Compose cifar_train_transforms() {
  return Compose({random_crop(32, 4), random_horizontal_flip(0.5)});
}

}  // namespace dgpipe::data
