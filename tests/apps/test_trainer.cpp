// `dgpipe train` end to end on small data: clear errors, bit-exact resume, GLUE tasks with a small encoder,
// and learning on a synthetic CIFAR-10 binary set.
#include "apps/trainer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "apps/command.h"
#include "apps/train_config.h"
#include "engine/error.h"
#include "engine/io/safetensors.h"
#include "models/registry.h"

using namespace dgpipe;
using namespace dgpipe::apps;
namespace fs = std::filesystem;

namespace {

std::string temp_dir(const std::string& name) {
  // The pid keeps concurrent runs of this suite (several build folders) out of each other's way.
  fs::path p = fs::path(::testing::TempDir()) / ("dgpipe_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// CIFAR-10 in the official binary layout (label byte + 3x1024 plane bytes per record), where the class is
// visible: a colour per class plus noise, so a small network learns it in a few steps.
std::string synthetic_cifar(int per_file) {
  std::string dir = temp_dir("cifar_bin");
  fs::path sub = fs::path(dir) / "cifar-10-batches-bin";
  fs::create_directories(sub);
  std::mt19937 gen(5);
  auto write = [&](const std::string& name, int n) {
    std::ofstream f(sub / name, std::ios::binary);
    for (int i = 0; i < n; ++i) {
      uint8_t label = static_cast<uint8_t>(gen() % 10);
      f.put(static_cast<char>(label));
      for (int c = 0; c < 3; ++c) {
        int base = ((label >> c) & 1) ? 190 : 60;
        if (c == 0 && label >= 8) base = 128;
        for (int p = 0; p < 1024; ++p) {
          int stripe = (p % 32) < (4 + 3 * label) ? 30 : 0;  // class-dependent vertical band
          int v = base + stripe + static_cast<int>(gen() % 41) - 20;
          f.put(static_cast<char>(std::clamp(v, 0, 255)));
        }
      }
    }
  };
  for (int b = 1; b <= 5; ++b) write("data_batch_" + std::to_string(b) + ".bin", per_file);
  write("test_batch.bin", per_file);
  return dir;
}

// What every small run of these tests shares: 16 samples per step in 2 micro-batches, one loader worker, no
// step logging, records into `log_dir`.
TrainConfig small_run(const std::string& log_dir) {
  TrainConfig c;
  c.batch = 16;
  c.micro_batches = 2;
  c.workers = 1;
  c.log_every = 0;
  c.log_dir = log_dir;
  return c;
}

TrainConfig small_image_config(const std::string& data_dir, const std::string& log_dir) {
  TrainConfig c = small_run(log_dir);
  c.model = "resnet18";
  c.width = 0.125;
  c.dataset = "cifar10";
  c.data_dir = data_dir;
  c.epochs = 2;
  c.stages = 2;
  c.compress = "fwd=sortquant:6+2,bwd=uniform:8";
  c.lr = 0.05;
  return c;
}

std::string tiny_roberta_config() {
  std::string dir = temp_dir("tiny_roberta");
  nlohmann::json j{{"model_type", "roberta"},
                   {"vocab_size", 50265},
                   {"hidden_size", 32},
                   {"num_hidden_layers", 2},
                   {"num_attention_heads", 4},
                   {"intermediate_size", 64},
                   {"max_position_embeddings", 130},
                   {"type_vocab_size", 1},
                   {"pad_token_id", 1},
                   {"hidden_dropout_prob", 0.1},
                   {"attention_probs_dropout_prob", 0.1},
                   {"layer_norm_eps", 1e-5},
                   {"initializer_range", 0.02},
                   {"hidden_act", "gelu"}};
  std::string path = (fs::path(dir) / "config.json").string();
  std::ofstream(path) << j.dump(2);
  return path;
}

bool have_glue() {
  return fs::exists("../shared/data/glue/RTE/train.tsv") &&
         fs::exists("../shared/data/roberta-base/vocab.json");
}

TrainConfig small_text_config(const std::string& task, const std::string& log_dir) {
  TrainConfig c = small_run(log_dir);
  c.model = "roberta";
  c.model_config = tiny_roberta_config();
  c.dataset = task;
  c.data_dir = "../shared/data/glue";
  c.tokenizer_dir = "../shared/data/roberta-base";
  c.max_len = 32;
  c.train_subset = 64;
  c.eval_subset = 48;
  c.stages = 3;
  c.placement = "client-server";
  c.epochs = 1;
  c.optimizer = "adamw";
  c.lr = 1e-3;
  c.weight_decay = 0.01;
  c.lr_schedule = "linear";
  c.warmup = 0.1;
  c.compress = "uniform:8";
  return c;
}

void expect_error(const std::vector<std::string>& args, const std::string& needle) {
  std::vector<std::string> storage = {"dgpipe train"};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : storage) argv.push_back(s.data());
  TrainConfig c;
  try {
    parse_train_args(static_cast<int>(argv.size()), argv.data(), c);
    run_training(c);
    ADD_FAILURE() << "expected an error containing '" << needle << "'";
  } catch (const engine::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

void expect_error_of_run(const TrainConfig& c, const std::string& needle) {
  try {
    run_training(c);
    ADD_FAILURE() << "expected an error containing '" << needle << "'";
  } catch (const engine::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Train, BadInputGivesClearErrors) {
  expect_error({"--model", "alexnet"}, "--model");
  expect_error({"--dataset", "mnist"}, "--dataset");
  expect_error({"--lr", "fast"}, "--lr");
  expect_error({"--lr", "-1"}, "--lr");
  expect_error({"--micro-batches", "8", "--batch", "4"}, "--micro-batches");
  expect_error({"--no-such-flag", "1"}, "no-such-flag");
  expect_error({"--preset", "imagenet-in-a-minute"}, "--preset");
  expect_error({"--placement", "ring"}, "--placement");
  expect_error({"--channel", "pigeon"}, "expected local, mpi or nccl");
  expect_error({"--precision", "fp8"}, "--precision: unknown value 'fp8'");
  expect_error({"--loss-scale", "0"}, "--loss-scale");
  expect_error({"--data-dir", "/nonexistent/cifar"}, "--data-dir");
  expect_error({"--model", "roberta", "--dataset", "cifar10", "--data-dir", synthetic_cifar(4)},
               "does not fit");
  // an unwritable log dir: a path under a regular file
  std::string file = temp_dir("logfile") + "/plain-file";
  std::ofstream(file) << "x";
  expect_error({"--data-dir", synthetic_cifar(4), "--log-dir", file + "/run"}, "--log-dir");
  // config files: unknown keys and wrong types name the file and the key
  std::string cfg = temp_dir("cfg") + "/bad.json";
  std::ofstream(cfg) << R"({"lr": 0.1, "learning_rate": 3})";
  expect_error({"--config", cfg}, "learning_rate");
  std::ofstream(cfg) << R"({"epochs": "ten"})";
  expect_error({"--config", cfg}, "epochs");
  expect_error({"--config", "/nonexistent.json"}, "--config");
  expect_error({"--resume", "--log-dir", temp_dir("empty_run"), "--data-dir", synthetic_cifar(4)},
               "--resume");
  // learned bottlenecks: the first phase needs one, a stride must divide the map, one stage has no boundary
  expect_error({"--bottleneck-epochs", "2"}, "--bottleneck is none");
  expect_error(
      {"--bottleneck", "conv:4/3", "--stages", "2", "--balance", "1,9", "--data-dir", synthetic_cifar(4)},
      "not divisible by the stride 3");
  expect_error({"--bottleneck", "conv:4", "--data-dir", synthetic_cifar(4)},
               "a single stage has no boundary");
  expect_error({"--bottleneck", "pool:2", "--stages", "2", "--data-dir", synthetic_cifar(4)}, "unknown kind");
}

TEST(Train, PrecedenceDefaultsPresetConfigFlags) {
  std::string cfg = temp_dir("cfg2") + "/c.json";
  std::ofstream(cfg) << R"({"lr": 0.02, "epochs": 7})";
  std::vector<std::string> storage = {"dgpipe train", "--preset", "demo", "--config", cfg, "--epochs", "3"};
  std::vector<char*> argv;
  for (auto& s : storage) argv.push_back(s.data());
  TrainConfig c;
  ASSERT_TRUE(parse_train_args(static_cast<int>(argv.size()), argv.data(), c));
  EXPECT_EQ(c.compress, "uniform:8");  // from the preset
  EXPECT_DOUBLE_EQ(c.lr, 0.02);        // config file over preset
  EXPECT_EQ(c.epochs, 3);              // flag over config file
  // to_json/merge_json round trip
  TrainConfig d;
  d.merge_json(c.to_json(), "round trip");
  EXPECT_EQ(d.to_json(), c.to_json());
}

TEST(Train, EveryModelNameValidationAcceptsIsOneTheTrainerTakes) {
  // Validation, the trainer and the registry share one list of names and aliases: each name validation
  // accepts trains a step on images if it is an image model, and is refused as not fitting the image task
  // (never as unknown) if it is a text model.
  std::string data = synthetic_cifar(4);
  std::vector<std::string> names = models::model_names();
  for (const auto& [alias, canonical] : models::model_aliases()) names.push_back(alias);
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    TrainConfig c = small_image_config(data, temp_dir("run_model_" + name));
    c.model = name;
    c.stages = 1;
    c.micro_batches = 1;
    c.batch = 4;
    c.epochs = 1;
    c.max_steps = 1;
    c.eval_subset = 4;
    c.compress = "none";
    ASSERT_NO_THROW(c.validate());
    if (models::is_text_model(name)) {
      try {
        run_training(c);
        ADD_FAILURE() << "a text model trained on images";
      } catch (const engine::Error& e) {
        EXPECT_NE(std::string(e.what()).find("does not fit"), std::string::npos) << e.what();
      }
      continue;
    }
    TrainSummary s = run_training(c);
    EXPECT_EQ(s.step_losses.size(), 1u);
  }
}

TEST(Train, ResumeReproducesTheUninterruptedRunExactly) {
  std::string data = synthetic_cifar(16);  // 80 train images: 5 steps of 16 per epoch
  TrainConfig full = small_image_config(data, temp_dir("run_full"));
  TrainSummary a = run_training(full);
  ASSERT_EQ(a.step_losses.size(), 10u);
  TrainConfig part = small_image_config(data, temp_dir("run_part"));
  TrainSummary b =
      run_training(part, /*stop_after_steps=*/7);  // checkpoint after epoch 1 (step 5), then "crash"
  ASSERT_EQ(b.step_losses.size(), 7u);
  part.resume = true;
  TrainSummary c = run_training(part);
  ASSERT_EQ(c.step_losses.size(), 5u);  // epoch 2 again, from the checkpoint
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(c.step_losses[i], a.step_losses[5 + i]) << "step " << 6 + i;
  for (size_t i = 0; i < 7; ++i) EXPECT_EQ(b.step_losses[i], a.step_losses[i]) << "step " << 1 + i;
  EXPECT_EQ(c.final_eval_acc, a.final_eval_acc);
  // what the log dir holds
  for (const char* f : {"config.json", "metrics.csv", "metrics.jsonl", "steps.jsonl", "summary.json",
                        "checkpoint.safetensors"})
    EXPECT_TRUE(fs::exists(fs::path(full.log_dir) / f)) << f;
  nlohmann::json s = nlohmann::json::parse(std::ifstream(fs::path(full.log_dir) / "summary.json"));
  EXPECT_GT(s["raw_bytes"].get<double>(), 0);
  EXPECT_LT(s["compression_ratio"].get<double>(), 0.3);  // 8-bit codes both ways
}

namespace {
// The records of one kind in a run's metrics.jsonl, in file order.
std::vector<nlohmann::json> metrics_records(const std::string& log_dir, const std::string& kind) {
  std::vector<nlohmann::json> out;
  std::ifstream f(fs::path(log_dir) / "metrics.jsonl");
  for (std::string line; std::getline(f, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j.value("record", "") == kind) out.push_back(j);
  }
  return out;
}
std::vector<int64_t> steps_of(const std::vector<nlohmann::json>& records) {
  std::vector<int64_t> steps;
  for (auto& j : records) steps.push_back(j["step"].get<int64_t>());
  return steps;
}
}  // namespace

TEST(Train, AResumedRunCountsTheTrafficStepsAndTimeOfTheWholeRun) {
  // Time-to-accuracy and break-even bandwidths are computed from these totals, so a run killed and resumed
  // must report what the whole run did, not its last segment; what it logged after its last checkpoint is
  // done again after the resume and logged once.
  std::string data = synthetic_cifar(16);  // 5 steps per epoch
  TrainConfig full = small_image_config(data, temp_dir("totals_full"));
  full.eval_every = 2;
  full.codec_error_every = 3;
  TrainSummary a = run_training(full);
  TrainConfig part = full;
  part.log_dir = temp_dir("totals_part");
  run_training(part, /*stop_after_steps=*/7);  // checkpoint at step 5, logs up to step 7, then "killed"
  part.resume = true;
  TrainSummary c = run_training(part);
  EXPECT_EQ(a.steps, 10);
  EXPECT_EQ(c.steps, 10);
  EXPECT_EQ(c.totals.wire_bytes, a.totals.wire_bytes);
  EXPECT_EQ(c.totals.raw_bytes, a.totals.raw_bytes);
  EXPECT_EQ(a.totals.segments, 1);
  EXPECT_EQ(c.totals.segments, 2);
  ASSERT_EQ(c.epochs.size(), 1u);                          // this segment trained epoch 2 only ...
  EXPECT_GT(c.totals.train_seconds, c.epochs[0].seconds);  // ... the total counts epoch 1 too
  EXPECT_GT(c.totals.codec_seconds, 0.0);
  nlohmann::json s = nlohmann::json::parse(std::ifstream(fs::path(part.log_dir) / "summary.json"));
  EXPECT_EQ(s["steps"].get<int64_t>(), 10);
  EXPECT_EQ(s["wire_bytes"].get<uint64_t>(), a.totals.wire_bytes);
  EXPECT_EQ(s["segments"].get<int64_t>(), 2);
  // metrics.jsonl: every record once, the resumed run's as the uninterrupted run's
  auto evals = metrics_records(part.log_dir, "eval"), full_evals = metrics_records(full.log_dir, "eval");
  EXPECT_EQ(steps_of(evals), (std::vector<int64_t>{2, 4, 6, 8, 10}));
  ASSERT_EQ(full_evals.size(), evals.size());
  for (size_t i = 0; i < evals.size(); ++i) {
    EXPECT_EQ(evals[i]["eval_acc"], full_evals[i]["eval_acc"]) << "step " << evals[i]["step"];
    EXPECT_EQ(evals[i]["run"]["wire_bytes"], full_evals[i]["run"]["wire_bytes"])
        << "step " << evals[i]["step"];
  }
  EXPECT_EQ(steps_of(metrics_records(part.log_dir, "epoch")), (std::vector<int64_t>{5, 10}));
  auto errors = metrics_records(part.log_dir, "codec_error");
  EXPECT_EQ(steps_of(errors), (std::vector<int64_t>{1, 4, 7, 10}));
  // codec error per boundary and direction: fwd=sortquant:6+2, bwd=uniform:8 on one boundary
  for (auto& record : errors) {
    ASSERT_EQ(record["boundaries"].size(), 2u) << record.dump();
    for (auto& b : record["boundaries"]) {
      EXPECT_EQ(b["boundary"], "0->1");
      EXPECT_EQ(b["codec"], b["direction"] == "fwd" ? "sortquant:6+2" : "uniform:8");
      EXPECT_EQ(b["messages"], 2);  // one per micro-batch of the measured step
      EXPECT_GT(b["rel_l2"].get<double>(), 0.0);
      EXPECT_LT(b["rel_l2"].get<double>(), 0.2);
      EXPECT_GT(b["cosine"].get<double>(), 0.98);
      EXPECT_LE(b["cosine"].get<double>(), 1.0 + 1e-12);
    }
  }
}

TEST(Train, MeasuringTheCodecErrorLeavesTrainingUnchanged) {
  // The measurement decodes with a second instance of each codec, so the sending codecs (here with error
  // feedback, whose residual an extra decode through the same instance could disturb) train as without it.
  std::string data = synthetic_cifar(16);
  TrainConfig off = small_image_config(data, temp_dir("codec_error_off"));
  off.compress = "fwd=sortquant:3+1+ef,bwd=power:2";
  off.codec_error_every = 0;
  TrainConfig on = off;
  on.log_dir = temp_dir("codec_error_on");
  on.codec_error_every = 1;
  TrainSummary a = run_training(off), b = run_training(on);
  EXPECT_EQ(a.step_losses, b.step_losses);
  EXPECT_EQ(metrics_records(off.log_dir, "codec_error").size(), 0u);
  EXPECT_EQ(metrics_records(on.log_dir, "codec_error").size(), 10u);
}

// The acceptance test of checkpoints under mixed precision: the loss scale and its growth count, the fp32
// master weights and the half model come back, so a resumed run reproduces the uninterrupted one bit for
// bit. A short growth interval makes the scale grow during the run (fp16 gradients are rounded at the scale,
// so a lost scale would show in the losses).
TEST(Train, MixedPrecisionResumeReproducesTheUninterruptedRunExactly) {
  std::string data = synthetic_cifar(16);  // 5 steps per epoch
  for (std::string precision : {"mixed", "fp16", "bf16"}) {
    SCOPED_TRACE(precision);
    auto config = [&](const std::string& name) {
      TrainConfig c = small_image_config(data, temp_dir(name + "_" + precision));
      c.precision = precision;
      c.loss_scale = 256;
      c.loss_scale_growth_interval = 3;
      return c;
    };
    TrainSummary a = run_training(config("amp_full"));
    ASSERT_EQ(a.step_losses.size(), 10u);
    TrainConfig part = config("amp_part");
    run_training(part, /*stop_after_steps=*/7);  // checkpoint after epoch 1 (step 5), then "crash"
    part.resume = true;
    TrainSummary c = run_training(part);
    ASSERT_EQ(c.step_losses.size(), 5u);
    for (size_t i = 0; i < 5; ++i) EXPECT_EQ(c.step_losses[i], a.step_losses[5 + i]) << "step " << 6 + i;
    EXPECT_EQ(c.final_eval_acc, a.final_eval_acc);
    TrainConfig other = part;
    other.precision = precision == "fp16" ? "bf16" : "fp16";
    expect_error_of_run(other, "was written with --precision " + precision);
  }
}

// The steps the loss scaler skipped belong to the whole run, like its traffic: a scale far too large makes
// every early fp16 step overflow, including those of the segment before the resume.
TEST(Train, SkippedStepsAreCountedOverTheWholeRunAcrossResume) {
  std::string data = synthetic_cifar(16);  // 5 steps per epoch
  auto config = [&](const std::string& name) {
    TrainConfig c = small_image_config(data, temp_dir(name));
    c.precision = "fp16";
    c.loss_scale = std::ldexp(1.0, 40);
    return c;
  };
  auto skipped = [](const TrainConfig& c) {
    nlohmann::json j = nlohmann::json::parse(std::ifstream(fs::path(c.log_dir) / "summary.json"));
    return j.at("skipped_steps").get<int64_t>();
  };
  TrainConfig full = config("skips_full");
  run_training(full);
  TrainConfig part = config("skips_part");
  run_training(part, /*stop_after_steps=*/7);  // checkpoint after epoch 1 (step 5), then "crash"
  part.resume = true;
  run_training(part);
  EXPECT_GT(skipped(full), 5) << "the test needs skipped steps in both segments";
  EXPECT_EQ(skipped(part), skipped(full));
}

TEST(Train, LearnsSyntheticImages) {
  std::string data = synthetic_cifar(64);  // 320 train images
  TrainConfig c = small_image_config(data, temp_dir("run_learn"));
  c.epochs = 6;
  c.batch = 32;
  c.lr = 0.05;
  c.stages = 3;
  c.placement = "client-server";
  TrainSummary s = run_training(c);
  ASSERT_FALSE(s.epochs.empty());
  EXPECT_LT(s.epochs.back().train_loss, s.epochs.front().train_loss);
  EXPECT_GT(s.final_eval_acc, 0.5) << "10 classes: chance is 0.1";
}

TEST(Train, GlueTasksRunEndToEndWithASmallEncoder) {
  if (!have_glue()) GTEST_SKIP() << "../shared/data/glue or the roberta-base tokenizer is absent";
  for (std::string task : {"rte", "cola", "sst2"}) {
    SCOPED_TRACE(task);
    TrainConfig c = small_text_config(task, temp_dir("run_" + task));
    TrainSummary s = run_training(c);
    ASSERT_EQ(s.epochs.size(), 1u);
    EXPECT_TRUE(std::isfinite(s.epochs[0].train_loss));
    EXPECT_GT(s.epochs[0].eval_acc, 0.0);
    EXPECT_GE(s.final_eval_mcc, -1.0);
    EXPECT_LE(s.final_eval_mcc, 1.0);
    nlohmann::json j = nlohmann::json::parse(std::ifstream(fs::path(c.log_dir) / "summary.json"));
    EXPECT_TRUE(j.contains("final_eval_mcc"));
  }
}

TEST(Train, TextResumeIsExactWithDropout) {
  if (!have_glue()) GTEST_SKIP() << "../shared/data/glue or the roberta-base tokenizer is absent";
  TrainConfig full = small_text_config("rte", temp_dir("rte_full"));
  full.epochs = 2;
  full.train_subset = 32;
  TrainSummary a = run_training(full);
  TrainConfig part = small_text_config("rte", temp_dir("rte_part"));
  part.epochs = 2;
  part.train_subset = 32;
  run_training(part, 3);  // 2 steps per epoch: checkpoint at step 2, stop at 3
  part.resume = true;
  TrainSummary c = run_training(part);
  ASSERT_EQ(a.step_losses.size(), 4u);
  ASSERT_EQ(c.step_losses.size(), 2u);
  EXPECT_EQ(c.step_losses[0], a.step_losses[2]);
  EXPECT_EQ(c.step_losses[1], a.step_losses[3]);
}

TEST(Train, TwoPhaseBottleneckLearnsAndResumesExactly) {
  // conv:4/2 after the stem of a ResNet18/8 ([8,32,32] -> [4,16,16], 1/8 of the boundary), one autoencoder
  // epoch, then training of everything; the bottleneck is in the checkpoint and a resumed run continues
  // exactly.
  std::string data = synthetic_cifar(64);
  auto config = [&](const std::string& log) {
    TrainConfig c = small_image_config(data, temp_dir(log));
    c.batch = 32;
    c.epochs = 5;
    c.balance = "1,9";
    c.compress = "none";
    c.bottleneck = "conv:4/2";
    c.bottleneck_epochs = 1;
    return c;
  };
  TrainConfig full = config("bn_full");
  TrainSummary a = run_training(full);
  ASSERT_EQ(a.epochs.size(), 5u);
  EXPECT_LT(a.epochs.back().train_loss, a.epochs.front().train_loss);
  EXPECT_GT(a.final_eval_acc, 0.3) << "10 classes: chance is 0.1";
  // Only the bottleneck tensor crosses forward: an eighth of the boundary's f32 bytes (plus headers).
  EXPECT_LT(static_cast<double>(a.totals.wire_bytes) / a.totals.raw_bytes, 0.13);
  engine::SafetensorsFile ckpt =
      engine::load_safetensors((fs::path(full.log_dir) / "checkpoint.safetensors").string());
  EXPECT_TRUE(ckpt.tensors.count("model.bottleneck.0.encoder.weight"));
  TrainConfig part = config("bn_part");
  run_training(part, /*stop_after_steps=*/23);  // 10 steps per epoch: checkpoint at step 20
  part.resume = true;
  TrainSummary c = run_training(part);
  ASSERT_EQ(c.step_losses.size(), 30u);
  for (size_t i = 0; i < 30; ++i) EXPECT_EQ(c.step_losses[i], a.step_losses[20 + i]) << "step " << 21 + i;
}

TEST(Train, DeltaCodecSendsChangesFromTheSecondEpoch) {
  std::string data = synthetic_cifar(16);
  TrainConfig c = small_image_config(data, temp_dir("delta_run"));
  c.compress = "fwd=delta>uniform:4,bwd=uniform:8";
  c.augment = false;  // the same images every epoch: their activations change only as the model does
  c.epochs = 3;
  TrainSummary s = run_training(c);
  ASSERT_EQ(s.epochs.size(), 3u);
  auto ratio = [&](size_t e) { return static_cast<double>(s.epochs[e].wire_bytes) / s.epochs[e].raw_bytes; };
  // Epoch 1: exact first sends forward, 8 bits back (about 0.63 of f32); then 4-bit changes (about 0.19).
  EXPECT_GT(ratio(0), 0.5);
  EXPECT_LT(ratio(2), 0.25);
  std::ifstream metrics(fs::path(c.log_dir) / "metrics.jsonl");
  std::string line;
  nlohmann::json j;
  // The first epoch record (codec-error records are lines of their own).
  while (std::getline(metrics, line) && !j.contains("stages")) j = nlohmann::json::parse(line);
  ASSERT_TRUE(j.contains("stages")) << "no epoch record in metrics.jsonl";
  // One f32 reference per training image of the boundary tensor [16,16,16] (after layer2.1, blocks 5,5).
  EXPECT_EQ(j["stages"][0]["fwd_codec_state_bytes"].get<uint64_t>(), 80u * 16u * 16u * 16u * 4u);
}

TEST(Train, LinearBottleneckInATextEncoder) {
  if (!have_glue()) GTEST_SKIP() << "../shared/data/glue or the roberta-base tokenizer is absent";
  TrainConfig c = small_text_config("rte", temp_dir("text_bn"));
  c.bottleneck = "linear:8";  // hidden 32 -> 8 at both boundaries
  c.bottleneck_epochs = 1;
  c.compress = "none";
  TrainSummary s = run_training(c);
  ASSERT_EQ(s.epochs.size(), 1u);
  EXPECT_TRUE(std::isfinite(s.epochs[0].train_loss));
  EXPECT_LT(static_cast<double>(s.totals.wire_bytes) / s.totals.raw_bytes, 0.3);
}
