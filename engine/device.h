// Where a tensor lives: the CPU or one CUDA device.
#pragma once
#include <string>

namespace dgpipe::engine {

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return Device{DeviceType::cpu, 0}; }
  static Device cuda(int index = 0) { return Device{DeviceType::cuda, index}; }
  // Parses "cpu", "cuda", "cuda:N"; throws naming the text otherwise.
  static Device parse(const std::string& text);

  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  std::string str() const;
  bool operator==(const Device& o) const {
    return type == o.type && (type == DeviceType::cpu || index == o.index);
  }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

// Number of CUDA devices usable by this process: 0 without the CUDA backend or without a GPU.
int cuda_device_count();
bool cuda_available();

}  // namespace dgpipe::engine
