#include "apps/step_log.h"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "engine/cuda.h"
#include "engine/error.h"

namespace dgpipe::apps {

StepLog::StepLog(const std::string& log_dir, const std::vector<engine::Device>& devices, bool append) {
  const std::string path = (std::filesystem::path(log_dir) / "steps.jsonl").string();
  out_.open(path, append ? std::ios::app : std::ios::trunc);
  DGP_CHECK(out_.good(), "--log-dir: cannot write '" << path << "'");
  for (const engine::Device& d : devices)
    if (d.is_cuda() && std::find(cuda_devices_.begin(), cuda_devices_.end(), d.index) == cuda_devices_.end())
      cuda_devices_.push_back(d.index);
}

void StepLog::write(int64_t step, double loss, double lr) {
  nlohmann::json j{{"step", step}, {"loss", loss}, {"lr", lr}};
  if (!cuda_devices_.empty()) {
    nlohmann::json memory = nlohmann::json::array();
    for (int d : cuda_devices_) {
      // Host-side bookkeeping of the allocator: no synchronisation.
      const engine::cuda::MemoryStats m = engine::cuda::memory_stats(d);
      memory.push_back({{"device", "cuda:" + std::to_string(d)},
                        {"allocated", m.allocated},
                        {"reserved", m.reserved},
                        {"device_mallocs", m.num_device_mallocs}});
    }
    j["cuda_memory"] = memory;
  }
  out_ << j.dump() << "\n" << std::flush;
}

}  // namespace dgpipe::apps
