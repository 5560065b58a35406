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

#ifdef DGPIPE_WITH_LIBJPEG
#include <jpeglib.h>

#include <csetjmp>
#endif

namespace dgpipe::data {
namespace {

#ifdef DGPIPE_WITH_LIBJPEG
// libjpeg reports fatal errors through error_exit, which must not return: jump back to the decode call.
struct JpegErrorManager {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings (corrupt data) are kept for the error message instead of going to stderr.
void jpeg_keep_message(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
}

// Decodes with libjpeg(-turbo) using its defaults (islow IDCT, fancy upsampling): the same pixels as PIL and
// torchvision. Returns false with `error` set when libjpeg cannot decode the stream (e.g. CMYK) or it is
// corrupt.
bool decode_jpeg_libjpeg(const std::string& bytes, Image& image, std::string& error) {
  jpeg_decompress_struct cinfo;
  JpegErrorManager err;
  cinfo.err = jpeg_std_error(&err.base);
  err.base.error_exit = jpeg_error_exit;
  err.base.output_message = jpeg_keep_message;
  err.message[0] = 0;
  // Only plain data lives in this frame between setjmp and a longjmp (no destructors are skipped).
  uint8_t* pixels = nullptr;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    error = err.message;
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space != JCS_GRAYSCALE && cinfo.jpeg_color_space != JCS_YCbCr &&
      cinfo.jpeg_color_space != JCS_RGB) {
    jpeg_destroy_decompress(&cinfo);
    error = "colour space not convertible to RGB by libjpeg";
    return false;
  }
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  image.height = cinfo.output_height;
  image.width = cinfo.output_width;
  image.channels = 3;
  image.pixels.resize(static_cast<size_t>(image.height * image.width * 3));
  pixels = image.pixels.data();
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = pixels + static_cast<size_t>(cinfo.output_scanline) * image.width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  // libjpeg only warns about a truncated or damaged stream (and pads with grey); PIL refuses such files, so
  // do we.
  const long warnings = err.base.num_warnings;
  jpeg_destroy_decompress(&cinfo);
  if (warnings > 0) {
    error = std::string("corrupt or truncated data: ") + err.message;
    return false;
  }
  return true;
}
#endif

bool is_jpeg(const std::string& bytes) {
  return bytes.size() >= 3 && static_cast<uint8_t>(bytes[0]) == 0xFF &&
         static_cast<uint8_t>(bytes[1]) == 0xD8;
}

}  // namespace

const char* jpeg_decoder_name() {
#ifdef DGPIPE_WITH_LIBJPEG
  return "libjpeg";
#else
  return "stb_image";
#endif
}

Image decode_image(const std::string& bytes, const std::string& source) {
  DGP_CHECK(!bytes.empty(), "decode_image: '" << source << "' is empty, not an image");
#ifdef DGPIPE_WITH_LIBJPEG
  if (is_jpeg(bytes)) {
    Image image;
    std::string error;
    if (decode_jpeg_libjpeg(bytes, image, error)) return image;
    // libjpeg does not convert CMYK/YCCK to RGB; stb_image reads those. Anything else it rejected is corrupt.
    DGP_CHECK(error.rfind("colour space", 0) == 0,
              "decode_image: '" << source << "' is not a readable JPEG (libjpeg: " << error << ")");
  }
#else
  (void)is_jpeg;
#endif
  int width = 0, height = 0, channels_in_file = 0;
  stbi_uc* data =
      stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()),
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

Image load_image(const std::string& path) {
  return decode_image(read_file_bytes(path, "load_image"), path);
}

}  // namespace dgpipe::data
