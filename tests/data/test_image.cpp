#include "data/image.h"

#include <gtest/gtest.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

#include <fstream>

#include "data_test_paths.h"
#include "engine/error.h"

using namespace dgpipe::data;
using dgpipe::engine::Error;
using dgpipe::testing::ScratchDir;

namespace {

void append_bytes(void* context, void* data, int size) {
  auto* out = static_cast<std::string*>(context);
  out->append(static_cast<const char*>(data), static_cast<size_t>(size));
}

std::string encode_png(const std::vector<uint8_t>& pixels, int w, int h, int channels) {
  std::string out;
  EXPECT_NE(stbi_write_png_to_func(append_bytes, &out, w, h, channels, pixels.data(), w * channels), 0);
  return out;
}

}  // namespace

TEST(Image, PngDecodesExactlyToRgb) {
  const int w = 5, h = 3;
  std::vector<uint8_t> rgb(w * h * 3), grey(w * h), rgba(w * h * 4);
  for (int i = 0; i < w * h; ++i) {
    for (int c = 0; c < 3; ++c) rgb[i * 3 + c] = static_cast<uint8_t>(i * 17 + c * 80);
    grey[i] = static_cast<uint8_t>(i * 13);
    for (int c = 0; c < 4; ++c) rgba[i * 4 + c] = static_cast<uint8_t>(i * 7 + c * 50);
  }
  Image a = decode_image(encode_png(rgb, w, h, 3), "rgb.png");
  EXPECT_EQ(a.height, h);
  EXPECT_EQ(a.width, w);
  EXPECT_EQ(a.channels, 3);
  EXPECT_EQ(a.pixels, rgb);
  // Grey is replicated, alpha dropped: what PIL's convert("RGB") does.
  Image g = decode_image(encode_png(grey, w, h, 1), "grey.png");
  for (int i = 0; i < w * h; ++i) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(g.pixels[i * 3 + c], grey[i]);
  }
  Image r = decode_image(encode_png(rgba, w, h, 4), "rgba.png");
  for (int i = 0; i < w * h; ++i) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(r.pixels[i * 3 + c], rgba[i * 4 + c]);
  }
  EXPECT_EQ(a.at(2, 4, 1), rgb[(2 * w + 4) * 3 + 1]);
}

TEST(Image, JpegDecodesCloseToItsSourceAndTruncationIsAnError) {
  const int w = 24, h = 16;
  std::vector<uint8_t> rgb(w * h * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      rgb[(y * w + x) * 3 + 0] = static_cast<uint8_t>(x * 10);
      rgb[(y * w + x) * 3 + 1] = static_cast<uint8_t>(y * 15);
      rgb[(y * w + x) * 3 + 2] = 128;
    }
  }
  std::string jpeg;
  ASSERT_NE(stbi_write_jpg_to_func(append_bytes, &jpeg, w, h, 3, rgb.data(), 95), 0);
  Image img = decode_image(jpeg, "gradient.jpg");
  ASSERT_EQ(img.height, h);
  ASSERT_EQ(img.width, w);
  double err = 0;
  for (size_t k = 0; k < rgb.size(); ++k)
    err += std::abs(static_cast<int>(img.pixels[k]) - static_cast<int>(rgb[k]));
  EXPECT_LT(err / rgb.size(), 4.0) << "a quality-95 JPEG of a smooth gradient decodes close to its source";
  try {
    decode_image(jpeg.substr(0, jpeg.size() / 2), "cut.jpg");
    FAIL() << "a truncated JPEG (" << dgpipe::data::jpeg_decoder_name() << ") must not decode silently";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cut.jpg"), std::string::npos) << e.what();
  }
}

TEST(Image, CorruptOrMissingFilesAreNamed) {
  ScratchDir dir;
  {
    std::ofstream out(dir / "fake.jpg");
    out << "this is not a jpeg";
  }
  try {
    load_image(dir / "fake.jpg");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fake.jpg"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not a readable"), std::string::npos) << e.what();
  }
  // A PNG cut in half.
  std::vector<uint8_t> px(16 * 16 * 3, 100);
  const std::string png = encode_png(px, 16, 16, 3);
  EXPECT_THROW(decode_image(png.substr(0, png.size() / 2), "half.png"), Error);
  EXPECT_THROW(decode_image("", "empty.png"), Error);
  try {
    load_image(dir / "absent.png");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("absent.png"), std::string::npos) << e.what();
  }
}
