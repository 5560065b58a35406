#include "apps/train_config.h"

#include <CLI/CLI.hpp>

#include <cmath>
#include <fstream>
#include <iostream>
#include <set>

#include "engine/amp.h"
#include "engine/error.h"
#include "models/registry.h"

namespace dgpipe::apps {

// Every option once: key, help. Flags are the keys with '-' for '_'.
#define DGP_TRAIN_FIELDS(X)                                                                                \
  X(model, "model: " + models::model_names_help())                                                         \
  X(dataset, "dataset: cifar10 | cifar100 | imagefolder | rte | cola | sst2 | mrpc | qnli")                \
  X(data_dir, "dataset folder (default: data-cache/<dataset> for images, ../shared/data/glue for GLUE)")   \
  X(tokenizer_dir, "tokenizer files: vocab.json+merges.txt (roberta) or vocab.txt (bert)")                 \
  X(num_classes, "classes of the head (-1: the dataset's)")                                                \
  X(max_len, "text: tokens per example (padded/truncated)")                                                \
  X(input_size, "image models: 32 (CIFAR geometry) or 224 (ImageNet geometry; images are resized)")        \
  X(width, "image models: width multiplier (1.0 = the published network)")                                 \
  X(model_config,                                                                                          \
    "text models: a Hugging Face config.json with the sizes (default: roberta-base / MiniLM-L6)")          \
  X(train_subset, "train on the first N samples only (0: all)")                                            \
  X(eval_subset, "evaluate on the first N samples only (0: all)")                                          \
  X(augment, "images: random crop with padding and horizontal flip in training")                           \
  X(optimizer, "sgd | adamw")                                                                              \
  X(lr, "peak learning rate")                                                                              \
  X(momentum, "SGD momentum")                                                                              \
  X(nesterov, "SGD Nesterov momentum")                                                                     \
  X(weight_decay, "weight decay (L2 for SGD, decoupled for AdamW)")                                        \
  X(no_decay_norms, "no weight decay on biases and normalisation weights")                                 \
  X(lr_schedule,                                                                                           \
    "learning-rate schedule: constant | cosine | linear | polynomial | step (stepped per iteration)")      \
  X(warmup, "linear warm-up: a fraction of all steps if < 1, else a number of steps")                      \
  X(lr_end, "polynomial schedule: final learning rate")                                                    \
  X(step_size, "step schedule: decay every N steps (0: every epoch)")                                      \
  X(gamma, "step schedule: decay factor")                                                                  \
  X(epochs, "epochs")                                                                                      \
  X(max_steps, "stop after N optimizer steps (0: run all epochs)")                                         \
  X(batch, "mini-batch size (split into --micro-batches micro-batches)")                                   \
  X(eval_batch, "evaluation batch size (0: --batch)")                                                      \
  X(clip, "clip gradients to this global L2 norm (0: off)")                                                \
  X(label_smoothing, "cross-entropy label smoothing")                                                      \
  X(stages, "pipeline stages")                                                                             \
  X(balance, "blocks per stage: '1,17,1', 'auto' (by measured time), or empty (equal counts)")             \
  X(placement, "chain (stage i on rank i) | client-server (rank 0 runs the first and last stage)")         \
  X(devices, "device of every stage, or one per stage: cpu | cuda:0 | cpu,cuda:0,cpu")                     \
  X(micro_batches, "micro-batches per mini-batch")                                                         \
  X(pipeline_schedule, "pipeline schedule: gpipe (fill-drain) | 1f1b")                                     \
  X(compress,                                                                                              \
    "boundary codecs: SPEC | fwd=SPEC,bwd=SPEC | per boundary separated by ';' (see dgpipe codec)")        \
  X(bottleneck,                                                                                            \
    "learned bottlenecks at the boundaries: none | conv:C[/S] | linear:R, one for all or per boundary "    \
    "separated by ';' (e.g. 'conv:8/2;none')")                                                             \
  X(bottleneck_epochs,                                                                                     \
    "first phase of the two-phase recipe: epochs that train only the bottlenecks, as autoencoders of the " \
    "boundary activations (0: none)")                                                                      \
  X(bottleneck_lr, "learning rate of that first phase (0: --lr)")                                          \
  X(link_bandwidth, "emulate a slow link between stages, e.g. 1gbit, 100mbit, 50MB")                       \
  X(link_latency, "emulated link latency, e.g. 5ms")                                                       \
  X(channel,                                                                                               \
    "local (stages as threads of one process) | mpi (one process per rank, start with mpirun) | nccl "     \
    "(as mpi, activations GPU to GPU; one GPU per rank; untested)")                                        \
  X(peer_timeout,                                                                                          \
    "seconds a stage waits for a message before it names the peer dead or stuck (0: 10 x the slowest of "  \
    "the last 20 steps, at least 30 s; 120 s for the first step)")                                         \
  X(seed_compat, "reproduce the original's choices: sum of micro-batch losses")                            \
  X(recompute, "recompute activations in backward instead of keeping them")                                \
  X(deferred_bn,                                                                                           \
    "batch-norm running statistics over the whole mini-batch (default: per micro-batch, as the original)") \
  X(precision,                                                                                             \
    "fp32 | mixed: autocast (GEMMs and convolutions in f16; norms, softmax, losses, reductions in fp32), " \
    "fp32 weights, dynamic loss scaling | mixed-bf16: the same in bf16, no loss scaling | fp16 | bf16: "   \
    "weights and activations stored in half, fp32 master weights in the optimizer, normalisation layers "  \
    "(with their statistics) in fp32; fp16 with loss scaling. Half boundaries send half the bytes. A GPU " \
    "runs half on tensor cores; the CPU runs the same precisions as the GPU's twin (half storage, f32 "    \
    "arithmetic rounded to half at the same ops), correct but slower than fp32")                           \
  X(loss_scale, "fp16 and mixed: initial loss scale (dynamic: halved on a step with inf/NaN gradients)")   \
  X(loss_scale_growth_interval, "fp16 and mixed: the loss scale doubles after this many good steps")       \
  X(seed, "run seed: initialisation, shuffling, augmentation, dropout")                                    \
  X(workers, "data loader worker threads")                                                                 \
  X(log_dir, "folder for config.json, metrics.csv/.jsonl, checkpoints, summary.json")                      \
  X(resume, "continue the run in --log-dir from its last checkpoint")                                      \
  X(eval_only, "only evaluate (the checkpoint in --log-dir, or --init-from)")                              \
  X(init_from, "initialise from a pretrained checkpoint (safetensors, PyTorch/Hugging Face names)")        \
  X(log_every, "progress line every N steps (0: once per epoch)")                                          \
  X(eval_every,                                                                                            \
    "also evaluate on the held-out set every N training steps, with the training wall-clock, into "        \
    "metrics.jsonl (0: at epoch ends only)")                                                               \
  X(codec_error_every,                                                                                     \
    "every N steps, log each boundary's relative L2 error and cosine of decode(encode(x)) against x "      \
    "into metrics.jsonl (0: never)")                                                                       \
  X(checkpoint_every, "epochs between checkpoints (0: only at the end)")                                   \
  X(trace, "write a Chrome/Perfetto trace of the first --trace-steps steps to this file")                  \
  X(trace_steps, "steps recorded by --trace")

namespace {

// Old names of renamed settings (key in config files, flag on the command line), each with its current name.
const std::vector<std::pair<std::string, std::string>>& setting_aliases() {
  static const std::vector<std::pair<std::string, std::string>> aliases = {
      {"chunks", "micro_batches"}, {"schedule", "lr_schedule"}, {"schedule_kind", "pipeline_schedule"}};
  return aliases;
}

// j with every old key replaced by its current name (both at once is an error: which one would win is a
// guess).
nlohmann::json with_current_keys(nlohmann::json j, const std::string& source) {
  for (const auto& [old_key, key] : setting_aliases()) {
    if (!j.contains(old_key)) continue;
    DGP_CHECK(!j.contains(key),
              source << ": '" << old_key << "' is the old name of '" << key << "'; give only one of them");
    j[key] = j[old_key];
    j.erase(old_key);
  }
  return j;
}

std::string flag_of(const std::string& key) {
  std::string f = key;
  for (char& c : f)
    if (c == '_') c = '-';
  return "--" + f;
}

template <class T>
void assign(T& field, const nlohmann::json& v, const std::string& key, const std::string& source) {
  try {
    if constexpr (std::is_same_v<T, bool>) {
      DGP_CHECK(v.is_boolean(), source << ": '" << key << "' must be true or false, got " << v.dump());
    } else if constexpr (std::is_same_v<T, std::string>) {
      DGP_CHECK(v.is_string(), source << ": '" << key << "' must be a string, got " << v.dump());
    } else if constexpr (std::is_integral_v<T>) {
      DGP_CHECK(v.is_number_integer() || v.is_number_unsigned(),
                source << ": '" << key << "' must be an integer, got " << v.dump());
    } else {
      DGP_CHECK(v.is_number(), source << ": '" << key << "' must be a number, got " << v.dump());
    }
    field = v.get<T>();
  } catch (const nlohmann::json::exception& e) {
    DGP_FAIL(source << ": bad value for '" << key << "': " << e.what());
  }
}

// Converts a flag's text to the JSON type of the field (so flags and config files share merge_json).
template <class T>
nlohmann::json parse_flag_value(const T&, const std::string& key, const std::string& text) {
  const std::string flag = flag_of(key);
  if constexpr (std::is_same_v<T, bool>) {
    if (text == "true" || text == "1" || text == "yes" || text == "on" || text.empty()) return true;
    if (text == "false" || text == "0" || text == "no" || text == "off") return false;
    DGP_FAIL(flag << ": expected true or false, got '" << text << "'");
  } else if constexpr (std::is_same_v<T, std::string>) {
    return text;
  } else if constexpr (std::is_integral_v<T>) {
    char* end = nullptr;
    long long v = std::strtoll(text.c_str(), &end, 10);
    DGP_CHECK(!text.empty() && end && *end == '\0', flag << ": expected an integer, got '" << text << "'");
    if constexpr (std::is_unsigned_v<T>) {
      DGP_CHECK(v >= 0, flag << ": expected a non-negative integer, got '" << text << "'");
      return static_cast<uint64_t>(v);
    } else {
      return static_cast<int64_t>(v);
    }
  } else {
    char* end = nullptr;
    double v = std::strtod(text.c_str(), &end);
    DGP_CHECK(!text.empty() && end && *end == '\0', flag << ": expected a number, got '" << text << "'");
    return v;
  }
}

}  // namespace

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j;
#define X(name, help) j[#name] = name;
  DGP_TRAIN_FIELDS(X)
#undef X
  j["preset"] = preset;
  return j;
}

void TrainConfig::merge_json(const nlohmann::json& given, const std::string& source) {
  DGP_CHECK(given.is_object(), source << ": expected a JSON object of settings");
  const nlohmann::json j = with_current_keys(given, source);
  static const std::set<std::string> known = [] {
    std::set<std::string> k;
#define X(name, help) k.insert(#name);
    DGP_TRAIN_FIELDS(X)
#undef X
    k.insert("preset");
    return k;
  }();
  for (auto it = j.begin(); it != j.end(); ++it)
    DGP_CHECK(known.count(it.key()),
              source << ": unknown setting '" << it.key() << "' (see dgpipe train --help)");
#define X(name, help) \
  if (j.contains(#name)) assign(name, j[#name], #name, source);
  DGP_TRAIN_FIELDS(X)
#undef X
  if (j.contains("preset")) assign(preset, j["preset"], "preset", source);
}

void TrainConfig::validate() const {
  DGP_CHECK(!models::canonical_model_name(model).empty(),
            "--model: unknown model '" << model << "' (expected " << models::model_names_help() << ")");
  static const std::set<std::string> datasets = {"cifar10", "cifar100", "imagefolder", "rte",
                                                 "cola",    "sst2",     "mrpc",        "qnli"};
  DGP_CHECK(datasets.count(dataset),
            "--dataset: unknown dataset '"
                << dataset << "' (expected cifar10, cifar100, imagefolder, rte, cola, sst2, mrpc or qnli)");
  DGP_CHECK(optimizer == "sgd" || optimizer == "adamw",
            "--optimizer: expected sgd or adamw, got '" << optimizer << "'");
  DGP_CHECK(lr > 0, "--lr: must be positive, got " << lr);
  DGP_CHECK(momentum >= 0 && momentum < 1, "--momentum: must be in [0,1), got " << momentum);
  DGP_CHECK(weight_decay >= 0, "--weight-decay: must be >= 0, got " << weight_decay);
  static const std::set<std::string> schedules = {"constant", "cosine", "linear", "polynomial", "step"};
  DGP_CHECK(schedules.count(lr_schedule),
            "--lr-schedule: unknown '" << lr_schedule << "' (constant, cosine, linear, polynomial, step)");
  DGP_CHECK(warmup >= 0, "--warmup: must be >= 0, got " << warmup);
  DGP_CHECK(epochs >= 1, "--epochs: must be >= 1, got " << epochs);
  DGP_CHECK(max_steps >= 0, "--max-steps: must be >= 0, got " << max_steps);
  DGP_CHECK(batch >= 1, "--batch: must be >= 1, got " << batch);
  DGP_CHECK(eval_batch >= 0, "--eval-batch: must be >= 0, got " << eval_batch);
  DGP_CHECK(clip >= 0, "--clip: must be >= 0, got " << clip);
  DGP_CHECK(label_smoothing >= 0 && label_smoothing < 1,
            "--label-smoothing: must be in [0,1), got " << label_smoothing);
  DGP_CHECK(stages >= 1 && stages <= 64, "--stages: must be in 1..64, got " << stages);
  DGP_CHECK(micro_batches >= 1, "--micro-batches: must be >= 1, got " << micro_batches);
  DGP_CHECK(batch >= micro_batches,
            "--batch " << batch << " is smaller than --micro-batches " << micro_batches);
  DGP_CHECK(placement == "chain" || placement == "client-server",
            "--placement: expected chain or client-server, got '" << placement << "'");
  DGP_CHECK(pipeline_schedule == "gpipe" || pipeline_schedule == "1f1b",
            "--pipeline-schedule: expected gpipe or 1f1b, got '" << pipeline_schedule << "'");
  DGP_CHECK(peer_timeout >= 0,
            "--peer-timeout: must be >= 0 seconds (0: scaled with the step time), got " << peer_timeout);
  DGP_CHECK(channel == "local" || channel == "mpi" || channel == "nccl",
            "--channel: expected local, mpi or nccl, got '" << channel << "'");
  engine::amp::parse_precision(precision);  // throws naming --precision and the accepted values
  DGP_CHECK(loss_scale > 0 && std::isfinite(loss_scale),
            "--loss-scale: must be positive, got " << loss_scale);
  DGP_CHECK(loss_scale_growth_interval >= 1,
            "--loss-scale-growth-interval: must be >= 1, got " << loss_scale_growth_interval);
  DGP_CHECK(input_size == 32 || input_size == 224 || (input_size >= 16 && input_size <= 512),
            "--input-size: expected 32 or 224, got " << input_size);
  DGP_CHECK(width > 0 && width <= 4, "--width: must be in (0, 4], got " << width);
  DGP_CHECK(max_len >= 8 && max_len <= 512, "--max-len: must be in 8..512, got " << max_len);
  DGP_CHECK(workers >= 0 && workers <= 64, "--workers: must be in 0..64, got " << workers);
  DGP_CHECK(train_subset >= 0 && eval_subset >= 0, "--train-subset/--eval-subset: must be >= 0");
  DGP_CHECK(log_every >= 0 && checkpoint_every >= 0, "--log-every/--checkpoint-every: must be >= 0");
  DGP_CHECK(eval_every >= 0 && codec_error_every >= 0, "--eval-every/--codec-error-every: must be >= 0");
  DGP_CHECK(!log_dir.empty(), "--log-dir: must not be empty");
  DGP_CHECK(bottleneck_epochs >= 0 && bottleneck_lr >= 0,
            "--bottleneck-epochs/--bottleneck-lr: must be >= 0");
  DGP_CHECK(bottleneck_epochs == 0 || (bottleneck != "none" && !bottleneck.empty()),
            "--bottleneck-epochs " << bottleneck_epochs << " trains bottlenecks, but --bottleneck is none");
  DGP_CHECK(!(resume && !init_from.empty()), "--resume and --init-from exclude each other");
}

std::vector<std::string> preset_names() {
  return {"demo",
          "cifar10-mobilenetv2",
          "cifar10-mobilenetv2-sq8",
          "cifar10-mobilenetv2-bottleneck",
          "cifar10-resnet18",
          "rte-roberta",
          "rte-roberta-bottleneck",
          "cola-roberta",
          "sst2-roberta"};
}

namespace {

// `base` with the keys of `changes` set: a preset that is another one with a few values changed.
nlohmann::json with_changes(nlohmann::json base, const nlohmann::json& changes) {
  base.update(changes);
  return base;
}

// The standard CIFAR recipe: SGD with Nesterov momentum 0.9, lr 0.1 with cosine decay, weight decay 5e-4.
nlohmann::json with_cifar_sgd(nlohmann::json j) {
  return with_changes(std::move(j), {{"optimizer", "sgd"},
                                     {"lr", 0.1},
                                     {"momentum", 0.9},
                                     {"nesterov", true},
                                     {"weight_decay", 5e-4},
                                     {"lr_schedule", "cosine"}});
}

// The make-run job: a real client-server pipeline on CIFAR-10 that finishes in a few minutes on 2 CPU cores.
nlohmann::json demo_preset() {
  return with_cifar_sgd({{"model", "resnet18"},
                         {"width", 0.25},
                         {"dataset", "cifar10"},
                         {"train_subset", 20000},
                         {"eval_subset", 2000},
                         {"epochs", 2},
                         {"batch", 64},
                         {"micro_batches", 4},
                         {"stages", 3},
                         {"placement", "client-server"},
                         {"compress", "uniform:8"},  // chosen from docs/results.md: see README.md
                         {"warmup", 0.05},
                         {"log_every", 50},
                         {"log_dir", "runs/demo"}});
}

// CIFAR-10 MobileNetV2 from scratch (the research notes' "tfs" row, 94.07%: docs/original.md#r1), standard
// SGD recipe.
nlohmann::json cifar10_mobilenetv2_preset() {
  return with_cifar_sgd({{"model", "mobilenetv2"},
                         {"dataset", "cifar10"},
                         {"epochs", 200},
                         {"batch", 128},
                         {"micro_batches", 4},
                         {"stages", 3},
                         {"placement", "client-server"},
                         {"warmup", 0.01},
                         {"log_dir", "runs/cifar10-mobilenetv2"}});
}

// GLUE fine-tuning as the original (docs/original.md#hyper-parameters): AdamW, lr 2e-5, linear warm-up over
// 10% of the steps, max length 128, batch 32 in 4 micro-batches; client-server split with the first and last
// layers on the client.
nlohmann::json glue_roberta_preset(const std::string& task, int64_t epochs) {
  return nlohmann::json{{"model", "roberta"},
                        {"dataset", task},
                        {"epochs", epochs},
                        {"batch", 32},
                        {"micro_batches", 4},
                        {"stages", 3},
                        {"placement", "client-server"},
                        {"optimizer", "adamw"},
                        {"lr", 2e-5},
                        {"weight_decay", 0.0},
                        {"lr_schedule", "linear"},
                        {"warmup", 0.1},
                        {"max_len", 128},
                        {"augment", false},
                        {"tokenizer_dir", "data-cache/roberta-base"},
                        {"log_dir", "runs/" + task + "-roberta"}};
}

// The research's two-phase recipe for learned bottlenecks (docs/original.md, "Convolution insertion"), at the
// "first layer, last layer" cut: a 16x smaller first boundary (conv:8/2: [32,32,32] -> [8,16,16]) and a 4x
// smaller last one (1280 -> 320 channels). Phase 1 trains only the bottlenecks as autoencoders of the
// boundary activations (the original: 10 epochs, SGD 0.01 scaled to the batch, cosine); phase 2 fine-tunes
// everything. Meant for a pretrained backbone (--init-from); from scratch, phase 1 fits the random backbone's
// activations.
nlohmann::json cifar10_mobilenetv2_bottleneck_preset() {
  return with_changes(cifar10_mobilenetv2_preset(), {{"balance", "1,18,1"},
                                                     {"bottleneck", "conv:8/2;conv:320"},
                                                     {"bottleneck_epochs", 10},
                                                     {"bottleneck_lr", 0.02},
                                                     {"epochs", 40},
                                                     {"lr", 0.01},
                                                     {"log_dir", "runs/cifar10-mobilenetv2-bottleneck"}});
}

// The NLP counterpart ("Linear insertion"): linear:200 at both client-server boundaries of RoBERTa-base
// (Condition 4's cut, blocks 2,11,1), pre-trained as autoencoders for 5 epochs with AdamW at 1e-3, then
// fine-tuned as the rte-roberta preset.
nlohmann::json rte_roberta_bottleneck_preset() {
  return with_changes(glue_roberta_preset("rte", 20), {{"balance", "2,11,1"},
                                                       {"bottleneck", "linear:200"},
                                                       {"bottleneck_epochs", 5},
                                                       {"bottleneck_lr", 1e-3},
                                                       {"log_dir", "runs/rte-roberta-bottleneck"}});
}

}  // namespace

nlohmann::json preset(const std::string& name) {
  if (name == "demo") return demo_preset();
  if (name == "cifar10-mobilenetv2") return cifar10_mobilenetv2_preset();
  if (name == "cifar10-mobilenetv2-sq8")
    return with_changes(cifar10_mobilenetv2_preset(),
                        {{"compress", "sortquant:6+2"}, {"log_dir", "runs/cifar10-mobilenetv2-sq8"}});
  if (name == "cifar10-mobilenetv2-bottleneck") return cifar10_mobilenetv2_bottleneck_preset();
  if (name == "rte-roberta-bottleneck") return rte_roberta_bottleneck_preset();
  if (name == "cifar10-resnet18")
    return with_changes(cifar10_mobilenetv2_preset(),
                        {{"model", "resnet18"}, {"log_dir", "runs/cifar10-resnet18"}});
  if (name == "rte-roberta") return glue_roberta_preset("rte", 20);
  if (name == "cola-roberta") return glue_roberta_preset("cola", 20);
  if (name == "sst2-roberta") return glue_roberta_preset("sst2", 3);
  DGP_FAIL("--preset: unknown preset '" << name << "'\n" << preset_help());
}

std::string preset_help() {
  return "presets:\n"
         "  demo                     the make-run job: client-server ResNet18/4 on 20k CIFAR-10 images, "
         "uniform:8, ~3 min on 2 CPU cores\n"
         "  cifar10-mobilenetv2      CIFAR-10 MobileNetV2 from scratch, SGD 0.1 cosine, 200 epochs, 3 stages "
         "client-server\n"
         "  cifar10-mobilenetv2-sq8  the same with sortquant:6+2 at both boundaries (the research's SQ8)\n"
         "  cifar10-mobilenetv2-bottleneck\n"
         "                           the two-phase recipe: conv bottlenecks at both boundaries (1/16, 1/4), "
         "10 autoencoder epochs, then 40 of fine-tuning (use --init-from)\n"
         "  cifar10-resnet18         CIFAR-10 ResNet18 from scratch\n"
         "  rte-roberta | cola-roberta | sst2-roberta\n"
         "                           GLUE fine-tuning as the original: AdamW 2e-5, warm-up 10%, max length "
         "128, batch 32/4\n"
         "  rte-roberta-bottleneck   the two-phase recipe on RTE: linear:200 at both boundaries, 5 "
         "autoencoder "
         "epochs, then the rte-roberta fine-tuning\n";
}

namespace {

// "--micro-batches,--chunks": a setting's flag and the flags of its old names.
std::string flag_names(const std::string& key) {
  std::string names = flag_of(key);
  for (const auto& [old_key, current] : setting_aliases())
    if (current == key) names += "," + flag_of(old_key);
  return names;
}

// The text each flag was given, by key, as CLI11 fills it in.
struct FlagValues {
  std::map<std::string, std::string> text;
  std::map<std::string, CLI::Option*> option;
};

// One option per setting, its help ending in the default value.
void add_setting_flags(CLI::App& app, FlagValues& flags) {
  const TrainConfig defaults;
  const nlohmann::json default_json = defaults.to_json();
#define X(name, help)                                                                             \
  {                                                                                               \
    std::string d = default_json[#name].is_string() ? default_json[#name].get<std::string>()      \
                                                    : default_json[#name].dump();                 \
    flags.option[#name] =                                                                         \
        app.add_option(flag_names(#name), flags.text[#name], std::string(help) + " [" + d + "]"); \
    if (std::is_same_v<decltype(defaults.name), bool>) flags.option[#name]->expected(0, 1);       \
  }
  DGP_TRAIN_FIELDS(X)
#undef X
}

nlohmann::json read_config_file(const std::string& path) {
  std::ifstream f(path);
  DGP_CHECK(f.good(), "--config: cannot read '" << path << "'");
  try {
    return nlohmann::json::parse(f);
  } catch (const nlohmann::json::parse_error& e) {
    DGP_FAIL("--config: '" << path << "' is not valid JSON: " << e.what());
  }
}

// The settings given as flags, as JSON of the fields' types (so that flags and config files share
// merge_json).
nlohmann::json given_flags(FlagValues& flags, const TrainConfig& c) {
  nlohmann::json given;
#define X(name, help) \
  if (flags.option[#name]->count() > 0) given[#name] = parse_flag_value(c.name, #name, flags.text[#name]);
  DGP_TRAIN_FIELDS(X)
#undef X
  return given;
}

}  // namespace

bool parse_train_args(int argc, char** argv, TrainConfig& config) {
  CLI::App app{
      "dgpipe train: train or fine-tune a model, pipelined across stages with compressed boundaries.\n" +
      preset_help()};
  app.set_help_flag("-h,--help", "print this help and exit");
  std::string preset_name, config_file;
  app.add_option("--preset", preset_name, "named settings (see above); flags given override it");
  app.add_option("--config", config_file, "JSON file with the same keys as the flags (e.g. {\"lr\": 0.05})");
  FlagValues flags;
  add_setting_flags(app, flags);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return false;
  } catch (const CLI::ParseError& e) {
    DGP_FAIL(e.what() << " (see dgpipe train --help)");
  }
  TrainConfig c;
  if (!preset_name.empty()) {
    c.merge_json(preset(preset_name), "--preset " + preset_name);
    c.preset = preset_name;
  }
  if (!config_file.empty()) c.merge_json(read_config_file(config_file), config_file);
  nlohmann::json given = given_flags(flags, c);
  if (!given.empty()) c.merge_json(given, "command line");
  c.validate();
  config = c;
  return true;
}

}  // namespace dgpipe::apps
