#include "engine/device.h"

#include <cstdlib>

#include "engine/cuda.h"
#include "engine/error.h"

namespace dgpipe::engine {

Device Device::parse(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    std::string num = text.substr(5);
    char* end = nullptr;
    long v = std::strtol(num.c_str(), &end, 10);
    DGP_CHECK(!num.empty() && end && *end == '\0' && v >= 0 && v < 1024,
              "device: cannot parse '" << text << "' (expected cpu, cuda or cuda:N)");
    return Device::cuda(static_cast<int>(v));
  }
  DGP_FAIL("device: cannot parse '" << text << "' (expected cpu, cuda or cuda:N)");
}

std::string Device::str() const {
  return is_cpu() ? "cpu" : "cuda:" + std::to_string(index);
}

bool cuda_available() {
  return cuda_device_count() > 0;
}

void cuda::fail_without_cuda(const char* what) {
  DGP_FAIL(what << ": dgpipe was built without CUDA (configure with -DDGPIPE_WITH_CUDA=ON)");
}

}  // namespace dgpipe::engine
