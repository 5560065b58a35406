// steps.jsonl in a run's log dir: one line per optimizer step with its loss and learning rate and, for every
// CUDA device the run's stages use, the caching allocator's statistics after the step (bytes allocated and
// reserved, driver allocations so far). What the GPU check compares across runs (scripts/compare_runs.py):
// losses of a CUDA run against the CPU run, and memory that stays flat after the first steps.
#pragma once
#include <fstream>
#include <string>
#include <vector>

#include "engine/device.h"

namespace dgpipe::apps {

class StepLog {
 public:
  // Appends to an existing file when `append` (a resumed run), else starts it afresh.
  StepLog(const std::string& log_dir, const std::vector<engine::Device>& devices, bool append);
  void write(int64_t step, double loss, double lr);

 private:
  std::ofstream out_;
  std::vector<int> cuda_devices_;  // distinct CUDA device indices, in order of first use
};

}  // namespace dgpipe::apps
