#include "apps/trainer.h"

#include <unistd.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include "compress/codec.h"
#include "data/bpe_tokenizer.h"
#include "data/cifar_binary.h"
#include "data/glue.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/metrics.h"
#include "data/wordpiece_tokenizer.h"
#include "engine/io/safetensors.h"
#include "engine/optim/adamw.h"
#include "engine/optim/clip_grad.h"
#include "engine/optim/lr_schedule.h"
#include "engine/optim/sgd.h"
#include "models/registry.h"
#include "pipeline/pipeline.h"
#ifdef DGPIPE_WITH_MPI
#include <mpi.h>
#endif

namespace dgpipe::apps {

namespace fs = std::filesystem;
using engine::Tensor;
using Clock = std::chrono::steady_clock;

namespace {

// ---------------- data ----------------

class SubsetImages : public data::ImageDataset {
 public:
  SubsetImages(std::shared_ptr<const data::ImageDataset> base, int64_t n) : base_(std::move(base)), n_(n) {}
  int64_t size() const override { return n_; }
  data::Image image(int64_t i) const override { return base_->image(i); }
  int64_t label(int64_t i) const override { return base_->label(i); }
  const std::vector<std::string>& classes() const override { return base_->classes(); }
  std::string describe(int64_t i) const override { return base_->describe(i); }

 private:
  std::shared_ptr<const data::ImageDataset> base_;
  int64_t n_;
};

class SubsetText : public data::TextDataset {
 public:
  SubsetText(std::shared_ptr<const data::TextDataset> base, int64_t n) : base_(std::move(base)), n_(n) {}
  int64_t size() const override { return n_; }
  const data::TextExample& example(int64_t i) const override { return base_->example(i); }
  const std::vector<std::string>& classes() const override { return base_->classes(); }
  std::string describe(int64_t i) const override { return base_->describe(i); }

 private:
  std::shared_ptr<const data::TextDataset> base_;
  int64_t n_;
};

// A subset of the first n samples, spread over the classes: the datasets are stored class by class, so we
// take the first samples of a seeded permutation instead of the first rows.
template <class Base, class Subset>
std::shared_ptr<const Base> take_subset(std::shared_ptr<const Base> base, int64_t n) {
  if (n <= 0 || n >= base->size()) return base;
  return std::make_shared<Subset>(std::move(base), n);
}

class PermutedImages : public data::ImageDataset {
 public:
  PermutedImages(std::shared_ptr<const data::ImageDataset> base, uint64_t seed) : base_(std::move(base)) {
    order_.resize(base_->size());
    for (int64_t i = 0; i < base_->size(); ++i) order_[i] = i;
    data::SampleRng rng(seed, 0x5eb5e7, 0, 0);
    for (int64_t i = base_->size() - 1; i > 0; --i) std::swap(order_[i], order_[rng.next_u32() % (i + 1)]);
  }
  int64_t size() const override { return base_->size(); }
  data::Image image(int64_t i) const override { return base_->image(order_[i]); }
  int64_t label(int64_t i) const override { return base_->label(order_[i]); }
  const std::vector<std::string>& classes() const override { return base_->classes(); }
  std::string describe(int64_t i) const override { return base_->describe(order_[i]); }

 private:
  std::shared_ptr<const data::ImageDataset> base_;
  std::vector<int64_t> order_;
};

struct Data {
  std::unique_ptr<data::Loader> train, eval;
  int64_t num_classes = 0;
  bool text = false;
  std::string describe;
};

std::string default_data_dir(const TrainConfig& c) {
  if (!c.data_dir.empty()) return c.data_dir;
  // Where `make data` (scripts/prepare_data.sh) puts things.
  if (c.dataset == "cifar10")
    return fs::exists("data-cache/cifar10-jpg") ? "data-cache/cifar10-jpg"
                                                : "data-cache/cifar-10-batches-bin";
  if (c.dataset == "cifar100") return "data-cache/cifar-100-binary";
  if (c.dataset == "imagefolder")
    DGP_FAIL("--dataset imagefolder needs --data-dir (with train/ and test/ or val/)");
  return fs::exists("data-cache/glue") ? "data-cache/glue" : "../shared/data/glue";
}

Data build_data(const TrainConfig& c) {
  Data d;
  std::string dir = default_data_dir(c);
  DGP_CHECK(fs::exists(dir), "--data-dir: '"
                                 << dir << "' does not exist"
                                 << (c.data_dir.empty() ? " (run `make data` to prepare it)" : ""));
  data::LoaderOptions train_opts, eval_opts;
  train_opts.batch_size = c.batch;
  train_opts.shuffle = true;
  train_opts.drop_last = true;  // every step has --batch samples, so micro-batches are equal
  train_opts.num_workers = c.workers;
  train_opts.seed = c.seed;
  eval_opts = train_opts;
  eval_opts.batch_size = c.eval_batch > 0 ? c.eval_batch : c.batch;
  eval_opts.shuffle = false;
  eval_opts.drop_last = false;
  if (c.dataset == "cifar10" || c.dataset == "cifar100" || c.dataset == "imagefolder") {
    std::shared_ptr<const data::ImageDataset> train, eval;
    bool binary = fs::exists(fs::path(dir) / "cifar-10-batches-bin") ||
                  fs::exists(fs::path(dir) / "data_batch_1.bin") ||
                  fs::exists(fs::path(dir) / "cifar-100-binary") || fs::exists(fs::path(dir) / "train.bin");
    if (c.dataset != "imagefolder" && binary) {
      if (c.dataset == "cifar10") {
        train = std::make_shared<data::CifarBinaryDataset>(data::CifarBinaryDataset::cifar10(dir, true));
        eval = std::make_shared<data::CifarBinaryDataset>(data::CifarBinaryDataset::cifar10(dir, false));
      } else {
        train = std::make_shared<data::CifarBinaryDataset>(data::CifarBinaryDataset::cifar100(dir, true));
        eval = std::make_shared<data::CifarBinaryDataset>(data::CifarBinaryDataset::cifar100(dir, false));
      }
      d.describe = c.dataset + " (binary) from " + dir;
    } else {
      fs::path test_dir = fs::exists(fs::path(dir) / "test") ? fs::path(dir) / "test" : fs::path(dir) / "val";
      DGP_CHECK(
          fs::exists(fs::path(dir) / "train") && fs::exists(test_dir),
          "--data-dir: '" << dir
                          << "' holds neither the binary CIFAR files nor train/ and test/ image folders");
      train = std::make_shared<data::ImageFolderDataset>((fs::path(dir) / "train").string());
      eval = std::make_shared<data::ImageFolderDataset>(test_dir.string());
      d.describe = c.dataset + " (image folders) from " + dir;
    }
    if (c.train_subset > 0) {
      train = std::make_shared<PermutedImages>(train, c.seed + 17);
      train = take_subset<data::ImageDataset, SubsetImages>(train, c.train_subset);
    }
    if (c.eval_subset > 0) {
      eval = std::make_shared<PermutedImages>(eval, 29);
      eval = take_subset<data::ImageDataset, SubsetImages>(eval, c.eval_subset);
    }
    d.num_classes = train->num_classes();
    data::Compose train_tf, eval_tf;
    if (c.input_size != 32) {
      train_tf.add(c.augment ? data::random_resized_crop(c.input_size, c.input_size)
                             : data::resize(c.input_size, c.input_size));
      eval_tf.add(data::resize_shorter_side(c.input_size * 256 / 224));
      eval_tf.add(data::center_crop(c.input_size, c.input_size));
    } else if (c.augment) {
      train_tf.add(data::random_crop(32, 4));
    }
    if (c.augment) train_tf.add(data::random_horizontal_flip());
    auto norm = data::cifar10_normalize();
    d.train = std::make_unique<data::Loader>(std::make_shared<data::ImageBatchSource>(train, train_tf, norm),
                                             train_opts);
    d.eval = std::make_unique<data::Loader>(std::make_shared<data::ImageBatchSource>(eval, eval_tf, norm),
                                            eval_opts);
    d.describe +=
        ": " + std::to_string(train->size()) + " train / " + std::to_string(eval->size()) + " eval images";
    return d;
  }
  // GLUE
  d.text = true;
  data::GlueTask task = data::parse_glue_task(c.dataset);
  auto train = std::shared_ptr<const data::TextDataset>(
      std::make_shared<data::GlueDataset>(data::GlueDataset::from_directory(dir, task, "train")));
  auto eval = std::shared_ptr<const data::TextDataset>(
      std::make_shared<data::GlueDataset>(data::GlueDataset::from_directory(dir, task, "dev")));
  train = take_subset<data::TextDataset, SubsetText>(train, c.train_subset);
  eval = take_subset<data::TextDataset, SubsetText>(eval, c.eval_subset);
  d.num_classes = train->num_classes();
  std::shared_ptr<const data::Tokenizer> tokenizer;
  bool bert = models::canonical_model_name(c.model) == "bert";
  std::string tok_dir = c.tokenizer_dir;
  if (tok_dir.empty() && bert) tok_dir = "data-cache/minilm";
  if (tok_dir.empty())
    tok_dir =
        fs::exists("data-cache/roberta-base") ? "data-cache/roberta-base" : "../shared/data/roberta-base";
  DGP_CHECK(fs::exists(tok_dir), "--tokenizer-dir: '" << tok_dir << "' does not exist (run `make data`)");
  DGP_CHECK(!tok_dir.empty(), "--tokenizer-dir: a BERT model needs the folder holding vocab.txt");
  if (bert) {
    tokenizer = std::make_shared<data::WordPieceTokenizer>((fs::path(tok_dir) / "vocab.txt").string());
  } else {
    tokenizer = data::ByteLevelBpeTokenizer::from_directory(tok_dir);
  }
  data::EncodeOptions enc;
  enc.max_length = c.max_len;
  enc.truncation = true;
  enc.pad_to_max_length = true;
  d.train = std::make_unique<data::Loader>(std::make_shared<data::TextBatchSource>(train, tokenizer, enc),
                                           train_opts);
  d.eval = std::make_unique<data::Loader>(std::make_shared<data::TextBatchSource>(eval, tokenizer, enc),
                                          eval_opts);
  d.describe = data::glue_task_name(task) + " from " + dir + ": " + std::to_string(train->size()) +
               " train / " + std::to_string(eval->size()) + " dev examples";
  return d;
}

// ---------------- pipeline ----------------

std::vector<compress::DirectionPair> parse_codecs(const std::string& text) {
  std::vector<compress::DirectionPair> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ';')) out.push_back(compress::parse_direction_pair(item));
  if (out.empty()) out.push_back(compress::parse_direction_pair("none"));
  return out;
}

std::vector<engine::Device> parse_devices(const std::string& text) {
  std::vector<engine::Device> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    engine::Device d = engine::Device::parse(item);
    DGP_CHECK(!d.is_cuda() || d.index < engine::cuda_device_count(),
              "--devices: " << item << " requested but this machine has " << engine::cuda_device_count()
                            << " CUDA device(s)");
    out.push_back(d);
  }
  DGP_CHECK(!out.empty(), "--devices: empty");
  return out;
}

pipeline::MicroBatch to_micro_batch(const data::Batch& b, const models::Model& model, bool text) {
  pipeline::MicroBatch mb;
  mb.labels = b.labels;
  if (text) {
    mb.input = b.input_ids;
    mb.ctx = model.make_context(b.input_ids);
    if (b.token_type_ids.defined() && !mb.ctx.token_type_ids.defined())
      mb.ctx.token_type_ids = b.token_type_ids;
  } else {
    mb.input = b.images;
  }
  return mb;
}

engine::LRSchedule make_lr_schedule(const TrainConfig& c, int64_t total_steps, int64_t steps_per_epoch) {
  int64_t warmup = c.warmup < 1.0 ? static_cast<int64_t>(std::floor(c.warmup * total_steps))
                                  : static_cast<int64_t>(c.warmup);
  if (c.lr_schedule == "constant") return engine::LRSchedule::constant(c.lr);
  if (c.lr_schedule == "cosine") return engine::LRSchedule::cosine_with_warmup(c.lr, warmup, total_steps);
  if (c.lr_schedule == "linear") return engine::LRSchedule::linear_with_warmup(c.lr, warmup, total_steps);
  if (c.lr_schedule == "polynomial")
    return engine::LRSchedule::polynomial_with_warmup(c.lr, warmup, total_steps,
                                                      std::min(c.lr_end, c.lr * 0.5));
  return engine::LRSchedule::step_decay(c.lr, c.step_size > 0 ? c.step_size : steps_per_epoch, c.gamma);
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) {
    b /= 1000;
    ++u;
  }
  std::ostringstream os;
  os << std::fixed << std::setprecision(b < 10 ? 2 : 1) << b << " " << units[u];
  return os.str();
}

std::string human_seconds(double s) {
  std::ostringstream os;
  int64_t t = static_cast<int64_t>(s);
  if (t >= 3600)
    os << t / 3600 << "h" << std::setw(2) << std::setfill('0') << (t % 3600) / 60 << "m";
  else if (t >= 60)
    os << t / 60 << "m" << std::setw(2) << std::setfill('0') << t % 60 << "s";
  else
    os << std::fixed << std::setprecision(1) << s << "s";
  return os.str();
}

void ensure_writable_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  DGP_CHECK(!ec && fs::is_directory(dir), "--log-dir: cannot create '" << dir << "': " << ec.message());
  std::string probe = (fs::path(dir) / ".write-test").string();
  {
    std::ofstream f(probe);
    DGP_CHECK(f.good(), "--log-dir: '" << dir << "' is not writable");
  }
  fs::remove(probe, ec);
}

void write_text_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    DGP_CHECK(f.good(), "cannot write '" << tmp << "'");
    f << text;
    DGP_CHECK(f.good(), "error writing '" << tmp << "'");
  }
  fs::rename(tmp, path);
}

// Totals of the boundary traffic (each boundary and direction counted once: at its sender). With one process
// per rank every rank holds only its own stages' counters, so they are summed over the ranks; every rank
// calls this at the same points of the loop.
void boundary_totals(pipeline::Pipeline& pipe, uint64_t& wire, uint64_t& raw, bool across_ranks) {
  wire = raw = 0;
  for (auto& st : pipe.local_stages()) {
    wire += st->downstream_fwd_stats().wire_bytes + st->upstream_bwd_stats().wire_bytes;
    raw += st->downstream_fwd_stats().raw_bytes + st->upstream_bwd_stats().raw_bytes;
  }
#ifdef DGPIPE_WITH_MPI
  if (across_ranks) {
    uint64_t local[2] = {wire, raw}, total[2] = {0, 0};
    MPI_Allreduce(local, total, 2, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    wire = total[0];
    raw = total[1];
  }
#else
  (void)across_ranks;
#endif
}

}  // namespace

TrainSummary run_training(const TrainConfig& config, int64_t stop_after_steps) {
  const TrainConfig& c = config;
  c.validate();
  TrainSummary summary;
  int rank = 0, world = 1;
  // mpi and nccl: one process per rank, started by mpirun (nccl bootstraps over MPI).
  const bool multi_process = c.channel == "mpi" || c.channel == "nccl";
#ifdef DGPIPE_WITH_MPI
  if (multi_process) {
    int argc = 0;
    char** argv = nullptr;
    std::tie(rank, world) = pipeline::mpi_init(&argc, &argv);
  }
#else
  DGP_CHECK(!multi_process, "--channel " << c.channel << ": dgpipe was built without MPI");
#endif
  std::string log_dir = c.log_dir;
  if (multi_process && world > 1 && rank > 0)
    log_dir = (fs::path(c.log_dir) / ("rank" + std::to_string(rank))).string();
  ensure_writable_dir(log_dir);
  const std::string ckpt_path = (fs::path(log_dir) / "checkpoint.safetensors").string();
  DGP_CHECK(!c.resume || fs::exists(ckpt_path),
            "--resume: no checkpoint in '" << log_dir << "' (" << ckpt_path << ")");

  std::vector<engine::Device> devices = parse_devices(c.devices);
  bool any_cuda = false;
  for (auto& d : devices) any_cuda |= d.is_cuda();
  DGP_CHECK(c.precision == "fp32" || any_cuda,
            "--precision " << c.precision << " needs a CUDA device (--devices cuda:0); the CPU runs fp32");
  // The engine has the mixed-precision pieces (engine/amp.h: autocast policy, master weights, loss scaling),
  // but the layers do not call autocast yet and nothing of it has run on a GPU; rather than train in fp32
  // while claiming otherwise, refuse.
  DGP_CHECK(c.precision == "fp32", "--precision "
                                       << c.precision
                                       << " is not wired into dgpipe train yet (only fp32); see docs/gpu.md");
  engine::manual_seed(c.seed);

  // Data and model.
  Data data = build_data(c);
  int64_t num_classes = c.num_classes > 0 ? c.num_classes : data.num_classes;
  DGP_CHECK(num_classes >= data.num_classes, "--num-classes " << num_classes
                                                              << " is smaller than the dataset's "
                                                              << data.num_classes << " classes");
  bool text_model = models::is_text_model(c.model);
  DGP_CHECK(text_model == data.text, "--model " << c.model << " does not fit --dataset " << c.dataset << " ("
                                                << (data.text ? "a text task" : "an image task") << ")");
  models::ModelOptions mo;
  mo.num_classes = num_classes;
  mo.input_size = c.input_size;
  mo.width_mult = c.width;
  mo.hf_config = c.model_config;
  mo.seed = c.seed;
  models::ModelPtr model = models::build_model(c.model, mo);
  if (!c.init_from.empty()) {
    DGP_CHECK(fs::exists(c.init_from), "--init-from: '" << c.init_from << "' does not exist");
    layers::LoadReport r = models::load_checkpoint(*model, c.init_from, false);
    std::cout << "initialised from " << c.init_from << ": " << r.loaded.size() << " tensors loaded, "
              << r.missing.size() << " left at their initialisation\n";
  }

  // Pipeline.
  std::vector<layers::ModulePtr> blocks;
  for (size_t i = 0; i < model->num_blocks(); ++i) blocks.push_back(model->block(i));
  pipeline::PipelineOptions po;
  po.micro_batches = c.micro_batches;
  po.kind = pipeline::parse_schedule_kind(c.pipeline_schedule);
  po.placement = pipeline::parse_placement(c.placement);
  po.codecs = parse_codecs(c.compress);
  DGP_CHECK(
      po.codecs.size() == 1 || static_cast<int>(po.codecs.size()) == c.stages - 1,
      "--compress: " << po.codecs.size() << " per-boundary specs for " << c.stages - 1 << " boundaries");
  po.devices = devices;
  DGP_CHECK(devices.size() == 1 || static_cast<int>(devices.size()) == c.stages,
            "--devices: " << devices.size() << " devices for " << c.stages << " stages");
  if (!c.link_bandwidth.empty()) po.link.bandwidth_bytes_per_s = pipeline::parse_bandwidth(c.link_bandwidth);
  if (!c.link_latency.empty()) po.link.latency_s = pipeline::parse_latency(c.link_latency);
  po.seed_compat = c.seed_compat;
  po.recompute = c.recompute;
  po.deferred_bn = c.deferred_bn;
  po.label_smoothing = c.label_smoothing;
  po.trace = !c.trace.empty();
  po.seed = c.seed;
  DGP_CHECK(c.stages <= static_cast<int>(blocks.size()),
            "--stages " << c.stages << ": the model has only " << blocks.size() << " blocks");
  if (c.balance.empty()) {
    po.balance = pipeline::balance_by_cost(std::vector<double>(blocks.size(), 1.0), c.stages);
  } else if (c.balance == "auto") {
    data::Batch sample_batch;
    data.train->start_epoch(0);
    DGP_CHECK(data.train->next(sample_batch), "--balance auto: the training set has no full batch");
    data.train->stop();
    auto sample =
        pipeline::split_micro_batches(to_micro_batch(sample_batch, *model, data.text), c.micro_batches)[0];
    po.balance = pipeline::balance_by_time(blocks, sample, c.stages);
  } else {
    po.balance = pipeline::parse_balance(c.balance, static_cast<int>(blocks.size()), c.stages);
  }
  // Names of parameters (for no-decay groups).
  std::map<const engine::TensorImpl*, std::string> param_names;
  for (auto& [name, t] : model->named_parameters()) param_names[t.impl_ptr().get()] = name;
  auto make_optimizer = [&](std::vector<Tensor> params, int) -> std::unique_ptr<engine::Optimizer> {
    std::vector<std::pair<std::string, Tensor>> named;
    for (auto& p : params) named.push_back({param_names[p.impl_ptr().get()], p});
    std::vector<engine::ParamGroupSpec> groups = c.no_decay_norms
                                                     ? engine::param_groups_no_decay(named, c.weight_decay)
                                                     : engine::single_group(params);
    if (c.optimizer == "adamw") {
      engine::AdamWOptions o;
      o.lr = c.lr;
      o.weight_decay = c.weight_decay;
      return std::make_unique<engine::AdamW>(groups, o);
    }
    engine::SGDOptions o;
    o.lr = c.lr;
    o.momentum = c.momentum;
    o.nesterov = c.nesterov;
    o.weight_decay = c.weight_decay;
    return std::make_unique<engine::SGD>(groups, o);
  };
  std::unique_ptr<pipeline::Pipeline> pipe;
#ifdef DGPIPE_WITH_MPI
  if (multi_process) {
    po.process_channel = c.channel;
    pipe = std::make_unique<pipeline::Pipeline>(blocks, po, make_optimizer, rank, world);
  }
#endif
  if (!pipe) pipe = std::make_unique<pipeline::Pipeline>(blocks, po, make_optimizer);
  const bool reporter = pipe->runs_stage(pipe->num_stages() - 1);  // the rank that sees the loss

  const int64_t steps_per_epoch = data.train->num_batches();
  DGP_CHECK(steps_per_epoch > 0, "the training set (" << data.train->num_samples()
                                                      << " samples) is smaller than --batch " << c.batch);
  int64_t total_steps = steps_per_epoch * c.epochs;
  if (c.max_steps > 0) total_steps = std::min(total_steps, c.max_steps);
  engine::LRSchedule lr_schedule = make_lr_schedule(c, total_steps, steps_per_epoch);

  // Resume: model state, optimizer states, dropout generators, counters.
  int64_t start_epoch = 0, global_step = 0;
  auto save_checkpoint = [&](int64_t next_epoch) {
    std::map<std::string, Tensor> tensors;
    // The whole model under its PyTorch names (under MPI, the blocks of other ranks' stages are stale copies
    // and are ignored on resume: each rank restores its own stages from its own file).
    for (auto& [name, t] : model->state_dict()) tensors["model." + name] = t;
    for (size_t si = 0; si < pipe->local_stages().size(); ++si) {
      auto& st = pipe->local_stages()[si];
      int s = st->setup().stage;
      if (si < pipe->optimizers().size())
        for (auto& [k, t] : pipe->optimizers()[si]->state_dict())
          tensors["optim." + std::to_string(s) + "." + k] = t;
      engine::PhiloxState g = pipe->stage_generator(si).state();
      tensors["rng." + std::to_string(s)] = engine::from_vector(
          std::vector<int64_t>{static_cast<int64_t>(g.seed), static_cast<int64_t>(g.offset)}, {2});
    }
    std::map<std::string, std::string> meta{{"epoch", std::to_string(next_epoch)},
                                            {"step", std::to_string(global_step)},
                                            {"config", c.to_json().dump()},
                                            {"format", "dgpipe-checkpoint-1"}};
    engine::save_safetensors(ckpt_path, tensors, meta);
  };
  if (c.resume || c.eval_only) {
    if (c.resume)
      DGP_CHECK(fs::exists(ckpt_path),
                "--resume: no checkpoint in '" << log_dir << "' (" << ckpt_path << ")");
    if (fs::exists(ckpt_path)) {
      engine::SafetensorsFile f = engine::load_safetensors(ckpt_path);
      DGP_CHECK(f.metadata.count("format") && f.metadata["format"] == "dgpipe-checkpoint-1",
                "--resume: '" << ckpt_path << "' is not a dgpipe checkpoint");
      std::map<std::string, Tensor> model_state;
      for (auto& [k, t] : f.tensors)
        if (k.rfind("model.", 0) == 0) model_state[k.substr(6)] = t;
      model->load_state_dict(model_state, true);
      for (size_t si = 0; si < pipe->local_stages().size(); ++si) {
        auto& st = pipe->local_stages()[si];
        int s = st->setup().stage;
        std::map<std::string, Tensor> opt_state;
        std::string prefix = "optim." + std::to_string(s) + ".";
        for (auto& [k, t] : f.tensors)
          if (k.rfind(prefix, 0) == 0) opt_state[k.substr(prefix.size())] = t;
        if (si < pipe->optimizers().size() && !opt_state.empty())
          pipe->optimizers()[si]->load_state_dict(opt_state);
        auto it = f.tensors.find("rng." + std::to_string(s));
        if (it != f.tensors.end()) {
          auto v = it->second.to_vector();
          pipe->stage_generator(si).set_state(engine::PhiloxState{
              static_cast<uint64_t>(static_cast<int64_t>(v[0])), static_cast<uint64_t>(v[1])});
        }
      }
      start_epoch = std::stoll(f.metadata["epoch"]);
      global_step = std::stoll(f.metadata["step"]);
      std::cout << "resumed from " << ckpt_path << " at epoch " << start_epoch << ", step " << global_step
                << "\n";
    }
  }

  if (rank == 0 || reporter) {
    write_text_atomic((fs::path(log_dir) / "config.json").string(), c.to_json().dump(2) + "\n");
    std::cout << "dgpipe train: " << model->name() << " (" << model->num_parameters() << " parameters, "
              << blocks.size() << " blocks) on " << data.describe << "\n"
              << "  pipeline: " << pipe->num_stages() << " stages [";
    for (size_t i = 0; i < po.balance.size(); ++i) std::cout << (i ? "," : "") << po.balance[i];
    std::cout << "] " << c.placement << ", " << c.micro_batches << " micro-batches, " << c.pipeline_schedule
              << ", codecs " << c.compress << ", channel " << c.channel << "\n"
              << "  optimisation: " << c.optimizer << " " << lr_schedule.describe() << ", batch " << c.batch
              << ", " << c.epochs << " epochs x " << steps_per_epoch << " steps\n"
              << std::flush;
  }

  // Metrics files (appended on resume).
  std::string csv_path = (fs::path(log_dir) / "metrics.csv").string();
  std::string jsonl_path = (fs::path(log_dir) / "metrics.jsonl").string();
  bool fresh = !c.resume;
  std::ofstream csv(csv_path, fresh ? std::ios::trunc : std::ios::app);
  std::ofstream jsonl(jsonl_path, fresh ? std::ios::trunc : std::ios::app);
  DGP_CHECK(csv.good() && jsonl.good(), "--log-dir: cannot write metrics in '" << log_dir << "'");
  if (fresh)
    csv << "epoch,step,train_loss,train_acc,eval_loss,eval_acc,eval_mcc,eval_f1,lr,samples_per_s,seconds,"
           "wire_bytes,"
           "raw_bytes\n";

  auto evaluate = [&](EpochMetrics& m) {
    std::vector<int64_t> preds, labels;
    double loss_sum = 0;
    int64_t n = 0;
    for (data::Batch& b : data.eval->epoch(0)) {
      // The last eval batch may be smaller than --micro-batches micro-batches: evaluate it unsplit if so.
      pipeline::MicroBatch mb = to_micro_batch(b, *model, data.text);
      if (b.size() < c.micro_batches) continue;
      if (b.size() % c.micro_batches != 0 && c.micro_batches > 1) {
        int64_t keep = b.size() / c.micro_batches * c.micro_batches;
        mb.input = mb.input.narrow(0, 0, keep).contiguous();
        mb.labels = mb.labels.narrow(0, 0, keep).contiguous();
        auto cut = [&](Tensor& t) {
          if (t.defined()) t = t.narrow(0, 0, keep).contiguous();
        };
        cut(mb.ctx.attention_mask);
        cut(mb.ctx.additive_mask);
        cut(mb.ctx.token_type_ids);
      }
      pipeline::StepResult r = pipe->eval_step(mb, reporter);
      if (reporter) {
        loss_sum += r.loss * r.samples;
        n += r.samples;
        for (auto& logits : r.logits)
          for (int64_t p : data::argmax_rows(logits)) preds.push_back(p);
        for (double v : mb.labels.to_vector()) labels.push_back(static_cast<int64_t>(v));
      }
    }
    if (reporter && n > 0) {
      labels.resize(preds.size());
      m.eval_loss = loss_sum / n;
      m.eval_acc = data::accuracy(preds, labels);
      m.eval_mcc = data::matthews_corrcoef(preds, labels);
      m.eval_f1 = num_classes == 2 ? data::f1_score(preds, labels) : 0.0;
    }
  };

  auto run_start = Clock::now();
  if (c.eval_only) {
    EpochMetrics m;
    m.epoch = start_epoch;
    m.step = global_step;
    evaluate(m);
    if (reporter)
      std::cout << "eval: loss " << std::fixed << std::setprecision(4) << m.eval_loss << "  acc "
                << std::setprecision(2) << 100 * m.eval_acc << "%  mcc " << std::setprecision(4) << m.eval_mcc
                << "\n";
    summary.epochs.push_back(m);
    summary.final_eval_acc = m.eval_acc;
    summary.final_eval_mcc = m.eval_mcc;
    return summary;
  }

  int64_t steps_this_run = 0;
  bool stop = false;
  std::map<std::string, uint64_t> epoch_fwd_bytes,
      epoch_bwd_bytes;  // per-boundary totals at the last epoch end
  for (int64_t epoch = start_epoch; epoch < c.epochs && !stop; ++epoch) {
    EpochMetrics m;
    m.epoch = epoch;
    auto epoch_start = Clock::now();
    double loss_sum = 0;
    int64_t correct = 0, seen = 0, steps_in_epoch = 0;
    uint64_t wire0, raw0;
    boundary_totals(*pipe, wire0, raw0, multi_process);
    for (data::Batch& b : data.train->epoch(epoch)) {
      if (c.max_steps > 0 && global_step >= c.max_steps) {
        stop = true;
        break;
      }
      double lr = lr_schedule.lr(global_step);
      pipe->set_lr(lr);
      m.lr = lr;
      pipeline::StepResult r = pipe->train_step(to_micro_batch(b, *model, data.text));
      if (!c.trace.empty() && global_step + 1 == c.trace_steps) {
        pipe->write_trace(c.trace);
        pipe->stop_tracing();
        if (reporter)
          std::cout << "  trace of the first " << c.trace_steps << " steps written to " << c.trace << "\n";
      }
      ++global_step;
      ++steps_in_epoch;
      ++steps_this_run;
      if (reporter) {
        DGP_CHECK(std::isfinite(r.loss), "training diverged: loss " << r.loss << " at step " << global_step
                                                                    << " (lower --lr, or check the data)");
        loss_sum += r.loss;
        correct += r.correct;
        seen += r.samples;
        summary.step_losses.push_back(r.loss);
      }
      if (reporter && c.log_every > 0 && global_step % c.log_every == 0) {
        double el = std::chrono::duration<double>(Clock::now() - epoch_start).count();
        double rate = steps_in_epoch * c.batch / std::max(el, 1e-9);
        int64_t left = total_steps - global_step;
        std::cout << "  step " << global_step << "/" << total_steps << "  loss " << std::fixed
                  << std::setprecision(4) << loss_sum / steps_in_epoch << "  acc " << std::setprecision(1)
                  << 100.0 * correct / std::max<int64_t>(seen, 1) << "%  lr " << std::setprecision(5) << lr
                  << "  " << std::setprecision(1) << rate << " samples/s  ETA "
                  << human_seconds(left * c.batch / std::max(rate, 1e-9)) << "\n"
                  << std::flush;
      }
      if (stop_after_steps > 0 && steps_this_run >= stop_after_steps)
        return summary;  // simulated interruption
    }
    if (steps_in_epoch == 0) break;
    m.step = global_step;
    m.seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
    m.samples_per_s = steps_in_epoch * c.batch / std::max(m.seconds, 1e-9);
    m.train_loss = loss_sum / steps_in_epoch;
    m.train_acc = seen ? static_cast<double>(correct) / seen : 0;
    uint64_t wire1, raw1;
    boundary_totals(*pipe, wire1, raw1, multi_process);
    m.wire_bytes = wire1 - wire0;
    m.raw_bytes = raw1 - raw0;
    evaluate(m);
    summary.epochs.push_back(m);
    if (reporter) {
      std::cout << "epoch " << epoch + 1 << "/" << c.epochs << "  step " << global_step << "  loss "
                << std::fixed << std::setprecision(4) << m.train_loss << "  train acc "
                << std::setprecision(2) << 100 * m.train_acc << "%  eval acc " << 100 * m.eval_acc << "%";
      if (c.dataset == "cola") std::cout << "  mcc " << std::setprecision(4) << m.eval_mcc;
      std::cout << "  lr " << std::setprecision(5) << m.lr << "  " << std::setprecision(1) << m.samples_per_s
                << " samples/s  " << human_seconds(m.seconds);
      int64_t left = total_steps - global_step;
      if (left > 0)
        std::cout << "  ETA " << human_seconds(left * m.seconds / std::max<int64_t>(steps_in_epoch, 1));
      if (m.raw_bytes > 0) {
        std::cout << "\n    wire: " << human_bytes(m.wire_bytes) << " for " << human_bytes(m.raw_bytes)
                  << " of f32 (" << std::setprecision(1) << 100.0 * m.wire_bytes / m.raw_bytes << "%)";
        // per boundary and direction, this epoch
        for (auto& st : pipe->local_stages()) {
          int s = st->setup().stage;
          auto& f = st->downstream_fwd_stats();
          auto& g = st->upstream_bwd_stats();
          auto key = std::to_string(s);
          if (s < pipe->num_stages() - 1)
            std::cout << "  " << s << "->" << s + 1 << " fwd "
                      << human_bytes((f.wire_bytes - epoch_fwd_bytes[key]) / std::max(m.seconds, 1e-9))
                      << "/s";
          if (s > 0)
            std::cout << "  " << s << "->" << s - 1 << " bwd "
                      << human_bytes((g.wire_bytes - epoch_bwd_bytes[key]) / std::max(m.seconds, 1e-9))
                      << "/s";
          epoch_fwd_bytes[key] = f.wire_bytes;
          epoch_bwd_bytes[key] = g.wire_bytes;
        }
      }
      std::cout << "\n" << std::flush;
      csv << m.epoch << "," << m.step << "," << m.train_loss << "," << m.train_acc << "," << m.eval_loss
          << "," << m.eval_acc << "," << m.eval_mcc << "," << m.eval_f1 << "," << m.lr << ","
          << m.samples_per_s << "," << m.seconds << "," << m.wire_bytes << "," << m.raw_bytes << "\n"
          << std::flush;
      nlohmann::json j{{"epoch", m.epoch},
                       {"step", m.step},
                       {"train_loss", m.train_loss},
                       {"train_acc", m.train_acc},
                       {"eval_loss", m.eval_loss},
                       {"eval_acc", m.eval_acc},
                       {"eval_mcc", m.eval_mcc},
                       {"eval_f1", m.eval_f1},
                       {"lr", m.lr},
                       {"samples_per_s", m.samples_per_s},
                       {"seconds", m.seconds},
                       {"wire_bytes", m.wire_bytes},
                       {"raw_bytes", m.raw_bytes}};
      nlohmann::json boundaries = nlohmann::json::array();
      for (auto& st : pipe->local_stages()) {
        auto& f = st->downstream_fwd_stats();
        auto& g = st->upstream_bwd_stats();
        boundaries.push_back({{"stage", st->setup().stage},
                              {"fwd_wire_bytes", f.wire_bytes},
                              {"fwd_raw_bytes", f.raw_bytes},
                              {"fwd_encode_s", f.encode_s},
                              {"bwd_wire_bytes", g.wire_bytes},
                              {"bwd_raw_bytes", g.raw_bytes},
                              {"bwd_encode_s", g.encode_s},
                              {"busy_s", st->stats().busy_s},
                              {"wall_s", st->stats().wall_s},
                              {"idle_fraction", st->stats().idle_fraction()}});
      }
      j["stages"] = boundaries;
      jsonl << j.dump() << "\n" << std::flush;
    }
    bool last_epoch = epoch + 1 == c.epochs || stop;
    if ((c.checkpoint_every > 0 && (epoch + 1) % c.checkpoint_every == 0) || last_epoch)
      save_checkpoint(epoch + 1);
  }

  boundary_totals(*pipe, summary.wire_bytes, summary.raw_bytes, multi_process);
  if (!summary.epochs.empty()) {
    summary.final_eval_acc = summary.epochs.back().eval_acc;
    summary.final_eval_mcc = summary.epochs.back().eval_mcc;
  }
  if (reporter) {
    double total_s = std::chrono::duration<double>(Clock::now() - run_start).count();
    nlohmann::json s{{"model", c.model},
                     {"dataset", c.dataset},
                     {"compress", c.compress},
                     {"stages", c.stages},
                     {"steps", global_step},
                     {"seconds", total_s},
                     {"final_eval_acc", summary.final_eval_acc},
                     {"final_eval_mcc", summary.final_eval_mcc},
                     {"wire_bytes", summary.wire_bytes},
                     {"raw_bytes", summary.raw_bytes},
                     {"compression_ratio",
                      summary.raw_bytes ? static_cast<double>(summary.wire_bytes) / summary.raw_bytes : 1.0},
                     {"samples_per_s", summary.epochs.empty() ? 0.0 : summary.epochs.back().samples_per_s}};
    write_text_atomic((fs::path(log_dir) / "summary.json").string(), s.dump(2) + "\n");
    std::cout << "done: eval acc " << std::fixed << std::setprecision(2) << 100 * summary.final_eval_acc
              << "%";
    if (c.dataset == "cola") std::cout << ", mcc " << std::setprecision(4) << summary.final_eval_mcc;
    if (summary.raw_bytes)
      std::cout << "; the boundaries sent " << human_bytes(summary.wire_bytes) << " instead of "
                << human_bytes(summary.raw_bytes) << " (" << std::setprecision(1)
                << 100.0 * (1.0 - static_cast<double>(summary.wire_bytes) / summary.raw_bytes) << "% saved)";
    std::cout << "; logs in " << log_dir << "\n";
  }
#ifdef DGPIPE_WITH_MPI
  if (multi_process) {
    pipe.reset();
    pipeline::mpi_finalize();
  }
#endif
  return summary;
}

}  // namespace dgpipe::apps
