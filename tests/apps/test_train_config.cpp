// `dgpipe train`'s settings: old names of renamed settings still load (saved config.json files, old flags),
// and validation accepts exactly the registry's model names and aliases.
#include "apps/train_config.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>
#include <filesystem>
#include <fstream>

#include "engine/error.h"
#include "models/registry.h"

using namespace dgpipe;
using namespace dgpipe::apps;
namespace fs = std::filesystem;

namespace {

TrainConfig parse(std::vector<std::string> args) {
  args.insert(args.begin(), "dgpipe train");
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  TrainConfig c;
  EXPECT_TRUE(parse_train_args(static_cast<int>(argv.size()), argv.data(), c));
  return c;
}

std::string error_of(const std::vector<std::string>& args) {
  try {
    parse(args);
  } catch (const engine::Error& e) {
    return e.what();
  }
  return "";
}

std::string write_config(const std::string& name, const nlohmann::json& j) {
  fs::path dir = fs::path(::testing::TempDir()) / ("dgpipe_" + std::to_string(::getpid()) + "_train_config");
  fs::create_directories(dir);
  std::string path = (dir / name).string();
  std::ofstream(path) << j.dump(2);
  return path;
}

}  // namespace

TEST(TrainConfig, AnOldConfigFileLoadsUnderTheNewNames) {
  // What config.json held before the renames: chunks, schedule, schedule_kind.
  std::string old_file = write_config(
      "old.json", {{"chunks", 4}, {"schedule", "linear"}, {"schedule_kind", "1f1b"}, {"batch", 32}});
  std::string new_file = write_config(
      "new.json",
      {{"micro_batches", 4}, {"lr_schedule", "linear"}, {"pipeline_schedule", "1f1b"}, {"batch", 32}});
  TrainConfig old_c = parse({"--config", old_file});
  TrainConfig new_c = parse({"--config", new_file});
  EXPECT_EQ(old_c.micro_batches, 4);
  EXPECT_EQ(old_c.lr_schedule, "linear");
  EXPECT_EQ(old_c.pipeline_schedule, "1f1b");
  EXPECT_EQ(old_c.to_json(), new_c.to_json());
  // Written back under the new names only.
  nlohmann::json j = old_c.to_json();
  for (const char* old_key : {"chunks", "schedule", "schedule_kind"})
    EXPECT_FALSE(j.contains(old_key)) << old_key;
  // Both names of one setting in one file: an error naming both.
  std::string both = write_config("both.json", {{"chunks", 2}, {"micro_batches", 4}});
  std::string e = error_of({"--config", both});
  EXPECT_NE(e.find("'chunks'"), std::string::npos) << e;
  EXPECT_NE(e.find("'micro_batches'"), std::string::npos) << e;
}

TEST(TrainConfig, OldFlagsAreAliases) {
  TrainConfig old_c =
      parse({"--chunks", "8", "--schedule", "step", "--schedule-kind", "1f1b", "--batch", "64"});
  TrainConfig new_c = parse(
      {"--micro-batches", "8", "--lr-schedule", "step", "--pipeline-schedule", "1f1b", "--batch", "64"});
  EXPECT_EQ(old_c.micro_batches, 8);
  EXPECT_EQ(old_c.lr_schedule, "step");
  EXPECT_EQ(old_c.pipeline_schedule, "1f1b");
  EXPECT_EQ(old_c.to_json(), new_c.to_json());
  // A flag overrides a config file whichever name either uses.
  std::string file = write_config("chunks.json", {{"chunks", 2}});
  EXPECT_EQ(parse({"--config", file, "--micro-batches", "4"}).micro_batches, 4);
  // Validation speaks of the new name whichever was given.
  EXPECT_NE(error_of({"--chunks", "8", "--batch", "4"}).find("--micro-batches"), std::string::npos);
  EXPECT_NE(error_of({"--schedule", "exponential"}).find("--lr-schedule"), std::string::npos);
  EXPECT_NE(error_of({"--schedule-kind", "interleaved"}).find("--pipeline-schedule"), std::string::npos);
}

TEST(TrainConfig, ValidationAcceptsExactlyTheRegistrysModelNames) {
  std::vector<std::string> names = models::model_names();
  for (const auto& [alias, canonical] : models::model_aliases()) names.push_back(alias);
  for (const std::string& name : names) {
    TrainConfig c;
    c.model = name;
    EXPECT_NO_THROW(c.validate()) << name;
  }
  TrainConfig c;
  c.model = "alexnet";
  EXPECT_THROW(c.validate(), engine::Error);
}
