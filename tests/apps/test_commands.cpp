// The `dgpipe` subcommands through the same entry point the binary uses (apps::run_command).
#include <gtest/gtest.h>

#include <unistd.h>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "apps/command.h"
#include "engine/io/safetensors.h"
#include "engine/ops.h"

using namespace dgpipe;
namespace fs = std::filesystem;

namespace {
// Runs a subcommand with stdout captured into a string.
int run_capture(const std::string& name, const std::vector<std::string>& args, std::string& out) {
  std::string path = ::testing::TempDir() + "dgpipe_cmd_" + std::to_string(::getpid()) + ".txt";
  std::fflush(stdout);
  int saved = dup(fileno(stdout));
  FILE* f = std::freopen(path.c_str(), "w", stdout);
  EXPECT_NE(f, nullptr);
  int rc = apps::run_command(name, args);
  std::fflush(stdout);
  dup2(saved, fileno(stdout));
  close(saved);
  std::ifstream in(path);
  out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  fs::remove(path);
  return rc;
}
}  // namespace

TEST(Commands, ModelInfoCountsEqualPyTorch) {
  // counts from torchvision / the PyTorch CIFAR definitions (scripts/goldens_models.py)
  struct Case {
    std::string model, input_size;
    std::string count;
  };
  for (const Case& c : {Case{"resnet18", "32", "11173962"}, Case{"mobilenetv2", "32", "2236682"},
                        Case{"vgg11", "32", "9231114"}, Case{"mobilenetv2", "224", "3504872"}}) {
    std::string out;
    ASSERT_EQ(run_capture("model-info", {"--model", c.model, "--input-size", c.input_size, "--counts"}, out),
              0);
    EXPECT_NE(out.find("parameters: " + c.count), std::string::npos) << c.model << "\n" << out;
  }
  std::string out;
  EXPECT_NE(run_capture("model-info", {"--model", "alexnet"}, out), 0);
}

TEST(Commands, ModelInfoShowsInsertedBottlenecks) {
  std::string out;
  ASSERT_EQ(run_capture(
                "model-info",
                {"--model", "mobilenetv2", "--balance", "1,18,1", "--bottleneck", "conv:8/2;conv:320"}, out),
            0);
  EXPECT_NE(out.find("bottleneck.0         Bottleneck conv:8/2"), std::string::npos) << out;
  EXPECT_NE(out.find("[1,32,32,32] -> [1,8,16,16]"), std::string::npos) << out;
  EXPECT_NE(out.find("[1,1280,4,4] -> [1,320,4,4]"), std::string::npos) << out;
  EXPECT_NE(out.find("bottleneck.1.decoder.0.weight [1280,320,1,1]"), std::string::npos) << out;
  // 2,236,682 of the network + conv 32->8 (k 2) and 8->128 (1x1), + conv 1280->320 and 320->1280 (1x1)
  EXPECT_NE(out.find("parameters: " + std::to_string(2236682 + (32 * 8 * 4 + 8) + (8 * 128 + 128) +
                                                     (1280 * 320 + 320) + (320 * 1280 + 1280))),
            std::string::npos)
      << out;
  EXPECT_NE(run_capture("model-info", {"--model", "mobilenetv2", "--bottleneck", "conv:8"}, out), 0);
}

TEST(Commands, CodecToolReportsEveryCodec) {
  std::string out;
  ASSERT_EQ(
      run_capture("codec",
                  {"--synthetic", "normal", "--shape", "4,8,16,16", "--codecs",
                   "uniform:8,sortquant:6+2,topk:0.1,uniform:8/channel,topk:0.5>uniform:8,delta>uniform:4",
                   "--format", "csv", "--repeat", "1", "--min-time-ms", "1"},
                  out),
      0);
  for (const char* codec : {"uniform:8", "sortquant:6+2", "topk:0.1", "uniform:8/channel",
                            "topk:0.5>uniform:8", "delta>uniform:4"})
    EXPECT_NE(out.find(codec), std::string::npos) << out;
  // On a tensor from a safetensors file
  std::string path =
      ::testing::TempDir() + "dgpipe_codec_input_" + std::to_string(::getpid()) + ".safetensors";
  engine::Generator gen(3);
  engine::save_safetensors(path, {{"act", engine::relu(engine::randn({2, 4, 8, 8}, {}, &gen))}});
  ASSERT_EQ(run_capture("codec", {"--input", path, "--codecs", "fastquant:6+2"}, out), 0);
  EXPECT_NE(out.find("fastquant:6+2"), std::string::npos) << out;
  fs::remove(path);
  // Bad specs and missing files are errors, not crashes
  EXPECT_NE(run_capture("codec", {"--codecs", "bogus:3"}, out), 0);
  EXPECT_NE(run_capture("codec", {"--input", "/nonexistent.safetensors"}, out), 0);
  EXPECT_NE(run_capture("codec", {"--repeat", "0"}, out), 0);
  EXPECT_NE(run_capture("codec", {"--min-time-ms", "-1"}, out), 0);
  EXPECT_NE(run_capture("nonexistent-command", {}, out), 0);
}

TEST(Commands, BreakEvenReadsRunSummaries) {
  fs::path dir = fs::path(::testing::TempDir()) / ("dgpipe_break_even_" + std::to_string(::getpid()));
  fs::create_directories(dir / "run");
  // 10 steps of 0.75 s training, 0.25 s of it in the codecs, 2.5 MB sent per step instead of 10 MB
  std::ofstream(dir / "run" / "summary.json")
      << R"({"compress": "sortquant:6+2", "steps": 10, "train_seconds": 7.5, "codec_seconds": 2.5,
             "wire_bytes": 25000000, "raw_bytes": 100000000})";
  std::ofstream(dir / "run" / "config.json") << R"({"channel": "local", "link_bandwidth": ""})";
  std::string out;
  ASSERT_EQ(run_capture("break-even", {(dir / "run").string(), "--bandwidths", "100mbit"}, out), 0);
  EXPECT_NE(out.find("107 Mbit/s .. 240 Mbit/s"), std::string::npos)
      << out;  // 10 MB / 0.75 s, 7.5 MB / 0.25 s
  EXPECT_NE(out.find("0.75..0.95 / 0.80..1.30"), std::string::npos) << out;
  ASSERT_EQ(run_capture("break-even", {(dir / "run").string(), "--format", "json"}, out), 0);
  nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_DOUBLE_EQ(j[0]["break_even_bits_per_s"]["serial"].get<double>(), 240e6);
  EXPECT_NE(run_capture("break-even", {(dir / "missing").string()}, out), 0);
  fs::remove_all(dir);
}
