#include "pipeline/pipeline.h"

#include <algorithm>
#include <exception>
#include <numeric>
#include <optional>
#include <sstream>

#include "engine/error.h"
#include "engine/ops.h"
#include "engine/parallel.h"
#include "layers/layers.h"

namespace dgpipe::pipeline {

std::vector<int> parse_balance(const std::string& text, int num_blocks, int stages) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    long v = std::strtol(item.c_str(), &end, 10);
    DGP_CHECK(!item.empty() && end && *end == '\0' && v > 0,
              "--balance: '" << item << "' in '" << text << "' is not a positive block count");
    out.push_back(static_cast<int>(v));
  }
  DGP_CHECK(!out.empty(), "--balance: empty list");
  DGP_CHECK(stages == 0 || static_cast<int>(out.size()) == stages,
            "--balance: '" << text << "' lists " << out.size() << " stages but --stages is " << stages);
  int total = std::accumulate(out.begin(), out.end(), 0);
  DGP_CHECK(total == num_blocks,
            "--balance: '" << text << "' covers " << total << " blocks but the model has " << num_blocks);
  return out;
}

std::vector<int> balance_by_cost(const std::vector<double>& costs, int stages) {
  const int n = static_cast<int>(costs.size());
  DGP_CHECK(stages >= 1 && stages <= n,
            "balance: cannot split " << n << " blocks into " << stages << " stages");
  // best[k][i]: minimal max-stage cost splitting the first i blocks into k stages.
  std::vector<double> prefix(n + 1, 0);
  for (int i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + costs[i];
  const double inf = 1e300;
  std::vector<std::vector<double>> best(stages + 1, std::vector<double>(n + 1, inf));
  std::vector<std::vector<int>> cut(stages + 1, std::vector<int>(n + 1, 0));
  best[0][0] = 0;
  for (int k = 1; k <= stages; ++k)
    for (int i = k; i <= n; ++i)
      for (int j = k - 1; j < i; ++j) {
        double v = std::max(best[k - 1][j], prefix[i] - prefix[j]);
        if (v < best[k][i]) {
          best[k][i] = v;
          cut[k][i] = j;
        }
      }
  std::vector<int> sizes(stages);
  int i = n;
  for (int k = stages; k >= 1; --k) {
    sizes[k - 1] = i - cut[k][i];
    i = cut[k][i];
  }
  return sizes;
}

std::vector<int> balance_by_time(const std::vector<layers::ModulePtr>& blocks, const MicroBatch& sample,
                                 int stages) {
  std::vector<double> costs;
  Tensor h = sample.input;
  for (auto& b : blocks) {
    b->train(true);
    Tensor x = h.detach();
    if (engine::is_floating(x.dtype())) x.requires_grad_(true);
    auto t0 = std::chrono::steady_clock::now();
    double best = 1e300;
    Tensor y;
    for (int rep = 0; rep < 2; ++rep) {  // the first run warms caches; keep the faster
      auto r0 = std::chrono::steady_clock::now();
      y = b->forward(x, sample.ctx);
      if (y.requires_grad()) engine::backward({y}, {engine::ones_like(y)});
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - r0).count());
    }
    (void)t0;
    b->zero_grad();
    costs.push_back(best);
    h = y.detach();
  }
  return balance_by_cost(costs, stages);
}

Placement parse_placement(const std::string& text) {
  if (text == "chain") return Placement::chain;
  if (text == "client-server") return Placement::client_server;
  DGP_FAIL("--placement: unknown '" << text << "' (expected chain or client-server)");
}

std::vector<int> place_stages(Placement placement, int S) {
  std::vector<int> ranks(S);
  if (placement == Placement::chain) {
    std::iota(ranks.begin(), ranks.end(), 0);
  } else {
    DGP_CHECK(
        S >= 3,
        "--placement client-server needs at least 3 stages (client first, servers, client last), got " << S);
    for (int s = 1; s < S - 1; ++s) ranks[s] = s;
    ranks[0] = ranks[S - 1] = 0;
  }
  return ranks;
}

int ranks_needed(Placement placement, int S) {
  return placement == Placement::chain ? S : S - 1;
}

Pipeline::Pipeline(std::vector<layers::ModulePtr> blocks, PipelineOptions opts,
                   OptimizerFactory make_optimizer)
    : opts_(std::move(opts)) {
  stage_rank_.assign(opts_.balance.size(), 0);  // every stage in this process
  channel_ = std::make_shared<LocalChannel>(opts_.link);
  build(std::move(blocks), std::move(make_optimizer));
}

Pipeline::Pipeline(std::vector<layers::ModulePtr> blocks, PipelineOptions opts,
                   OptimizerFactory make_optimizer, std::shared_ptr<Channel> channel)
    : opts_(std::move(opts)), channel_(std::move(channel)) {
  DGP_CHECK(channel_ != nullptr, "pipeline: no channel given");
  stage_rank_.assign(opts_.balance.size(), 0);
  build(std::move(blocks), std::move(make_optimizer));
}

#ifdef DGPIPE_WITH_MPI
Pipeline::Pipeline(std::vector<layers::ModulePtr> blocks, PipelineOptions opts,
                   OptimizerFactory make_optimizer, int rank, int world_size)
    : opts_(std::move(opts)), rank_(rank) {
  int S = static_cast<int>(opts_.balance.size());
  stage_rank_ = place_stages(opts_.placement, S);
  int needed = ranks_needed(opts_.placement, S);
  DGP_CHECK(world_size == needed,
            "pipeline: " << S << " stages with placement "
                         << (opts_.placement == Placement::chain ? "chain" : "client-server") << " need "
                         << needed << " MPI ranks, mpirun started " << world_size);
  if (opts_.process_channel == "nccl") {
#if defined(DGPIPE_WITH_CUDA) && defined(DGPIPE_WITH_NCCL)
    // NCCL moves device memory: every stage of this rank must sit on one CUDA device (CPU<->GPU edges: use
    // mpi).
    int device = -1;
    for (int s = 0; s < S; ++s) {
      if (stage_rank_[s] != rank_) continue;
      engine::Device d = opts_.devices.empty()       ? engine::Device::cpu()
                         : opts_.devices.size() == 1 ? opts_.devices[0]
                                                     : opts_.devices[s];
      DGP_CHECK(d.is_cuda(), "pipeline: --channel nccl needs every stage on a CUDA device, but stage "
                                 << s << " (rank " << rank_ << ") is on " << d.str()
                                 << "; use --channel mpi for CPU<->GPU edges");
      DGP_CHECK(device < 0 || device == d.index,
                "pipeline: --channel nccl needs one CUDA device per rank, but rank "
                    << rank_ << " has stages on cuda:" << device << " and cuda:" << d.index);
      device = d.index;
    }
    channel_ = std::make_shared<NcclChannel>(stage_rank_, device < 0 ? 0 : device, opts_.link);
#else
    DGP_FAIL(
        "pipeline: --channel nccl: dgpipe was built without NCCL (it needs CUDA, MPI and nccl.h/libnccl at "
        "configure time); use --channel mpi");
#endif
  } else {
    DGP_CHECK(opts_.process_channel == "mpi",
              "pipeline: unknown process channel '" << opts_.process_channel << "' (expected mpi or nccl)");
    channel_ = std::make_shared<MpiChannel>(stage_rank_, opts_.link);
  }
  build(std::move(blocks), std::move(make_optimizer));
}
#endif

void Pipeline::build(std::vector<layers::ModulePtr> blocks, OptimizerFactory make_optimizer) {
  const int S = static_cast<int>(opts_.balance.size());
  DGP_CHECK(S >= 1, "pipeline: no stages");
  int total = std::accumulate(opts_.balance.begin(), opts_.balance.end(), 0);
  DGP_CHECK(total == static_cast<int>(blocks.size()),
            "pipeline: balance covers " << total << " blocks but the model has " << blocks.size());
  DGP_CHECK(
      opts_.codecs.empty() || opts_.codecs.size() == 1 || static_cast<int>(opts_.codecs.size()) == S - 1,
      "pipeline: " << opts_.codecs.size() << " codec specs for " << S - 1 << " boundaries");
  DGP_CHECK(opts_.devices.empty() || opts_.devices.size() == 1 || static_cast<int>(opts_.devices.size()) == S,
            "pipeline: " << opts_.devices.size() << " devices for " << S << " stages");
  PeerTimeoutPolicy timeouts = opts_.adaptive_timeout;
  timeouts.fixed = opts_.timeout;
  peer_timeout_ = PeerTimeout(timeouts);
  channel_->set_timeout(peer_timeout_.bound(), peer_timeout_.describe());
  auto codec_of = [&](int boundary) {
    if (opts_.codecs.empty()) return compress::DirectionPair{"none", "none"};
    return opts_.codecs.size() == 1 ? opts_.codecs[0] : opts_.codecs[boundary];
  };
  DGP_CHECK(opts_.bottlenecks.empty() || static_cast<int>(opts_.bottlenecks.size()) == S - 1,
            "pipeline: " << opts_.bottlenecks.size() << " bottlenecks for " << S - 1 << " boundaries");
  auto bottleneck_of = [&](int boundary) {
    return opts_.bottlenecks.empty() ? nullptr : opts_.bottlenecks[boundary];
  };
  auto device_of = [&](int s) {
    if (opts_.devices.empty()) return engine::Device::cpu();
    return opts_.devices.size() == 1 ? opts_.devices[0] : opts_.devices[s];
  };
  int at = 0;
  auto origin = std::chrono::steady_clock::now();
  for (int s = 0; s < S; ++s) {
    std::vector<layers::ModulePtr> mine(blocks.begin() + at, blocks.begin() + at + opts_.balance[s]);
    at += opts_.balance[s];
    if (stage_rank_[s] != rank_) continue;
    StageSetup setup;
    setup.stage = s;
    setup.num_stages = S;
    setup.micro_batches = opts_.micro_batches;
    setup.kind = opts_.kind;
    setup.device = device_of(s);
    // The stage's halves of the learned bottlenecks on its boundaries: the decoder of the one upstream, the
    // encoder of the one downstream. They are placed, stored and optimised like the stage's blocks.
    std::vector<layers::ModulePtr> modules = mine;
    if (s > 0 && bottleneck_of(s - 1)) {
      setup.upstream_bottleneck = bottleneck_of(s - 1);
      modules.push_back(setup.upstream_bottleneck->decoder);
    }
    if (s < S - 1 && bottleneck_of(s)) {
      setup.downstream_bottleneck = bottleneck_of(s);
      modules.push_back(setup.downstream_bottleneck->encoder);
    }
    std::vector<Tensor> params, exact_values;  // exact_values: before fp16/bf16 round them (the masters')
    for (auto& b : modules) {
      b->to(setup.device);
      for (auto& p : b->parameters()) params.push_back(p);
    }
    if (engine::amp::uses_master_weights(opts_.precision)) {
      for (auto& p : params) exact_values.push_back(p.detach().clone());
      for (auto& b : modules) b->to_half_precision(engine::amp::storage_dtype(opts_.precision));
    }
    setup.blocks = mine;
    generators_.push_back(
        std::make_unique<engine::Generator>(opts_.seed * 1000003ull + static_cast<uint64_t>(s) + 1));
    for (auto& b : mine)
      for (auto& [name, module] : b->named_modules())
        if (auto* drop = dynamic_cast<const layers::Dropout*>(module.get()))
          const_cast<layers::Dropout*>(drop)->gen = generators_.back().get();
    if (s > 0) {
      setup.upstream_fwd = codec_of(s - 1).fwd;
      setup.upstream_bwd = codec_of(s - 1).bwd;
    }
    if (s < S - 1) {
      setup.downstream_fwd = codec_of(s).fwd;
      setup.downstream_bwd = codec_of(s).bwd;
    }
    setup.seed_compat = opts_.seed_compat;
    setup.recompute = opts_.recompute;
    setup.label_smoothing = opts_.label_smoothing;
    setup.clip_norm = opts_.clip_norm;
    setup.precision = opts_.precision;
    if (make_optimizer) {
      precision_steps_.push_back(std::make_unique<engine::amp::PrecisionStep>(
          opts_.precision, params, opts_.loss_scaler, exact_values));
      setup.precision_step = precision_steps_.back().get();
      if (!params.empty()) {
        optimizers_.push_back(make_optimizer(setup.precision_step->optimizer_params(), s, params));
        setup.optimizer = optimizers_.back().get();
      }
    }
    std::vector<layers::BatchNorm2d*> deferred;
    if (opts_.deferred_bn)
      for (auto& b : mine)
        for (auto& [name, module] : b->named_modules())
          if (auto* bn = dynamic_cast<const layers::BatchNorm2d*>(module.get())) {
            auto* mutable_bn = const_cast<layers::BatchNorm2d*>(bn);
            mutable_bn->set_deferred(true);
            deferred.push_back(mutable_bn);
          }
    if (!deferred.empty())
      setup.after_step = [deferred]() {
        for (auto* bn : deferred) bn->commit_deferred();
      };
    stages_.push_back(std::make_unique<StageExecutor>(std::move(setup), channel_));
    stages_.back()->set_trace(opts_.trace);
    stages_.back()->set_trace_origin(origin);
  }
  if (stages_.size() > 1) start_stage_workers();
}

// One thread per local stage; the stages share the cores, so each one's ops get an equal share of the CPU
// thread budget (at least one thread): stage threads x op threads stays within it.
void Pipeline::start_stage_workers() {
  const int share = std::max(1, engine::cpu_threads() / static_cast<int>(stages_.size()));
  for (size_t i = 0; i < stages_.size(); ++i) {
    workers_.push_back(std::make_unique<StageWorker>());
    workers_.back()->post([share] { engine::set_thread_cpu_threads(share); });
    workers_.back()->wait();
  }
}

namespace {
std::string what_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}
}  // namespace

template <class Fn>
StepResult Pipeline::run_all(Fn&& fn) {
  const size_t n = stages_.size();
  std::vector<StepResult> results(n);
  std::vector<std::exception_ptr> errors(n);
  std::vector<std::string> messages(n);
  // A CUDA stage orders its step with the current stream of the thread that runs it (executor.cpp): the
  // workers take this thread's, so the step comes after the work queued here before it, and the work queued
  // here after it (a checkpoint, an evaluation) comes after the step.
  std::vector<std::optional<engine::cuda::Stream>> caller_streams(n);
  for (size_t i = 0; i < n; ++i)
    if (stages_[i]->setup().device.is_cuda())
      caller_streams[i] = engine::cuda::current_stream(stages_[i]->setup().device.index);
  auto body = [&](size_t i) {
    try {
      std::optional<engine::cuda::StreamGuard> as_caller;
      if (caller_streams[i]) as_caller.emplace(*caller_streams[i]);
      results[i] = fn(*stages_[i]);
    } catch (...) {
      errors[i] = std::current_exception();
      messages[i] = what_of(errors[i]);
      channel_->abort("stage " + std::to_string(stages_[i]->setup().stage) + " failed at step " +
                      std::to_string(step_) + ": " + messages[i]);
    }
  };
  if (n == 1) {
    body(0);
  } else {
    for (size_t i = 0; i < n; ++i) workers_[i]->post([&body, i] { body(i); });
    for (size_t i = 0; i < n; ++i) workers_[i]->wait();  // body catches everything: wait() does not throw
  }
  // Report the root cause: the first error that is not "aborted because another stage failed". Every local
  // stage has stopped, so a multi-process channel can end the job from this thread.
  size_t root = n;
  for (size_t i = 0; i < n && root == n; ++i)
    if (errors[i] && messages[i].find("pipeline aborted") == std::string::npos) root = i;
  for (size_t i = 0; i < n && root == n; ++i)
    if (errors[i]) root = i;
  if (root < n) {
    channel_->end_after_failure("stage " + std::to_string(stages_[root]->setup().stage) + " failed at step " +
                                std::to_string(step_) + ": " + messages[root]);
    std::rethrow_exception(errors[root]);
  }
  StepResult merged;
  for (auto& r : results) {
    merged.loss += r.loss;
    merged.correct += r.correct;
    merged.samples += r.samples;
    for (auto& l : r.logits) merged.logits.push_back(l);
    merged.skipped = merged.skipped || r.skipped;  // every stage took the same decision
    merged.loss_scale = std::max(merged.loss_scale, r.loss_scale);
  }
  return merged;
}

StepResult Pipeline::train_step(const MicroBatch& batch) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<MicroBatch> micro = split_micro_batches(batch, opts_.micro_batches);
  int64_t step = step_;
  StepResult r = run_all([&](StageExecutor& st) { return st.train_step(step, micro); });
  ++step_;
  // Between steps no stage waits, so the next step's bound can be set here.
  peer_timeout_.record_step(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  channel_->set_timeout(peer_timeout_.bound(), peer_timeout_.describe());
  return r;
}

StepResult Pipeline::eval_step(const MicroBatch& batch, bool keep_logits) {
  std::vector<MicroBatch> micro = split_micro_batches(batch, opts_.micro_batches);
  int64_t step = step_;
  StepResult r = run_all([&](StageExecutor& st) { return st.eval_step(step, micro, keep_logits); });
  ++step_;
  return r;
}

std::vector<TraceEvent> Pipeline::trace_events() const {
  std::vector<TraceEvent> all;
  for (auto& s : stages_)
    for (auto& e : s->trace()) all.push_back(e);
  return all;
}

void Pipeline::write_trace(const std::string& path) const {
  write_chrome_trace(path, trace_events(), rank_);
}

void Pipeline::set_lr(double lr) {
  for (auto& o : optimizers_) o->set_lr(lr);
}

}  // namespace dgpipe::pipeline
