// Configuration of `dgpipe train`: every option has a flag (--lr) and the same key in a JSON config file
// ("lr"). Precedence: built-in defaults < --preset < --config FILE < flags given on the command line.
// Renamed settings keep their old names as aliases, so that saved config.json files still load: "chunks"
// (--chunks) for micro_batches, "schedule" (--schedule) for lr_schedule, "schedule_kind" (--schedule-kind)
// for pipeline_schedule.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dgpipe::apps {

struct TrainConfig {
  // task
  std::string model = "resnet18";
  std::string dataset = "cifar10";
  std::string data_dir;       // default: per dataset (data-cache/cifar10, ../shared/data/glue, ...)
  std::string tokenizer_dir;  // text tasks: vocab.json+merges.txt (roberta) or vocab.txt (bert)
  int64_t num_classes = -1;   // -1: the dataset's
  int64_t max_len = 128;
  int64_t input_size = 32;  // image models: 32 (CIFAR geometry) or 224 (ImageNet geometry)
  double width = 1.0;       // width multiplier of the image models (1.0 = the published network)
  std::string
      model_config;  // text models: a Hugging Face config.json giving the sizes (default: the preset size)
  int64_t train_subset = 0;  // use only the first N training samples (0: all), e.g. for a quick demo
  int64_t eval_subset = 0;
  bool augment = true;  // random crop + flip for images
  // optimisation
  std::string optimizer = "sgd";  // sgd | adamw
  double lr = 0.1;
  double momentum = 0.9;
  bool nesterov = false;
  double weight_decay = 5e-4;
  bool no_decay_norms = true;          // no weight decay on biases and norm weights
  std::string lr_schedule = "cosine";  // constant | cosine | linear | polynomial | step
  double warmup = 0.0;                 // warm-up: a fraction of all steps if < 1, else a number of steps
  double lr_end = 1e-7;                // polynomial
  int64_t step_size = 0;               // step schedule: decay every N steps (0: every epoch)
  double gamma = 0.1;
  int64_t epochs = 10;
  int64_t max_steps = 0;  // stop after N optimizer steps (0: all epochs)
  int64_t batch = 128;
  int64_t eval_batch = 0;  // 0: same as batch
  double clip = 0.0;       // clip gradients to this global norm (0: off)
  double label_smoothing = 0.0;
  // pipeline
  int stages = 1;
  std::string balance;                      // "1,17,1" | "auto" | "" (equal block counts)
  std::string placement = "chain";          // chain | client-server
  std::string devices = "cpu";              // one device for all stages, or one per stage: cpu,cuda:0,cuda:1
  int micro_batches = 1;                    // micro-batches per mini-batch
  std::string pipeline_schedule = "gpipe";  // gpipe | 1f1b
  std::string compress = "none";            // one spec, "fwd=...,bwd=...", or ';'-separated per boundary
  std::string bottleneck = "none";          // learned bottlenecks: one spec or ';'-separated per boundary
  int64_t bottleneck_epochs = 0;            // phase 1 of the two-phase recipe: autoencoder epochs (0: none)
  double bottleneck_lr = 0.0;               // phase 1 learning rate (0: lr)
  std::string link_bandwidth;               // e.g. 1gbit ("" = unthrottled)
  std::string link_latency;                 // e.g. 5ms
  std::string channel = "local";  // local (stages as threads) | mpi (one process per rank, via mpirun)
  double peer_timeout = 0;        // seconds a stage waits for a message (0: scaled with the step time)
  bool seed_compat = false;
  bool recompute = false;
  bool deferred_bn = false;
  // precision
  std::string precision = "fp32";  // fp32 | mixed (= mixed-fp16) | mixed-bf16 | fp16 | bf16 (engine/amp.h)
  double loss_scale = 65536.0;     // fp16 and mixed: initial dynamic loss scale
  int64_t loss_scale_growth_interval = 2000;
  // reproducibility and run management
  uint64_t seed = 0;
  int workers = 2;
  std::string log_dir = "runs/latest";
  bool resume = false;
  bool eval_only = false;
  std::string init_from;           // pretrained checkpoint (safetensors; heads may be missing)
  int64_t log_every = 50;          // progress line every N steps (0: per epoch only)
  int64_t eval_every = 0;          // held-out evaluation every N steps, besides the epoch ends (0: none)
  int64_t codec_error_every = 50;  // measure every boundary's codec error every N steps (0: never)
  int64_t checkpoint_every = 1;    // epochs between checkpoints (0: only at the end)
  std::string trace;               // write a Chrome/Perfetto trace of the first steps to this file
  int64_t trace_steps = 3;
  std::string preset;

  nlohmann::json to_json() const;
  // Sets the keys present in j; unknown keys and wrong types are errors naming the key and `source`.
  void merge_json(const nlohmann::json& j, const std::string& source);
  // Checks every value; errors name the flag.
  void validate() const;
};

// Named settings reproducing the research runs (docs/original.md#hyper-parameters) and the demo `make run`
// job.
std::vector<std::string> preset_names();
nlohmann::json preset(const std::string& name);  // throws listing the presets for an unknown name
std::string preset_help();

// Parses `dgpipe train` arguments into a config. Returns false (after printing help) for --help.
bool parse_train_args(int argc, char** argv, TrainConfig& config);

}  // namespace dgpipe::apps
