// The training loop behind `dgpipe train`. run_training, at the end of the file, reads as its table of
// contents: set-up functions fill a Run (the run's state) in order (start_processes, checked_devices,
// set_up_data, set_up_model, set_up_pipeline, set_up_lr_schedule, resume_from_checkpoint,
// write_config_and_banner, open_metrics_files), train_epochs runs the epochs (train_epoch_steps, train_step
// with --codec-error-every's append_codec_error_record and --eval-every's evaluate_periodically,
// finish_epoch, evaluate, save_checkpoint), and finish_run writes summary.json and the closing lines.
// run_totals is the whole run so far (traffic, codec time, wall-clock), across resumes. Progress lines and
// ETAs: print_step_progress, print_epoch.
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
#include <optional>
#include <sstream>
#include <utility>

#include "apps/link_cost.h"
#include "apps/step_log.h"
#include "compress/codec.h"
#include "data/bpe_tokenizer.h"
#include "data/cifar_binary.h"
#include "data/glue.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/metrics.h"
#include "data/wordpiece_tokenizer.h"
#include "engine/amp.h"
#include "engine/io/safetensors.h"
#include "engine/optim/adamw.h"
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

struct LoaderSettings {
  data::LoaderOptions train, eval;
};

LoaderSettings loader_settings(const TrainConfig& c) {
  LoaderSettings s;
  s.train.batch_size = c.batch;
  s.train.shuffle = true;
  s.train.drop_last = true;  // every step has --batch samples, so micro-batches are equal
  s.train.num_workers = c.workers;
  s.train.seed = c.seed;
  s.eval = s.train;
  s.eval.batch_size = c.eval_batch > 0 ? c.eval_batch : c.batch;
  s.eval.shuffle = false;
  s.eval.drop_last = false;
  return s;
}

struct ImageSplits {
  std::shared_ptr<const data::ImageDataset> train, eval;
};

// The CIFAR binary files when the folder has them (not for imagefolder), else train/ and test/ (or val/)
// image folders; then the --train-subset / --eval-subset samples drawn across the classes.
ImageSplits image_splits(const TrainConfig& c, const std::string& dir, std::string& describe) {
  ImageSplits s;
  bool binary = fs::exists(fs::path(dir) / "cifar-10-batches-bin") ||
                fs::exists(fs::path(dir) / "data_batch_1.bin") ||
                fs::exists(fs::path(dir) / "cifar-100-binary") || fs::exists(fs::path(dir) / "train.bin");
  if (c.dataset != "imagefolder" && binary) {
    if (c.dataset == "cifar10") {
      s.train = std::make_shared<data::CifarBinaryDataset>(data::CifarBinaryDataset::cifar10(dir, true));
      s.eval = std::make_shared<data::CifarBinaryDataset>(data::CifarBinaryDataset::cifar10(dir, false));
    } else {
      s.train = std::make_shared<data::CifarBinaryDataset>(data::CifarBinaryDataset::cifar100(dir, true));
      s.eval = std::make_shared<data::CifarBinaryDataset>(data::CifarBinaryDataset::cifar100(dir, false));
    }
    describe = c.dataset + " (binary) from " + dir;
  } else {
    fs::path test_dir = fs::exists(fs::path(dir) / "test") ? fs::path(dir) / "test" : fs::path(dir) / "val";
    DGP_CHECK(fs::exists(fs::path(dir) / "train") && fs::exists(test_dir),
              "--data-dir: '" << dir
                              << "' holds neither the binary CIFAR files nor train/ and test/ image folders");
    s.train = std::make_shared<data::ImageFolderDataset>((fs::path(dir) / "train").string());
    s.eval = std::make_shared<data::ImageFolderDataset>(test_dir.string());
    describe = c.dataset + " (image folders) from " + dir;
  }
  if (c.train_subset > 0) {
    s.train = std::make_shared<PermutedImages>(s.train, c.seed + 17);
    s.train = take_subset<data::ImageDataset, SubsetImages>(s.train, c.train_subset);
  }
  if (c.eval_subset > 0) {
    s.eval = std::make_shared<PermutedImages>(s.eval, 29);
    s.eval = take_subset<data::ImageDataset, SubsetImages>(s.eval, c.eval_subset);
  }
  return s;
}

struct ImageTransforms {
  data::Compose train, eval;
};

// 32: CIFAR geometry (random crop with padding); otherwise ImageNet's (random resized crop; resize and centre
// crop).
ImageTransforms image_transforms(const TrainConfig& c) {
  ImageTransforms t;
  if (c.input_size != 32) {
    t.train.add(c.augment ? data::random_resized_crop(c.input_size, c.input_size)
                          : data::resize(c.input_size, c.input_size));
    t.eval.add(data::resize_shorter_side(c.input_size * 256 / 224));
    t.eval.add(data::center_crop(c.input_size, c.input_size));
  } else if (c.augment) {
    t.train.add(data::random_crop(32, 4));
  }
  if (c.augment) t.train.add(data::random_horizontal_flip());
  return t;
}

Data build_image_data(const TrainConfig& c, const std::string& dir, const LoaderSettings& loaders) {
  Data d;
  ImageSplits splits = image_splits(c, dir, d.describe);
  d.num_classes = splits.train->num_classes();
  ImageTransforms tf = image_transforms(c);
  auto norm = data::cifar10_normalize();
  d.train = std::make_unique<data::Loader>(
      std::make_shared<data::ImageBatchSource>(splits.train, tf.train, norm), loaders.train);
  d.eval = std::make_unique<data::Loader>(
      std::make_shared<data::ImageBatchSource>(splits.eval, tf.eval, norm), loaders.eval);
  d.describe += ": " + std::to_string(splits.train->size()) + " train / " +
                std::to_string(splits.eval->size()) + " eval images";
  return d;
}

// WordPiece (vocab.txt) for BERT models, byte-level BPE (vocab.json + merges.txt) for RoBERTa.
std::shared_ptr<const data::Tokenizer> make_tokenizer(const TrainConfig& c) {
  bool bert = models::canonical_model_name(c.model) == "bert";
  std::string tok_dir = c.tokenizer_dir;
  if (tok_dir.empty() && bert) tok_dir = "data-cache/minilm";
  if (tok_dir.empty())
    tok_dir =
        fs::exists("data-cache/roberta-base") ? "data-cache/roberta-base" : "../shared/data/roberta-base";
  DGP_CHECK(fs::exists(tok_dir), "--tokenizer-dir: '" << tok_dir << "' does not exist (run `make data`)");
  DGP_CHECK(!tok_dir.empty(), "--tokenizer-dir: a BERT model needs the folder holding vocab.txt");
  if (bert) return std::make_shared<data::WordPieceTokenizer>((fs::path(tok_dir) / "vocab.txt").string());
  return data::ByteLevelBpeTokenizer::from_directory(tok_dir);
}

// A GLUE task: train and dev splits, tokenized to --max-len.
Data build_text_data(const TrainConfig& c, const std::string& dir, const LoaderSettings& loaders) {
  Data d;
  d.text = true;
  data::GlueTask task = data::parse_glue_task(c.dataset);
  auto train = std::shared_ptr<const data::TextDataset>(
      std::make_shared<data::GlueDataset>(data::GlueDataset::from_directory(dir, task, "train")));
  auto eval = std::shared_ptr<const data::TextDataset>(
      std::make_shared<data::GlueDataset>(data::GlueDataset::from_directory(dir, task, "dev")));
  train = take_subset<data::TextDataset, SubsetText>(train, c.train_subset);
  eval = take_subset<data::TextDataset, SubsetText>(eval, c.eval_subset);
  d.num_classes = train->num_classes();
  std::shared_ptr<const data::Tokenizer> tokenizer = make_tokenizer(c);
  data::EncodeOptions enc;
  enc.max_length = c.max_len;
  enc.truncation = true;
  enc.pad_to_max_length = true;
  d.train = std::make_unique<data::Loader>(std::make_shared<data::TextBatchSource>(train, tokenizer, enc),
                                           loaders.train);
  d.eval = std::make_unique<data::Loader>(std::make_shared<data::TextBatchSource>(eval, tokenizer, enc),
                                          loaders.eval);
  d.describe = data::glue_task_name(task) + " from " + dir + ": " + std::to_string(train->size()) +
               " train / " + std::to_string(eval->size()) + " dev examples";
  return d;
}

Data build_data(const TrainConfig& c) {
  std::string dir = default_data_dir(c);
  DGP_CHECK(fs::exists(dir), "--data-dir: '"
                                 << dir << "' does not exist"
                                 << (c.data_dir.empty() ? " (run `make data` to prepare it)" : ""));
  const LoaderSettings loaders = loader_settings(c);
  const bool images = c.dataset == "cifar10" || c.dataset == "cifar100" || c.dataset == "imagefolder";
  return images ? build_image_data(c, dir, loaders) : build_text_data(c, dir, loaders);
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

// Whether a forward codec of --compress remembers samples (delta), so that batches must carry sample ids.
bool codecs_need_sample_ids(const std::vector<compress::DirectionPair>& codecs) {
  for (const auto& pair : codecs)
    if (compress::make_codec(pair.fwd)->needs_sample_ids()) return true;
  return false;
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

// with_ids: the dataset index of every row travels as a side input (a delta codec remembers each sample).
pipeline::MicroBatch to_micro_batch(const data::Batch& b, const models::Model& model, bool text,
                                    bool with_ids = false) {
  pipeline::MicroBatch mb;
  mb.labels = b.labels;
  if (with_ids) mb.ctx.sample_ids = engine::from_vector(b.indices, {b.size()});
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

// Sums over the ranks: with one process per rank every rank holds only its own stages' counters; every rank
// calls this at the same points of the loop.
void sum_over_ranks(std::vector<double>& values, bool across_ranks) {
#ifdef DGPIPE_WITH_MPI
  if (across_ranks && !values.empty())
    MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_DOUBLE, MPI_SUM,
                  MPI_COMM_WORLD);
#else
  (void)values;
  (void)across_ranks;
#endif
}

// The boundary traffic of this process's pipeline (each boundary and direction counted once: at its sender),
// with the encode time at the senders and the decode time at the receivers, summed over the ranks.
RunTotals pipeline_traffic(pipeline::Pipeline& pipe, bool across_ranks) {
  using pipeline::Direction;
  using pipeline::Side;
  uint64_t wire = 0, raw = 0;
  double codec_s = 0;
  for (auto& st : pipe.local_stages()) {
    auto& f = st->boundary_stats(Side::downstream, Direction::fwd);
    auto& g = st->boundary_stats(Side::upstream, Direction::bwd);
    wire += f.wire_bytes + g.wire_bytes;
    raw += f.raw_bytes + g.raw_bytes;
    codec_s += f.encode_s + g.encode_s + st->boundary_stats(Side::upstream, Direction::fwd).decode_s +
               st->boundary_stats(Side::downstream, Direction::bwd).decode_s;
  }
#ifdef DGPIPE_WITH_MPI
  if (across_ranks) {
    uint64_t bytes[2] = {wire, raw};
    MPI_Allreduce(MPI_IN_PLACE, bytes, 2, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    wire = bytes[0];
    raw = bytes[1];
  }
#endif
  std::vector<double> seconds{codec_s};
  sum_over_ranks(seconds, across_ranks);
  RunTotals t;
  t.wire_bytes = wire;
  t.raw_bytes = raw;
  t.codec_seconds = seconds[0];
  return t;
}

// ---------------- files and units ----------------

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

// ---------------- the run ----------------

// What one `dgpipe train` invocation holds. run_training fills it with the set-up functions below, in order
// (processes, data, model, pipeline, learning-rate schedule, resume, logs), then the epoch loop advances it.
struct Run {
  Run(const TrainConfig& config, int64_t stop_after) : c(config), stop_after_steps(stop_after) {}
  const TrainConfig& c;
  const int64_t stop_after_steps;  // > 0: return after that many steps of this invocation (a simulated crash)
  // processes: with mpi or nccl one per rank, started by mpirun, each logging into its own folder
  bool multi_process = false;
  int rank = 0, world = 1;
  std::string log_dir, checkpoint_path;
  // data, model, pipeline
  Data data;
  int64_t num_classes = 0;
  models::ModelPtr model;
  std::vector<layers::ModulePtr> blocks;
  std::unique_ptr<pipeline::Pipeline> pipe;
  bool reporter = false;  // this process runs the last stage: it sees the loss, prints and writes the metrics
  bool sample_ids = false;  // training batches carry their dataset indices (a delta codec needs them)
  // optimisation
  int64_t steps_per_epoch = 0, total_steps = 0;
  std::optional<engine::LRSchedule> lr_schedule;
  // counters (restored on resume)
  int64_t start_epoch = 0, global_step = 0, steps_this_run = 0;
  RunTotals before;           // what the segments before this one spent (from the checkpoint)
  int64_t skipped_steps = 0;  // of this segment: steps the loss scaler skipped (run_totals: the whole run)
  // logs
  std::ofstream csv, jsonl;
  // steps.jsonl, on the reporter
  std::unique_ptr<StepLog> step_log;
  std::map<int, uint64_t> fwd_wire_at_last_report, fwd_raw_at_last_report,
      bwd_wire_at_last_report;  // per stage
  Clock::time_point start_time;
  double eval_seconds = 0;                // this segment's time in held-out evaluation
  std::optional<EpochMetrics> last_eval;  // --eval-every's last result (an epoch ending there reuses it)
  std::vector<double> codec_error_at_last_record;  // the codec error sums the last record was taken from
  TrainSummary summary;
};

// The whole run so far: the segments before this one and this one's traffic and clocks. Collective over the
// ranks (every rank calls it at the same points).
RunTotals run_totals(Run& r) {
  RunTotals t = pipeline_traffic(*r.pipe, r.multi_process);
  const double segment_s = std::chrono::duration<double>(Clock::now() - r.start_time).count();
  t.wire_bytes += r.before.wire_bytes;
  t.raw_bytes += r.before.raw_bytes;
  t.codec_seconds += r.before.codec_seconds;
  t.train_seconds = r.before.train_seconds + segment_s - r.eval_seconds;
  t.elapsed_seconds = r.before.elapsed_seconds + segment_s;
  t.segments = r.before.segments;
  t.skipped_steps = r.before.skipped_steps + r.skipped_steps;
  return t;
}

// ---------------- set-up ----------------

// MPI (one process per rank under mpirun), the log folder, and the checkpoint a --resume needs.
void start_processes(Run& r) {
  const TrainConfig& c = r.c;
  // mpi and nccl: one process per rank, started by mpirun (nccl bootstraps over MPI).
  r.multi_process = c.channel == "mpi" || c.channel == "nccl";
#ifdef DGPIPE_WITH_MPI
  if (r.multi_process) {
    int argc = 0;
    char** argv = nullptr;
    std::tie(r.rank, r.world) = pipeline::mpi_init(&argc, &argv);
  }
#else
  DGP_CHECK(!r.multi_process, "--channel " << c.channel << ": dgpipe was built without MPI");
#endif
  r.log_dir = c.log_dir;
  if (r.multi_process && r.world > 1 && r.rank > 0)
    r.log_dir = (fs::path(c.log_dir) / ("rank" + std::to_string(r.rank))).string();
  ensure_writable_dir(r.log_dir);
  r.checkpoint_path = (fs::path(r.log_dir) / "checkpoint.safetensors").string();
  DGP_CHECK(!c.resume || fs::exists(r.checkpoint_path),
            "--resume: no checkpoint in '" << r.log_dir << "' (" << r.checkpoint_path << ")");
}

// --devices, checked against this machine. Every --precision runs on every device: a GPU on its tensor
// cores, the CPU as the GPU's twin (half storage, f32 arithmetic), correct but slower than fp32.
std::vector<engine::Device> checked_devices(const TrainConfig& c) {
  return parse_devices(c.devices);
}

void set_up_data(Run& r) {
  r.data = build_data(r.c);
  r.num_classes = r.c.num_classes > 0 ? r.c.num_classes : r.data.num_classes;
  DGP_CHECK(r.num_classes >= r.data.num_classes, "--num-classes " << r.num_classes
                                                                  << " is smaller than the dataset's "
                                                                  << r.data.num_classes << " classes");
}

// The model (optionally initialised from a pretrained checkpoint) and its blocks, the units stages are cut
// from.
void set_up_model(Run& r) {
  const TrainConfig& c = r.c;
  DGP_CHECK(models::is_text_model(c.model) == r.data.text,
            "--model " << c.model << " does not fit --dataset " << c.dataset << " ("
                       << (r.data.text ? "a text task" : "an image task") << ")");
  models::ModelOptions mo;
  mo.num_classes = r.num_classes;
  mo.input_size = c.input_size;
  mo.width_mult = c.width;
  mo.hf_config = c.model_config;
  mo.seed = c.seed;
  r.model = models::build_model(c.model, mo);
  if (!c.init_from.empty()) {
    DGP_CHECK(fs::exists(c.init_from), "--init-from: '" << c.init_from << "' does not exist");
    layers::LoadReport rep = models::load_checkpoint(*r.model, c.init_from, false);
    std::cout << "initialised from " << c.init_from << ": " << rep.loaded.size() << " tensors loaded, "
              << rep.missing.size() << " left at their initialisation\n";
  }
  for (size_t i = 0; i < r.model->num_blocks(); ++i) r.blocks.push_back(r.model->block(i));
}

// Blocks per stage: equal counts, "auto" (timed on one micro-batch of the first training batch) or the list
// given.
std::vector<int> choose_balance(Run& r) {
  const TrainConfig& c = r.c;
  DGP_CHECK(c.stages <= static_cast<int>(r.blocks.size()),
            "--stages " << c.stages << ": the model has only " << r.blocks.size() << " blocks");
  if (c.balance.empty())
    return pipeline::balance_by_cost(std::vector<double>(r.blocks.size(), 1.0), c.stages);
  if (c.balance == "auto") {
    data::Batch sample_batch;
    r.data.train->start_epoch(0);
    DGP_CHECK(r.data.train->next(sample_batch), "--balance auto: the training set has no full batch");
    r.data.train->stop();
    auto sample = pipeline::split_micro_batches(to_micro_batch(sample_batch, *r.model, r.data.text),
                                                c.micro_batches)[0];
    return pipeline::balance_by_time(r.blocks, sample, c.stages);
  }
  return pipeline::parse_balance(c.balance, static_cast<int>(r.blocks.size()), c.stages);
}

pipeline::PipelineOptions pipeline_options(Run& r, const std::vector<engine::Device>& devices) {
  const TrainConfig& c = r.c;
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
  po.clip_norm = c.clip;
  po.timeout = std::chrono::milliseconds(static_cast<int64_t>(std::ceil(c.peer_timeout * 1000.0)));
  po.trace = !c.trace.empty();
  po.seed = c.seed;
  po.precision = engine::amp::parse_precision(c.precision);
  po.loss_scaler.init_scale = c.loss_scale;
  po.loss_scaler.growth_interval = c.loss_scale_growth_interval;
  po.balance = choose_balance(r);
  r.sample_ids = codecs_need_sample_ids(po.codecs);
  if (c.bottleneck != "none" && !c.bottleneck.empty()) {
    DGP_CHECK(c.stages >= 2, "--bottleneck " << c.bottleneck << ": a single stage has no boundary");
    po.bottlenecks = models::insert_bottlenecks(*r.model, c.bottleneck, po.balance, c.seed);
  }
  return po;
}

// Each stage's optimizer over its parameters: SGD or AdamW, with biases and norm weights in a group without
// weight decay unless --no-decay-norms false.
pipeline::OptimizerFactory optimizer_factory(const Run& r) {
  std::map<const engine::TensorImpl*, std::string> param_names;
  for (auto& [name, t] : r.model->named_parameters()) param_names[t.impl_ptr().get()] = name;
  const TrainConfig& c = r.c;
  return [&c, param_names](std::vector<Tensor> params, int,
                           const std::vector<Tensor>& model_params) -> std::unique_ptr<engine::Optimizer> {
    std::vector<std::pair<std::string, Tensor>> named;
    for (size_t i = 0; i < params.size(); ++i) {  // a master weight goes by its model parameter's name
      auto it = param_names.find(model_params[i].impl_ptr().get());
      named.push_back({it != param_names.end() ? it->second : "", params[i]});
    }
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
}

void set_up_pipeline(Run& r, const std::vector<engine::Device>& devices) {
  pipeline::PipelineOptions po = pipeline_options(r, devices);
#ifdef DGPIPE_WITH_MPI
  if (r.multi_process) {
    po.process_channel = r.c.channel;
    r.pipe = std::make_unique<pipeline::Pipeline>(r.blocks, po, optimizer_factory(r), r.rank, r.world);
  }
#endif
  if (!r.pipe) r.pipe = std::make_unique<pipeline::Pipeline>(r.blocks, po, optimizer_factory(r));
  r.reporter = r.pipe->runs_stage(r.pipe->num_stages() - 1);  // the rank that sees the loss
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

void set_up_lr_schedule(Run& r) {
  r.steps_per_epoch = r.data.train->num_batches();
  DGP_CHECK(r.steps_per_epoch > 0, "the training set (" << r.data.train->num_samples()
                                                        << " samples) is smaller than --batch " << r.c.batch);
  r.total_steps = r.steps_per_epoch * r.c.epochs;
  if (r.c.max_steps > 0) r.total_steps = std::min(r.total_steps, r.c.max_steps);
  r.lr_schedule = make_lr_schedule(r.c, r.total_steps, r.steps_per_epoch);
}

// ---------------- checkpoints ----------------
// One safetensors file per process: the whole model under its PyTorch names ("model.*", in the dtype it
// trains in), each local stage's optimizer state ("optim.<stage>.*"), precision state ("amp.<stage>.*": the
// loss scale and its growth count, the fp32 master weights of fp16/bf16) and dropout generator
// ("rng.<stage>"), the counters and the configuration (--precision included) in the metadata.

nlohmann::json totals_json(const RunTotals& t) {
  return {{"wire_bytes", t.wire_bytes},           {"raw_bytes", t.raw_bytes},
          {"codec_seconds", t.codec_seconds},     {"train_seconds", t.train_seconds},
          {"elapsed_seconds", t.elapsed_seconds}, {"segments", t.segments},
          {"skipped_steps", t.skipped_steps}};
}

// The totals a checkpoint holds (none in checkpoints written before they were kept: then the run's earlier
// segments are not counted).
RunTotals totals_from_metadata(const std::map<std::string, std::string>& meta) {
  RunTotals t;
  auto it = meta.find("totals");
  if (it == meta.end()) return t;
  nlohmann::json j = nlohmann::json::parse(it->second);
  t.wire_bytes = j.at("wire_bytes").get<uint64_t>();
  t.raw_bytes = j.at("raw_bytes").get<uint64_t>();
  t.codec_seconds = j.at("codec_seconds").get<double>();
  t.train_seconds = j.at("train_seconds").get<double>();
  t.elapsed_seconds = j.at("elapsed_seconds").get<double>();
  t.segments = j.at("segments").get<int64_t>();
  t.skipped_steps = j.value("skipped_steps", int64_t{0});  // absent in checkpoints of earlier versions
  return t;
}

std::string optimizer_prefix(int stage) {
  return "optim." + std::to_string(stage) + ".";
}
std::string precision_prefix(int stage) {
  return "amp." + std::to_string(stage) + ".";
}
// The tensors of `f` under `prefix`, without it.
std::map<std::string, Tensor> with_prefix(const engine::SafetensorsFile& f, const std::string& prefix) {
  std::map<std::string, Tensor> out;
  for (auto& [k, t] : f.tensors)
    if (k.rfind(prefix, 0) == 0) out[k.substr(prefix.size())] = t;
  return out;
}
std::string generator_key(int stage) {
  return "rng." + std::to_string(stage);
}

void save_checkpoint(Run& r, int64_t next_epoch) {
  std::map<std::string, Tensor> tensors;
  // Under MPI, the blocks of other ranks' stages are stale copies and are ignored on resume: each rank
  // restores its own stages from its own file.
  for (auto& [name, t] : r.model->state_dict()) tensors["model." + name] = t;
  for (size_t si = 0; si < r.pipe->local_stages().size(); ++si) {
    int s = r.pipe->local_stages()[si]->setup().stage;
    if (engine::Optimizer* opt = r.pipe->stage_optimizer(si))
      for (auto& [k, t] : opt->state_dict()) tensors[optimizer_prefix(s) + k] = t;
    if (engine::amp::PrecisionStep* ps = r.pipe->stage_precision(si))
      for (auto& [k, t] : ps->state_dict()) tensors[precision_prefix(s) + k] = t;
    engine::PhiloxState g = r.pipe->stage_generator(si).state();
    tensors[generator_key(s)] = engine::from_vector(
        std::vector<int64_t>{static_cast<int64_t>(g.seed), static_cast<int64_t>(g.offset)}, {2});
  }
  std::map<std::string, std::string> meta{{"epoch", std::to_string(next_epoch)},
                                          {"step", std::to_string(r.global_step)},
                                          {"totals", totals_json(run_totals(r)).dump()},
                                          {"config", r.c.to_json().dump()},
                                          {"format", "dgpipe-checkpoint-1"}};
  engine::save_safetensors(r.checkpoint_path, tensors, meta);
}

// Whether the checkpoint was written with this run's --precision. A run resumes only in the precision it was
// written in (its masters, loss scale and model dtype belong to it); --eval-only may evaluate it in another,
// from its model weights.
bool same_precision(const Run& r, const engine::SafetensorsFile& f) {
  auto it = f.metadata.find("config");
  const nlohmann::json saved =
      it == f.metadata.end() ? nlohmann::json() : nlohmann::json::parse(it->second, nullptr, false);
  const std::string was = saved.is_object() ? saved.value("precision", std::string("fp32")) : "fp32";
  const bool same = engine::amp::parse_precision(was) == engine::amp::parse_precision(r.c.precision);
  DGP_CHECK(same || !r.c.resume, "--resume: '" << r.checkpoint_path << "' was written with --precision "
                                               << was << "; resume it with the same --precision (not "
                                               << r.c.precision << ")");
  return same;
}

// --resume (and --eval-only, when the log folder has a checkpoint): model state, optimizer states, precision
// states, dropout generators and the epoch and step counters.
void resume_from_checkpoint(Run& r) {
  if (!(r.c.resume || r.c.eval_only) || !fs::exists(r.checkpoint_path)) return;
  engine::SafetensorsFile f = engine::load_safetensors(r.checkpoint_path);
  DGP_CHECK(f.metadata.count("format") && f.metadata["format"] == "dgpipe-checkpoint-1",
            "--resume: '" << r.checkpoint_path << "' is not a dgpipe checkpoint");
  const bool same_precision_state = same_precision(r, f);
  r.model->load_state_dict(with_prefix(f, "model."), true);
  for (size_t si = 0; si < r.pipe->local_stages().size(); ++si) {
    int s = r.pipe->local_stages()[si]->setup().stage;
    std::map<std::string, Tensor> opt_state = with_prefix(f, optimizer_prefix(s));
    if (engine::Optimizer* opt = r.pipe->stage_optimizer(si); opt && !opt_state.empty())
      opt->load_state_dict(opt_state);
    // After the model: the masters are rounded into it again (the same values it was saved with).
    std::map<std::string, Tensor> precision_state = with_prefix(f, precision_prefix(s));
    engine::amp::PrecisionStep* ps = r.pipe->stage_precision(si);
    if (ps && same_precision_state && !precision_state.empty()) ps->load_state_dict(precision_state);
    auto it = f.tensors.find(generator_key(s));
    if (it != f.tensors.end()) {
      auto v = it->second.to_vector();
      r.pipe->stage_generator(si).set_state(engine::PhiloxState{
          static_cast<uint64_t>(static_cast<int64_t>(v[0])), static_cast<uint64_t>(v[1])});
    }
  }
  r.start_epoch = std::stoll(f.metadata["epoch"]);
  r.global_step = std::stoll(f.metadata["step"]);
  r.before = totals_from_metadata(f.metadata);
  if (r.c.resume) r.before.segments += 1;
  std::cout << "resumed from " << r.checkpoint_path << " at epoch " << r.start_epoch << ", step "
            << r.global_step << "\n";
}

// ---------------- logs ----------------

// --precision in a few words for the banner.
std::string precision_description(const TrainConfig& c) {
  const engine::amp::Precision p = engine::amp::parse_precision(c.precision);
  std::ostringstream s;
  s << engine::amp::precision_name(p);
  if (engine::amp::uses_autocast(p))
    s << " (autocast in " << engine::dtype_name(engine::amp::compute_dtype(p)) << ", fp32 weights";
  else if (engine::amp::uses_master_weights(p))
    s << " (weights and activations in " << engine::dtype_name(engine::amp::storage_dtype(p))
      << ", fp32 masters";
  if (engine::amp::needs_loss_scaling(p))
    s << ", loss scale " << c.loss_scale << " grown every " << c.loss_scale_growth_interval << " good steps";
  if (p != engine::amp::Precision::fp32) s << ")";
  return s.str();
}

// config.json and the banner: model, data, pipeline, optimisation.
// The banner's lines on the learned bottlenecks: where, the shapes of one sample, the share of the boundary.
void print_bottlenecks(Run& r) {
  const engine::Shape input = r.data.text ? engine::Shape{1, r.c.max_len} : engine::Shape{};
  for (const auto& b : r.model->bottlenecks()) {
    const engine::Shape wide = r.model->block_output_shape(b.after + 1, input);
    const engine::Shape narrow = b.module->narrow_shape(wide);
    std::cout << "  " << b.name << ": " << b.module->spec.str() << " after " << r.model->block_label(b.after)
              << ", " << engine::shape_str(wide) << " -> " << engine::shape_str(narrow) << " per sample ("
              << std::setprecision(4)
              << static_cast<double>(engine::shape_numel(narrow)) / engine::shape_numel(wide)
              << " of the boundary), " << b.module->num_parameters() << " parameters\n";
  }
}

void write_config_and_banner(Run& r) {
  const TrainConfig& c = r.c;
  if (!(r.rank == 0 || r.reporter)) return;
  write_text_atomic((fs::path(r.log_dir) / "config.json").string(), c.to_json().dump(2) + "\n");
  std::cout << "dgpipe train: " << r.model->name() << " (" << r.model->num_parameters() << " parameters, "
            << r.blocks.size() << " blocks) on " << r.data.describe << "\n"
            << "  pipeline: " << r.pipe->num_stages() << " stages [";
  const std::vector<int>& balance = r.pipe->options().balance;
  for (size_t i = 0; i < balance.size(); ++i) std::cout << (i ? "," : "") << balance[i];
  std::cout << "] " << c.placement << ", " << c.micro_batches << " micro-batches, " << c.pipeline_schedule
            << ", codecs " << c.compress << ", channel " << c.channel << "\n"
            << "  precision: " << precision_description(c) << "\n"
            << "  optimisation: " << c.optimizer << " " << r.lr_schedule->describe() << ", batch " << c.batch
            << ", " << c.epochs << " epochs x " << r.steps_per_epoch << " steps\n";
  print_bottlenecks(r);
  std::cout << std::flush;
}

// metrics.csv and metrics.jsonl: one line per epoch, appended to on resume.
// Keeps the lines of a metrics file that describe steps up to `step` (and the header): on resume, what was
// logged after the checkpoint, or a line cut short by a kill, belongs to work that is done again.
void keep_lines_up_to_step(const fs::path& path, int64_t step, bool csv) {
  std::ifstream in(path);
  if (!in.good()) return;
  std::string kept, line;
  for (bool first = true; std::getline(in, line); first = false) {
    bool keep = false;
    if (csv) {
      std::stringstream fields(line);
      std::string epoch, at;
      keep = first || (std::getline(fields, epoch, ',') && std::getline(fields, at, ',') && !at.empty() &&
                       std::strtoll(at.c_str(), nullptr, 10) <= step);
    } else {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      keep = j.is_object() && j.contains("step") && j["step"].is_number() && j["step"].get<int64_t>() <= step;
    }
    if (keep) kept += line + "\n";
  }
  in.close();
  write_text_atomic(path.string(), kept);
}

void open_metrics_files(Run& r) {
  bool fresh = !r.c.resume;
  if (!fresh) {
    keep_lines_up_to_step(fs::path(r.log_dir) / "metrics.csv", r.global_step, /*csv=*/true);
    keep_lines_up_to_step(fs::path(r.log_dir) / "metrics.jsonl", r.global_step, /*csv=*/false);
  }
  r.csv.open((fs::path(r.log_dir) / "metrics.csv").string(), fresh ? std::ios::trunc : std::ios::app);
  r.jsonl.open((fs::path(r.log_dir) / "metrics.jsonl").string(), fresh ? std::ios::trunc : std::ios::app);
  DGP_CHECK(r.csv.good() && r.jsonl.good(), "--log-dir: cannot write metrics in '" << r.log_dir << "'");
  if (fresh)
    r.csv << "epoch,step,train_loss,train_acc,eval_loss,eval_acc,eval_mcc,eval_f1,lr,samples_per_s,seconds,"
             "wire_bytes,"
             "raw_bytes\n";
}

// Per stage: boundary traffic and encode time in both directions, busy and wall time.
nlohmann::json stage_stats_json(pipeline::Pipeline& pipe) {
  nlohmann::json stages = nlohmann::json::array();
  for (auto& st : pipe.local_stages()) {
    auto& f = st->boundary_stats(pipeline::Side::downstream, pipeline::Direction::fwd);
    auto& g = st->boundary_stats(pipeline::Side::upstream, pipeline::Direction::bwd);
    stages.push_back({{"stage", st->setup().stage},
                      {"fwd_wire_bytes", f.wire_bytes},
                      {"fwd_raw_bytes", f.raw_bytes},
                      {"fwd_encode_s", f.encode_s},
                      {"bwd_wire_bytes", g.wire_bytes},
                      {"bwd_raw_bytes", g.raw_bytes},
                      {"bwd_encode_s", g.encode_s},
                      {"fwd_codec_state_bytes",
                       st->codec_state_bytes(pipeline::Side::downstream, pipeline::Direction::fwd)},
                      {"busy_s", st->stats().busy_s},
                      {"wall_s", st->stats().wall_s},
                      {"idle_fraction", st->stats().idle_fraction()}});
  }
  return stages;
}

void append_metrics(Run& r, const EpochMetrics& m) {
  r.csv << m.epoch << "," << m.step << "," << m.train_loss << "," << m.train_acc << "," << m.eval_loss << ","
        << m.eval_acc << "," << m.eval_mcc << "," << m.eval_f1 << "," << m.lr << "," << m.samples_per_s << ","
        << m.seconds << "," << m.wire_bytes << "," << m.raw_bytes << "\n"
        << std::flush;
  nlohmann::json j{{"record", "epoch"},
                   {"epoch", m.epoch},
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
                   {"raw_bytes", m.raw_bytes},
                   {"run", totals_json(m.totals)}};
  j["stages"] = stage_stats_json(*r.pipe);
  r.jsonl << j.dump() << "\n" << std::flush;
}

// --eval-every: the held-out metrics against the training wall-clock and traffic of the whole run so far.
void append_eval_record(Run& r, const EpochMetrics& m) {
  nlohmann::json j{{"record", "eval"},       {"epoch", m.epoch},
                   {"step", m.step},         {"eval_loss", m.eval_loss},
                   {"eval_acc", m.eval_acc}, {"eval_mcc", m.eval_mcc},
                   {"eval_f1", m.eval_f1},   {"run", totals_json(m.totals)}};
  r.jsonl << j.dump() << "\n" << std::flush;
}

// ---------------- progress and ETA ----------------

// The time left at the throughput measured so far in this epoch.
double eta_at_rate(int64_t steps_left, int64_t batch, double samples_per_s) {
  return steps_left * batch / std::max(samples_per_s, 1e-9);
}
// The time left at the last epoch's seconds per step.
double eta_at_epoch_pace(int64_t steps_left, double epoch_seconds, int64_t epoch_steps) {
  return steps_left * epoch_seconds / std::max<int64_t>(epoch_steps, 1);
}

// The running sums of one epoch.
struct EpochProgress {
  Clock::time_point start = Clock::now();
  double loss_sum = 0;
  int64_t correct = 0, seen = 0, steps = 0;
  RunTotals at_start;     // the run's totals when the epoch started
  double loss_scale = 0;  // after the last step (0: no loss scaling)
};

// The --log-every line: the epoch's mean loss and accuracy so far, the learning rate, throughput and ETA.
void print_step_progress(const Run& r, const EpochProgress& p, double lr) {
  double el = std::chrono::duration<double>(Clock::now() - p.start).count();
  double rate = p.steps * r.c.batch / std::max(el, 1e-9);
  int64_t left = r.total_steps - r.global_step;
  std::cout << "  step " << r.global_step << "/" << r.total_steps << "  loss " << std::fixed
            << std::setprecision(4) << p.loss_sum / p.steps << "  acc " << std::setprecision(1)
            << 100.0 * p.correct / std::max<int64_t>(p.seen, 1) << "%  lr " << std::setprecision(5) << lr
            << "  " << std::setprecision(1) << rate << " samples/s  ETA "
            << human_seconds(eta_at_rate(left, r.c.batch, rate));
  if (engine::amp::needs_loss_scaling(engine::amp::parse_precision(r.c.precision)))
    std::cout << "  loss scale " << std::setprecision(0) << p.loss_scale << " ("
              << r.before.skipped_steps + r.skipped_steps << " steps skipped)";
  std::cout << "\n" << std::flush;
}

// The second line of an epoch report: bytes sent against f32, and each boundary's rate per direction since
// the last report.
void print_boundary_traffic(Run& r, const EpochMetrics& m) {
  std::cout << "\n    wire: " << human_bytes(m.wire_bytes) << " for " << human_bytes(m.raw_bytes)
            << " of f32 (" << std::setprecision(1) << 100.0 * m.wire_bytes / m.raw_bytes << "%)";
  for (auto& st : r.pipe->local_stages()) {
    int s = st->setup().stage;
    auto& f = st->boundary_stats(pipeline::Side::downstream, pipeline::Direction::fwd);
    auto& g = st->boundary_stats(pipeline::Side::upstream, pipeline::Direction::bwd);
    if (s < r.pipe->num_stages() - 1)
      std::cout << "  " << s << "->" << s + 1 << " fwd "
                << human_bytes((f.wire_bytes - r.fwd_wire_at_last_report[s]) / std::max(m.seconds, 1e-9))
                << "/s (ratio " << std::setprecision(3)
                << static_cast<double>(f.wire_bytes) / std::max<uint64_t>(f.raw_bytes, 1)
                << std::setprecision(1) << ")";
    if (s > 0)
      std::cout << "  " << s << "->" << s - 1 << " bwd "
                << human_bytes((g.wire_bytes - r.bwd_wire_at_last_report[s]) / std::max(m.seconds, 1e-9))
                << "/s";
    r.fwd_wire_at_last_report[s] = f.wire_bytes;
    r.fwd_raw_at_last_report[s] = f.raw_bytes;
    r.bwd_wire_at_last_report[s] = g.wire_bytes;
  }
  // What the codecs keep between steps (the references of a delta codec), at each sending end.
  for (auto& st : r.pipe->local_stages()) {
    const uint64_t held = st->codec_state_bytes(pipeline::Side::downstream, pipeline::Direction::fwd);
    if (held > 0)
      std::cout << "\n    codec state " << st->setup().stage << "->" << st->setup().stage + 1 << ": "
                << human_bytes(held) << " at each end";
  }
}

void print_epoch(Run& r, const EpochMetrics& m, int64_t steps_in_epoch) {
  const TrainConfig& c = r.c;
  std::cout << "epoch " << m.epoch + 1 << "/" << c.epochs << "  step " << r.global_step << "  loss "
            << std::fixed << std::setprecision(4) << m.train_loss << "  train acc " << std::setprecision(2)
            << 100 * m.train_acc << "%  eval acc " << 100 * m.eval_acc << "%";
  if (c.dataset == "cola") std::cout << "  mcc " << std::setprecision(4) << m.eval_mcc;
  std::cout << "  lr " << std::setprecision(5) << m.lr << "  " << std::setprecision(1) << m.samples_per_s
            << " samples/s  " << human_seconds(m.seconds);
  int64_t left = r.total_steps - r.global_step;
  if (left > 0) std::cout << "  ETA " << human_seconds(eta_at_epoch_pace(left, m.seconds, steps_in_epoch));
  if (m.raw_bytes > 0) print_boundary_traffic(r, m);
  std::cout << "\n" << std::flush;
}

// ---------------- evaluation ----------------

// The eval batch cut to a multiple of --micro-batches samples (the pipeline splits it into equal
// micro-batches); false when it holds fewer samples than micro-batches.
bool cut_to_micro_batches(pipeline::MicroBatch& mb, int64_t size, int micro_batches) {
  if (size < micro_batches) return false;
  if (size % micro_batches != 0 && micro_batches > 1) {
    int64_t keep = size / micro_batches * micro_batches;
    auto cut = [&](Tensor& t) {
      if (t.defined()) t = t.narrow(0, 0, keep).contiguous();
    };
    cut(mb.input);
    cut(mb.labels);
    mb.ctx.for_each([&](const char*, Tensor& t) { cut(t); });
  }
  return true;
}

// Loss, accuracy, MCC and (two classes) F1 on the evaluation set, into m (on the reporter).
void evaluate(Run& r, EpochMetrics& m) {
  const auto t0 = Clock::now();
  std::vector<int64_t> preds, labels;
  double loss_sum = 0;
  int64_t n = 0;
  for (data::Batch& b : r.data.eval->epoch(0)) {
    pipeline::MicroBatch mb = to_micro_batch(b, *r.model, r.data.text);
    if (!cut_to_micro_batches(mb, b.size(), r.c.micro_batches)) continue;
    pipeline::StepResult res = r.pipe->eval_step(mb, r.reporter);
    if (r.reporter) {
      loss_sum += res.loss * res.samples;
      n += res.samples;
      for (auto& logits : res.logits)
        for (int64_t p : data::argmax_rows(logits)) preds.push_back(p);
      for (double v : mb.labels.to_vector()) labels.push_back(static_cast<int64_t>(v));
    }
  }
  if (r.reporter && n > 0) {
    labels.resize(preds.size());
    m.eval_loss = loss_sum / n;
    m.eval_acc = data::accuracy(preds, labels);
    m.eval_mcc = data::matthews_corrcoef(preds, labels);
    m.eval_f1 = r.num_classes == 2 ? data::f1_score(preds, labels) : 0.0;
  }
  r.eval_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
}

// --eval-every: an evaluation in the middle of an epoch, logged with the run's training time and traffic.
void evaluate_periodically(Run& r, int64_t epoch) {
  EpochMetrics m;
  m.epoch = epoch;
  m.step = r.global_step;
  evaluate(r, m);
  m.totals = run_totals(r);
  r.last_eval = m;
  if (!r.reporter) return;
  append_eval_record(r, m);
  std::cout << "  eval at step " << m.step << ": acc " << std::fixed << std::setprecision(2)
            << 100 * m.eval_acc << "%  loss " << std::setprecision(4) << m.eval_loss << "  after "
            << human_seconds(m.totals.train_seconds) << " of training\n"
            << std::flush;
}

// The codec error sums of every boundary and direction, [boundary][fwd, bwd][rel L2, cosine, messages],
// taken at the sending stage and summed over the ranks (collective).
std::vector<double> codec_error_sums(pipeline::Pipeline& pipe, bool across_ranks) {
  using pipeline::Direction;
  using pipeline::Side;
  const int boundaries = pipe.num_stages() - 1;
  std::vector<double> sums(static_cast<size_t>(boundaries) * 2 * 3, 0.0);
  auto add = [&](int boundary, int direction, const pipeline::BoundaryStats& bs) {
    double* at = &sums[(static_cast<size_t>(boundary) * 2 + direction) * 3];
    at[0] += bs.codec_rel_l2_sum;
    at[1] += bs.codec_cosine_sum;
    at[2] += static_cast<double>(bs.codec_measured);
  };
  for (auto& st : pipe.local_stages()) {
    const int s = st->setup().stage;
    if (s < boundaries) add(s, 0, st->boundary_stats(Side::downstream, Direction::fwd));
    if (s > 0) add(s - 1, 1, st->boundary_stats(Side::upstream, Direction::bwd));
  }
  sum_over_ranks(sums, across_ranks);
  return sums;
}

// --codec-error-every: per boundary and direction, the mean relative L2 error and cosine of what the receiver
// decoded against what the sender encoded, over the messages of the step just measured.
void append_codec_error_record(Run& r, int64_t epoch) {
  std::vector<double> sums = codec_error_sums(*r.pipe, r.multi_process);
  std::vector<double>& last = r.codec_error_at_last_record;
  last.resize(sums.size(), 0.0);
  const std::vector<compress::DirectionPair>& codecs = r.pipe->options().codecs;
  nlohmann::json boundaries = nlohmann::json::array();
  for (size_t b = 0; b * 6 < sums.size(); ++b)
    for (int d = 0; d < 2; ++d) {
      const size_t at = (b * 2 + d) * 3;
      const double messages = sums[at + 2] - last[at + 2];
      if (messages <= 0) continue;
      const compress::DirectionPair pair =
          codecs.empty() ? compress::DirectionPair{"none", "none"} : codecs[codecs.size() == 1 ? 0 : b];
      boundaries.push_back({{"boundary", std::to_string(b) + "->" + std::to_string(b + 1)},
                            {"direction", d == 0 ? "fwd" : "bwd"},
                            {"codec", d == 0 ? pair.fwd : pair.bwd},
                            {"rel_l2", (sums[at] - last[at]) / messages},
                            {"cosine", (sums[at + 1] - last[at + 1]) / messages},
                            {"messages", static_cast<int64_t>(messages)}});
    }
  last = sums;
  if (r.reporter && !boundaries.empty()) {
    nlohmann::json j{{"record", "codec_error"}, {"epoch", epoch}, {"step", r.global_step}};
    j["boundaries"] = boundaries;
    r.jsonl << j.dump() << "\n" << std::flush;
  }
}

// --eval-only: one evaluation of the restored (or --init-from) model.
void evaluate_only(Run& r) {
  EpochMetrics m;
  m.epoch = r.start_epoch;
  m.step = r.global_step;
  evaluate(r, m);
  if (r.reporter)
    std::cout << "eval: loss " << std::fixed << std::setprecision(4) << m.eval_loss << "  acc "
              << std::setprecision(2) << 100 * m.eval_acc << "%  mcc " << std::setprecision(4) << m.eval_mcc
              << "\n";
  r.summary.epochs.push_back(m);
  r.summary.final_eval_acc = m.eval_acc;
  r.summary.final_eval_mcc = m.eval_mcc;
}

// ---------------- the first phase of the two-phase recipe ----------------

// The block's device (where its parameters are, or the CPU).
engine::Device device_of(const layers::Module& m) {
  const std::vector<Tensor> params = m.parameters();
  return params.empty() ? engine::Device::cpu() : params[0].device();
}

// The reconstruction error of every bottleneck on one batch: the blocks run without gradients up to each
// boundary (BatchNorm in training mode, so its running statistics follow the data, as in the original), the
// bottleneck encodes and decodes the boundary tensor x, and loss_b = mean (decoder(encoder(x)) - x)^2. The
// blocks after a boundary see the reconstruction, as they will in the pipeline.
std::vector<Tensor> reconstruction_losses(Run& r, const data::Batch& batch) {
  pipeline::MicroBatch mb = to_micro_batch(batch, *r.model, r.data.text);
  const auto& inserted = r.model->bottlenecks();
  std::vector<Tensor> losses;
  Tensor h = mb.input;
  size_t next = 0;
  for (size_t i = 0; next < inserted.size(); ++i) {
    const engine::Device device = device_of(*r.model->block(i));
    layers::BlockContext ctx = mb.ctx;
    ctx.for_each([&](const char*, Tensor& t) {
      if (t.defined()) t = t.to(device);
    });
    {
      engine::NoGradGuard frozen;
      h = r.model->block(i)->forward(h.to(device), ctx);
    }
    if (inserted[next].after != i) continue;
    const layers::Bottleneck& b = *inserted[next++].module;
    const Tensor x = h.detach().to(device_of(*b.decoder));
    const Tensor y = b.decoder->forward(b.encoder->forward(h.detach(), ctx).to(x.device()), ctx);
    losses.push_back(engine::mean(engine::pow(engine::sub(y, x), 2.0)));
    h = y.detach();
  }
  return losses;
}

// --bottleneck-epochs: only the bottlenecks learn, each as an autoencoder of its boundary's activations, with
// the run's optimizer at --bottleneck-lr on a cosine schedule; then the usual training fine-tunes everything.
// Runs in this process, block by block on the stages' devices; a resumed run has done it already.
void train_bottlenecks(Run& r) {
  const TrainConfig& c = r.c;
  if (c.bottleneck_epochs == 0 || r.global_step > 0 || c.eval_only) return;
  DGP_CHECK(!r.multi_process,
            "--bottleneck-epochs: the autoencoder phase runs in one process over the whole "
            "model; run the job with --channel local");
  DGP_CHECK(
      c.precision != "fp16" && c.precision != "bf16",
      "--bottleneck-epochs: the autoencoder phase trains the bottlenecks' own parameters, which --precision "
          << c.precision << " stores in half; use fp32, mixed or mixed-bf16");
  std::vector<Tensor> params;
  for (const auto& b : r.model->bottlenecks())
    for (const Tensor& p : b.module->parameters()) params.push_back(p);
  TrainConfig phase = c;
  phase.lr = c.bottleneck_lr > 0 ? c.bottleneck_lr : c.lr;
  phase.warmup = 0;
  std::unique_ptr<engine::Optimizer> opt = optimizer_factory(r)(params, -1, params);
  const engine::LRSchedule lr =
      make_lr_schedule(phase, r.steps_per_epoch * c.bottleneck_epochs, r.steps_per_epoch);
  r.model->train(true);
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < c.bottleneck_epochs; ++epoch) {
    std::vector<double> sums(r.model->bottlenecks().size(), 0.0);
    int64_t steps = 0;
    for (data::Batch& b : r.data.train->epoch(epoch)) {
      opt->set_lr(lr.lr(step++));
      std::vector<Tensor> losses = reconstruction_losses(r, b);
      for (size_t k = 0; k < losses.size(); ++k) {
        losses[k].backward();
        sums[k] += losses[k].item();
      }
      opt->step();
      opt->zero_grad();
      ++steps;
    }
    std::cout << "bottleneck epoch " << epoch + 1 << "/" << c.bottleneck_epochs << "  reconstruction mse";
    for (size_t k = 0; k < sums.size(); ++k)
      std::cout << "  " << r.model->bottlenecks()[k].name << " " << std::scientific << std::setprecision(3)
                << sums[k] / std::max<int64_t>(steps, 1) << std::defaultfloat;
    std::cout << "\n" << std::flush;
  }
}

// ---------------- training ----------------

// One optimizer step at the scheduled learning rate; writes the trace after --trace-steps steps.
void train_step(Run& r, const data::Batch& b, EpochProgress& p, EpochMetrics& m) {
  const TrainConfig& c = r.c;
  double lr = r.lr_schedule->lr(r.global_step);
  r.pipe->set_lr(lr);
  m.lr = lr;
  const bool measure_codecs = c.codec_error_every > 0 && r.global_step % c.codec_error_every == 0;
  r.pipe->measure_codec_error(measure_codecs);
  pipeline::StepResult res = r.pipe->train_step(to_micro_batch(b, *r.model, r.data.text, r.sample_ids));
  if (!c.trace.empty() && r.global_step + 1 == c.trace_steps) {
    r.pipe->write_trace(c.trace);
    r.pipe->stop_tracing();
    if (r.reporter)
      std::cout << "  trace of the first " << c.trace_steps << " steps written to " << c.trace << "\n";
  }
  ++r.global_step;
  ++p.steps;
  ++r.steps_this_run;
  if (res.skipped) ++r.skipped_steps;
  p.loss_scale = res.loss_scale;
  if (r.reporter) {
    // A step the loss scaler skipped (fp16 overflow) is expected to happen now and then; any other
    // non-finite loss means the run diverged.
    DGP_CHECK(std::isfinite(res.loss) || res.skipped, "training diverged: loss "
                                                          << res.loss << " at step " << r.global_step
                                                          << " (lower --lr, or check the data)");
    if (std::isfinite(res.loss)) p.loss_sum += res.loss;
    p.correct += res.correct;
    p.seen += res.samples;
    r.summary.step_losses.push_back(res.loss);
    r.step_log->write(r.global_step, res.loss, lr);
  }
  if (r.reporter && c.log_every > 0 && r.global_step % c.log_every == 0) print_step_progress(r, p, lr);
  if (measure_codecs) append_codec_error_record(r, m.epoch);
  if (c.eval_every > 0 && r.global_step % c.eval_every == 0) evaluate_periodically(r, m.epoch);
}

enum class EpochEnd { data_done, max_steps, interrupted };

// The training steps of one epoch, until the data or --max-steps runs out, or stop_after_steps.
EpochEnd train_epoch_steps(Run& r, int64_t epoch, EpochProgress& p, EpochMetrics& m) {
  for (data::Batch& b : r.data.train->epoch(epoch)) {
    if (r.c.max_steps > 0 && r.global_step >= r.c.max_steps) return EpochEnd::max_steps;
    train_step(r, b, p, m);
    if (r.stop_after_steps > 0 && r.steps_this_run >= r.stop_after_steps) return EpochEnd::interrupted;
  }
  return EpochEnd::data_done;
}

// After an epoch's steps: its metrics, the evaluation, the report and the metrics files.
void finish_epoch(Run& r, const EpochProgress& p, EpochMetrics& m) {
  m.step = r.global_step;
  m.totals = run_totals(r);
  m.seconds = m.totals.train_seconds - p.at_start.train_seconds;  // without --eval-every's evaluations
  m.samples_per_s = p.steps * r.c.batch / std::max(m.seconds, 1e-9);
  m.train_loss = p.loss_sum / p.steps;
  m.train_acc = p.seen ? static_cast<double>(p.correct) / p.seen : 0;
  m.wire_bytes = m.totals.wire_bytes - p.at_start.wire_bytes;
  m.raw_bytes = m.totals.raw_bytes - p.at_start.raw_bytes;
  if (r.last_eval && r.last_eval->step == r.global_step) {  // --eval-every has just evaluated this model
    m.eval_loss = r.last_eval->eval_loss;
    m.eval_acc = r.last_eval->eval_acc;
    m.eval_mcc = r.last_eval->eval_mcc;
    m.eval_f1 = r.last_eval->eval_f1;
  } else {
    evaluate(r, m);
  }
  r.summary.epochs.push_back(m);
  if (r.reporter) {
    print_epoch(r, m, p.steps);
    append_metrics(r, m);
  }
}

// The epoch loop: train, evaluate, report, checkpoint. Returns false when stop_after_steps interrupted it.
bool train_epochs(Run& r) {
  bool stop = false;
  for (int64_t epoch = r.start_epoch; epoch < r.c.epochs && !stop; ++epoch) {
    EpochMetrics m;
    m.epoch = epoch;
    EpochProgress p;
    p.at_start = run_totals(r);
    EpochEnd end = train_epoch_steps(r, epoch, p, m);
    if (end == EpochEnd::interrupted) return false;
    stop = end == EpochEnd::max_steps;
    if (p.steps == 0) break;
    finish_epoch(r, p, m);
    bool last_epoch = epoch + 1 == r.c.epochs || stop;
    if ((r.c.checkpoint_every > 0 && (epoch + 1) % r.c.checkpoint_every == 0) || last_epoch)
      save_checkpoint(r, epoch + 1);
  }
  return true;
}

// ---------------- the end ----------------

// The boundary traffic of the run as a link would carry it (compute: the training time less the codecs').
LinkTraffic link_traffic(const RunTotals& t) {
  return LinkTraffic{t.wire_bytes, t.raw_bytes, t.codec_seconds,
                     std::max(t.train_seconds - t.codec_seconds, 0.0)};
}

// What the run's traffic costs over the link of the last closing line, with and without its codecs.
constexpr double kReferenceLinkBytesPerS = 100e6 / 8;  // 100 Mbit/s

void write_summary_json(const Run& r, const RunTotals& t) {
  const TrainConfig& c = r.c;
  const TrainSummary& summary = r.summary;
  nlohmann::json s{{"model", c.model},
                   {"dataset", c.dataset},
                   {"compress", c.compress},
                   {"stages", c.stages},
                   {"precision", c.precision},
                   {"skipped_steps", t.skipped_steps},
                   {"steps", r.global_step},
                   {"seconds", t.elapsed_seconds},
                   {"train_seconds", t.train_seconds},
                   {"segments", t.segments},
                   {"final_eval_acc", summary.final_eval_acc},
                   {"final_eval_mcc", summary.final_eval_mcc},
                   {"wire_bytes", t.wire_bytes},
                   {"raw_bytes", t.raw_bytes},
                   {"codec_seconds", t.codec_seconds},
                   {"compression_ratio", t.raw_bytes ? static_cast<double>(t.wire_bytes) / t.raw_bytes : 1.0},
                   {"samples_per_s", summary.epochs.empty() ? 0.0 : summary.epochs.back().samples_per_s},
                   {"link_100mbit_seconds",
                    {{"compressed", wire_seconds(t.wire_bytes, kReferenceLinkBytesPerS) + t.codec_seconds},
                     {"uncompressed", wire_seconds(t.raw_bytes, kReferenceLinkBytesPerS)}}}};
  write_text_atomic((fs::path(r.log_dir) / "summary.json").string(), s.dump(2) + "\n");
}

// "done: ..." and, when boundaries were crossed, what that traffic costs over a 100 Mbit/s link.
void print_closing_lines(const Run& r, const RunTotals& t) {
  const TrainConfig& c = r.c;
  const TrainSummary& summary = r.summary;
  std::cout << "done: eval acc " << std::fixed << std::setprecision(2) << 100 * summary.final_eval_acc << "%";
  if (c.dataset == "cola") std::cout << ", mcc " << std::setprecision(4) << summary.final_eval_mcc;
  if (t.raw_bytes)
    std::cout << "; the boundaries sent " << human_bytes(t.wire_bytes) << " instead of "
              << human_bytes(t.raw_bytes) << " (" << std::setprecision(1)
              << 100.0 * (1.0 - static_cast<double>(t.wire_bytes) / t.raw_bytes) << "% saved)";
  if (t.segments > 1) std::cout << " over " << t.segments << " segments (resumed " << t.segments - 1 << "x)";
  std::cout << "; logs in " << r.log_dir << "\n";
  if (!t.raw_bytes) return;
  const LinkTraffic traffic = link_traffic(t);
  const double wire_s = wire_seconds(t.wire_bytes, kReferenceLinkBytesPerS);
  std::cout << "over a 100 Mbit/s link this traffic would take " << human_seconds(wire_s + t.codec_seconds)
            << " with " << c.compress << " (" << human_seconds(wire_s) << " on the wire + "
            << human_seconds(t.codec_seconds) << " encoding and decoding) instead of "
            << human_seconds(wire_seconds(t.raw_bytes, kReferenceLinkBytesPerS))
            << " uncompressed; the codecs save time on links slower than "
            << human_bandwidth(overlapped_break_even(traffic)) << " to "
            << human_bandwidth(serial_break_even(traffic))
            << " (transfers hidden behind compute, or not at all; dgpipe break-even)\n"
            << std::flush;
}

// Totals into the summary, summary.json and the closing lines; MPI shut down.
void finish_run(Run& r) {
  TrainSummary& summary = r.summary;
  if (summary.epochs.empty()) {  // resumed from the last checkpoint (killed before summary.json): evaluate it
    EpochMetrics m;
    m.epoch = r.start_epoch;
    m.step = r.global_step;
    evaluate(r, m);
    summary.epochs.push_back(m);
  }
  const RunTotals totals = run_totals(r);
  summary.totals = totals;
  summary.steps = r.global_step;
  if (!summary.epochs.empty()) {
    summary.final_eval_acc = summary.epochs.back().eval_acc;
    summary.final_eval_mcc = summary.epochs.back().eval_mcc;
  }
  if (r.reporter) {
    write_summary_json(r, totals);
    print_closing_lines(r, totals);
  }
#ifdef DGPIPE_WITH_MPI
  if (r.multi_process) {
    r.pipe.reset();
    pipeline::mpi_finalize();
  }
#endif
}

}  // namespace

TrainSummary run_training(const TrainConfig& config, int64_t stop_after_steps) {
  config.validate();
  Run r(config, stop_after_steps);
  start_processes(r);
  std::vector<engine::Device> devices = checked_devices(config);
  engine::manual_seed(config.seed);
  set_up_data(r);
  set_up_model(r);
  set_up_pipeline(r, devices);
  set_up_lr_schedule(r);
  resume_from_checkpoint(r);
  write_config_and_banner(r);
  open_metrics_files(r);
  train_bottlenecks(r);
  r.start_time = Clock::now();
  if (config.eval_only) {
    evaluate_only(r);
    return std::move(r.summary);
  }
  if (r.reporter) {
    if (config.resume)
      keep_lines_up_to_step(fs::path(r.log_dir) / "steps.jsonl", r.global_step, /*csv=*/false);
    r.step_log = std::make_unique<StepLog>(r.log_dir, devices, config.resume);
  }
  if (!train_epochs(r)) return std::move(r.summary);  // interrupted after stop_after_steps: no summary.json
  finish_run(r);
  return std::move(r.summary);
}

}  // namespace dgpipe::apps
