// steps.jsonl (apps/step_log.h): one line per step with loss and learning rate, the allocator statistics of
// each CUDA device the run uses (none for a CPU run), appended on resume.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "apps/step_log.h"

namespace fs = std::filesystem;
using dgpipe::apps::StepLog;
using dgpipe::engine::Device;

namespace {

std::string fresh_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("dgpipe_step_log_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::vector<nlohmann::json> lines_of(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "steps.jsonl");
  std::vector<nlohmann::json> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

}  // namespace

TEST(StepLog, OneLinePerStepWithLossAndLearningRate) {
  const std::string dir = fresh_dir("cpu");
  {
    StepLog log(dir, {Device::cpu(), Device::cpu()}, false);
    log.write(1, 2.5, 0.1);
    log.write(2, 2.25, 0.05);
  }
  std::vector<nlohmann::json> lines = lines_of(dir);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1]["step"], 2);
  EXPECT_EQ(lines[1]["loss"], 2.25);
  EXPECT_EQ(lines[1]["lr"], 0.05);
  EXPECT_FALSE(lines[0].contains("cuda_memory")) << "a CPU run has no allocator to report";
  {
    StepLog resumed(dir, {Device::cpu()}, true);
    resumed.write(3, 2.0, 0.05);
  }
  EXPECT_EQ(lines_of(dir).size(), 3u) << "a resumed run appends";
  { StepLog restarted(dir, {Device::cpu()}, false); }
  EXPECT_EQ(lines_of(dir).size(), 0u) << "a fresh run starts the file again";
}

// Two stages on cuda:0 (and one on the CPU): one entry per CUDA device. Without a device the statistics read
// as zeros; the fields are there all the same.
TEST(StepLog, AllocatorStatisticsPerCudaDevice) {
  const std::string dir = fresh_dir("cuda");
  {
    StepLog log(dir, {Device::cuda(0), Device::cpu(), Device::cuda(0)}, false);
    log.write(1, 1.0, 0.1);
  }
  const nlohmann::json line = lines_of(dir).at(0);
  ASSERT_TRUE(line.contains("cuda_memory"));
  ASSERT_EQ(line["cuda_memory"].size(), 1u);
  EXPECT_EQ(line["cuda_memory"][0]["device"], "cuda:0");
  for (const char* field : {"allocated", "reserved", "device_mallocs"})
    EXPECT_TRUE(line["cuda_memory"][0].contains(field)) << field;
}
