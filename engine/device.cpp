#include "engine/device.h"

#include <cstdlib>
#include <sstream>

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

namespace cuda {

std::string describe(const DeviceStatus& status) {
  auto version = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  std::ostringstream os;
  if (status.count > 0) {
    os << status.count << " CUDA device(s); driver supports CUDA " << version(status.driver_version)
       << ", runtime " << version(status.runtime_version);
    return os.str();
  }
  if (!status.error) return "no CUDA device: " + status.reason;
  os << "CUDA ERROR: " << status.reason << "; the driver supports CUDA " << version(status.driver_version)
     << ", dgpipe's runtime is " << version(status.runtime_version);
  if (status.driver_version < status.runtime_version)
    os << " (the driver is older than the runtime: update the driver or use a build for CUDA "
       << status.driver_version / 1000 << ")";
  return os.str();
}

std::string describe_device_error(DeviceErrorCode code, int64_t index, int64_t bound) {
  std::ostringstream os;
  switch (code) {
    case DeviceErrorCode::embedding_index:
      os << "embedding: index " << index << " is out of range for a table of " << bound << " rows";
      break;
    case DeviceErrorCode::index_select_index:
      os << "index_select: index " << index << " is out of range for a dimension of size " << bound;
      break;
    case DeviceErrorCode::index_add_index:
      os << "index_add: index " << index << " is out of range for a dimension of size " << bound;
      break;
    default:
      os << "a CUDA kernel reported error code " << static_cast<int>(code) << " (index " << index
         << ", bound " << bound << ")";
  }
  return os.str();
}

MathModeGuard::MathModeGuard(bool tf32_matmul, bool tf32_conv)
    : matmul_(allow_tf32_matmul()), conv_(allow_tf32_conv()) {
  set_allow_tf32_matmul(tf32_matmul);
  set_allow_tf32_conv(tf32_conv);
}
MathModeGuard::~MathModeGuard() {
  set_allow_tf32_matmul(matmul_);
  set_allow_tf32_conv(conv_);
}

}  // namespace cuda

void cuda::fail_without_cuda(const char* what) {
  DGP_FAIL(what << ": dgpipe was built without CUDA (configure with -DDGPIPE_WITH_CUDA=ON)");
}

}  // namespace dgpipe::engine
