#include "data/image.h"

#include <cstring>

#include "data/text_file.h"
#include "engine/error.h"

// The one translation unit that compiles stb_image. Only the formats we read.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#include <stb_image.h>

namespace dgpipe::data {

Image decode_image(const std::string& bytes, const std::string& source) {
  DGP_CHECK(!bytes.empty(), "decode_image: '" << source << "' is empty, not an image");
  int width = 0, height = 0, channels_in_file = 0;
  stbi_uc* data = stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()),
                                        &width, &height, &channels_in_file, 3);
  DGP_CHECK(data != nullptr, "decode_image: '" << source << "' is not a readable JPEG or PNG ("
                                               << stbi_failure_reason() << ")");
  Image image;
  image.height = height;
  image.width = width;
  image.channels = 3;
  image.pixels.resize(static_cast<size_t>(width) * height * 3);
  std::memcpy(image.pixels.data(), data, image.pixels.size());
  stbi_image_free(data);
  return image;
}

Image load_image(const std::string& path) { return decode_image(read_file_bytes(path, "load_image"), path); }

}  // namespace dgpipe::data
