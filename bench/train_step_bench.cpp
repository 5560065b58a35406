// One full training step of a registry model — forward, cross-entropy, backward, SGD with Nesterov momentum
// and weight decay, fp32 — timed on fixed inputs, printed as one JSON line. bench/train_step_vs_pytorch.py
// runs it next to PyTorch on the same inputs and thread count.
//
//   build/bench/train_step_bench --model resnet18 --width 0.25 --threads 1
//   build/bench/train_step_bench --model bert --batch 32 --seq-len 128 --inputs batch.safetensors
//   build/bench/train_step_bench --model resnet18 --width 0.25 --stages 3 --placement client-server
//       --micro-batches 4 --compress sortquant:6+2     (the `make run` pipeline, stages as threads)
//
// One stage with one micro-batch runs the step directly (model, loss, backward, optimizer) and reports the
// time of each pass; anything else runs pipeline::Pipeline over the local channel. --threads N is the
// engine's CPU thread budget (engine::set_cpu_threads) and OMP_NUM_THREADS, set before the first op runs.
//
// Not a Google Benchmark suite (hence not named bench_*: scripts/run_bench.sh runs those with benchmark
// flags).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/cuda.h"
#include "engine/io/safetensors.h"
#include "engine/optim/sgd.h"
#include "engine/parallel.h"
#include "models/registry.h"
#include "pipeline/pipeline.h"

namespace {

using dgpipe::engine::Device;
using dgpipe::engine::Tensor;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string model = "resnet18";
  double width = 1.0;
  int64_t batch = 0;  // 0: 64 for image models, 32 for text models
  int64_t seq_len = 128;
  int threads = 1;
  int warmup = 3;
  int steps = 10;
  std::string device = "cpu";
  int stages = 1;
  std::string placement = "chain";
  int micro_batches = 1;
  std::string compress = "none";
  std::string inputs;  // safetensors with "input" and "labels"; empty: drawn from a fixed seed
};

const char* kUsage =
    "usage: train_step_bench [--model NAME] [--width W] [--batch N] [--seq-len L] [--threads N]\n"
    "                        [--warmup K] [--steps S] [--device cpu|cuda:0] [--inputs FILE.safetensors]\n"
    "                        [--stages S] [--placement chain|client-server] [--micro-batches M]\n"
    "                        [--compress SPEC]\n";

double number_arg(const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    double v = std::stod(value, &used);
    if (used == value.size()) return v;
  } catch (const std::exception&) {
  }
  DGP_FAIL(flag << ": expected a number, got '" << value << "'");
}

int int_at_least(const std::string& flag, const std::string& value, int minimum) {
  double v = number_arg(flag, value);
  DGP_CHECK(v == static_cast<int>(v) && v >= minimum,
            flag << ": expected an integer >= " << minimum << ", got '" << value << "'");
  return static_cast<int>(v);
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      std::exit(0);
    }
    DGP_CHECK(i + 1 < argc, flag << ": missing value\n" << kUsage);
    std::string v = argv[++i];
    if (flag == "--model")
      o.model = v;
    else if (flag == "--width")
      o.width = number_arg(flag, v);
    else if (flag == "--batch")
      o.batch = int_at_least(flag, v, 1);
    else if (flag == "--seq-len")
      o.seq_len = int_at_least(flag, v, 2);
    else if (flag == "--threads")
      o.threads = int_at_least(flag, v, 1);
    else if (flag == "--warmup")
      o.warmup = int_at_least(flag, v, 0);
    else if (flag == "--steps")
      o.steps = int_at_least(flag, v, 1);
    else if (flag == "--device")
      o.device = v;
    else if (flag == "--inputs")
      o.inputs = v;
    else if (flag == "--stages")
      o.stages = int_at_least(flag, v, 1);
    else if (flag == "--placement")
      o.placement = v;
    else if (flag == "--micro-batches")
      o.micro_batches = int_at_least(flag, v, 1);
    else if (flag == "--compress")
      o.compress = v;
    else
      DGP_FAIL("unknown argument '" << flag << "'\n" << kUsage);
  }
  return o;
}

// The thread budget: the engine's op threads (engine/parallel.h; OpenBLAS stays at one thread per caller, as
// the engine configures it, since the GEMMs run inside those threads), and OMP_NUM_THREADS for any OpenMP
// code in the libraries.
void set_thread_budget(int threads) {
  dgpipe::engine::set_cpu_threads(threads);
  setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
}

struct Batch {
  Tensor input, labels;
};

// Images: standard normal [N,3,32,32]; text: token ids in [1000, vocab) (no padding, so every position is
// attended; ids below 1000 are BERT's special and unused tokens). Labels uniform over the classes.
Batch make_batch(const dgpipe::models::Model& model, const Options& o, int64_t batch) {
  dgpipe::engine::Generator gen(1234);
  Batch b;
  if (model.input_kind == dgpipe::models::InputKind::image) {
    b.input = dgpipe::engine::randn(model.example_input_shape(batch), {}, &gen);
  } else {
    Tensor u = dgpipe::engine::rand({batch, o.seq_len}, {}, &gen);
    std::vector<int64_t> ids;
    for (double v : u.to_vector()) ids.push_back(1000 + static_cast<int64_t>(v * 29000));
    b.input = dgpipe::engine::from_vector(ids, {batch, o.seq_len});
  }
  Tensor u = dgpipe::engine::rand({batch}, {}, &gen);
  std::vector<int64_t> labels;
  for (double v : u.to_vector())
    labels.push_back(std::min<int64_t>(model.num_classes - 1, static_cast<int64_t>(v * model.num_classes)));
  b.labels = dgpipe::engine::from_vector(labels, {batch});
  return b;
}

Batch load_batch(const std::string& path) {
  dgpipe::engine::SafetensorsFile f = dgpipe::engine::load_safetensors(path);
  DGP_CHECK(f.tensors.count("input") && f.tensors.count("labels"),
            "--inputs: '" << path << "' needs tensors named 'input' and 'labels'");
  return {f.tensors["input"], f.tensors["labels"].to(dgpipe::engine::DType::i64)};
}

std::unique_ptr<dgpipe::engine::Optimizer> make_sgd(std::vector<Tensor> params) {
  dgpipe::engine::SGDOptions s;
  s.lr = 0.01;
  s.momentum = 0.9;
  s.nesterov = true;
  s.weight_decay = 5e-4;
  return std::make_unique<dgpipe::engine::SGD>(std::move(params), s);
}

void synchronize(const Device& device) {
  if (device.is_cuda()) dgpipe::engine::cuda::device_synchronize(device.index);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// CPU time of this process (all its threads), in seconds: on a shared machine it shows what a step costs
// when other processes take turns on the cores, and how much CPU spinning threads burn.
double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Wall and process CPU time of every timed step, and wall time per pass where the step is run directly.
struct Timings {
  std::vector<double> step_s, cpu_s;
  std::map<std::string, std::vector<double>> pass_s;  // forward (incl. loss), backward, optimizer
  double last_loss = 0;
};

Timings time_direct(dgpipe::models::Model& model, const Batch& b, const Options& o, const Device& device) {
  auto opt = make_sgd(model.parameters());
  const dgpipe::layers::BlockContext ctx = model.make_context(b.input);
  Timings t;
  for (int i = 0; i < o.warmup + o.steps; ++i) {
    synchronize(device);
    const double c0 = process_cpu_seconds();
    const Clock::time_point t0 = Clock::now();
    Tensor loss = model.loss(model.forward(b.input, ctx), b.labels);
    synchronize(device);
    const Clock::time_point t1 = Clock::now();
    loss.backward();
    synchronize(device);
    const Clock::time_point t2 = Clock::now();
    opt->step();
    opt->zero_grad();
    synchronize(device);
    if (i < o.warmup) continue;
    t.step_s.push_back(seconds_since(t0));
    t.cpu_s.push_back(process_cpu_seconds() - c0);
    t.pass_s["forward"].push_back(std::chrono::duration<double>(t1 - t0).count());
    t.pass_s["backward"].push_back(std::chrono::duration<double>(t2 - t1).count());
    t.pass_s["optimizer"].push_back(seconds_since(t2));
    t.last_loss = loss.item();
  }
  return t;
}

Timings time_pipeline(dgpipe::models::Model& model, const Batch& b, const Options& o, const Device& device) {
  std::vector<dgpipe::layers::ModulePtr> blocks;
  for (size_t i = 0; i < model.num_blocks(); ++i) blocks.push_back(model.block(i));
  DGP_CHECK(o.stages <= static_cast<int>(blocks.size()),
            "--stages " << o.stages << ": " << model.name() << " has only " << blocks.size() << " blocks");
  dgpipe::pipeline::PipelineOptions po;
  po.balance = dgpipe::pipeline::balance_by_cost(std::vector<double>(blocks.size(), 1.0), o.stages);
  po.micro_batches = o.micro_batches;
  po.placement = dgpipe::pipeline::parse_placement(o.placement);
  po.codecs = {dgpipe::compress::parse_direction_pair(o.compress)};
  po.devices = {device};
  dgpipe::pipeline::Pipeline pipe(
      blocks, po,
      [](std::vector<Tensor> params, int, const std::vector<Tensor>&) { return make_sgd(params); });
  dgpipe::pipeline::MicroBatch mb;
  mb.input = b.input;
  mb.labels = b.labels;
  mb.ctx = model.make_context(b.input);
  Timings t;
  for (int i = 0; i < o.warmup + o.steps; ++i) {
    const double c0 = process_cpu_seconds();
    const Clock::time_point t0 = Clock::now();
    dgpipe::pipeline::StepResult r = pipe.train_step(mb);
    synchronize(device);
    if (i < o.warmup) continue;
    t.step_s.push_back(seconds_since(t0));
    t.cpu_s.push_back(process_cpu_seconds() - c0);
    t.last_loss = r.loss;
  }
  return t;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

nlohmann::json report(const Options& o, const Batch& b, const Timings& t) {
  const double med = median(t.step_s), best = *std::min_element(t.step_s.begin(), t.step_s.end());
  const double samples = static_cast<double>(b.input.size(0));
  nlohmann::json j = {{"model", o.model},
                      {"width", o.width},
                      {"batch", b.input.size(0)},
                      {"device", o.device},
                      {"threads", o.threads},
                      {"stages", o.stages},
                      {"micro_batches", o.micro_batches},
                      {"placement", o.placement},
                      {"compress", o.compress},
                      {"steps", o.steps},
                      {"ms_per_step", med * 1e3},
                      {"best_ms_per_step", best * 1e3},
                      {"samples_per_s", samples / med},
                      {"cpu_ms_per_step", median(t.cpu_s) * 1e3},
                      {"loss", t.last_loss}};
  for (auto& [pass, v] : t.pass_s) j["pass_ms"][pass] = median(v) * 1e3;
  return j;
}

int run(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  set_thread_budget(o.threads);
  const Device device = Device::parse(o.device);
  DGP_CHECK(!device.is_cuda() || device.index < dgpipe::engine::cuda_device_count(),
            "--device " << o.device << ": this machine has " << dgpipe::engine::cuda_device_count()
                        << " CUDA device(s)");
  dgpipe::models::ModelOptions mo;
  mo.width_mult = o.width;
  mo.seed = 1;
  dgpipe::models::ModelPtr model = dgpipe::models::build_model(o.model, mo);
  const bool image = model->input_kind == dgpipe::models::InputKind::image;
  Batch b = o.inputs.empty() ? make_batch(*model, o, o.batch > 0 ? o.batch : (image ? 64 : 32))
                             : load_batch(o.inputs);
  DGP_CHECK(b.input.size(0) % o.micro_batches == 0,
            "--micro-batches " << o.micro_batches << " does not divide the batch of " << b.input.size(0));
  model->train();
  const bool direct = o.stages == 1 && o.micro_batches == 1;
  if (direct) {  // (a pipeline places its stages itself and takes host batches, as the trainer's)
    model->to(device);
    b.input = b.input.to(device);
    b.labels = b.labels.to(device);
  }
  Timings t = direct ? time_direct(*model, b, o, device) : time_pipeline(*model, b, o, device);
  std::cout << report(o, b, t).dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  dgpipe::engine::restart_with_passive_openmp_wait(argv);
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "train_step_bench: " << e.what() << "\n";
    return 1;
  }
}
