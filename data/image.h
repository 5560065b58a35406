// Decoded images: 8-bit, interleaved (height x width x channels), as decoders produce and transforms consume.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dgpipe::data {

struct Image {
  int64_t height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;  // row-major HWC

  Image() = default;
  Image(int64_t h, int64_t w, int64_t c, uint8_t fill = 0)
      : height(h), width(w), channels(c), pixels(static_cast<size_t>(h * w * c), fill) {}
  uint8_t& at(int64_t y, int64_t x, int64_t c) {
    return pixels[static_cast<size_t>((y * width + x) * channels + c)];
  }
  uint8_t at(int64_t y, int64_t x, int64_t c) const {
    return pixels[static_cast<size_t>((y * width + x) * channels + c)];
  }
  bool empty() const { return pixels.empty(); }
};

// Decodes JPEG or PNG bytes (stb_image; JPEG through libjpeg-turbo when the build found it, which gives the
// very pixels PIL/torchvision decode — stb_image's chroma upsampling rounds differently, up to 2-3 levels
// apart) to RGB (channels = 3; grey and alpha images are converted as PIL's convert("RGB") does). `source`
// names the file in the error thrown for bytes that are not a readable image.
Image decode_image(const std::string& bytes, const std::string& source);
// "libjpeg" or "stb_image": which decoder reads JPEG in this build.
const char* jpeg_decoder_name();
// Reads and decodes a file.
Image load_image(const std::string& path);

}  // namespace dgpipe::data
