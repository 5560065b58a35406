// A whole pipeline: partition a model's blocks into stages, place stages on ranks and devices, and run steps.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/optim/optimizer.h"
#include "pipeline/executor.h"
#include "pipeline/peer_timeout.h"
#include "pipeline/stage_worker.h"

namespace dgpipe::pipeline {

// "1,17,1" -> {1,17,1} (must sum to num_blocks and have `stages` entries, or stages == 0 to take its length).
std::vector<int> parse_balance(const std::string& text, int num_blocks, int stages);
// Contiguous partition of blocks minimising the slowest stage, given each block's cost.
std::vector<int> balance_by_cost(const std::vector<double>& costs, int stages);
// Measures forward+backward time of each block on `sample` (one micro-batch) and balances by it.
std::vector<int> balance_by_time(const std::vector<layers::ModulePtr>& blocks, const MicroBatch& sample,
                                 int stages);

enum class Placement { chain, client_server };
Placement parse_placement(const std::string& text);
// stage -> rank. chain: stage i on rank i. client-server: rank 0 runs the first and the last stage (data and
// labels stay there); the middle stages run on ranks 1..S-2.
std::vector<int> place_stages(Placement placement, int stages);
int ranks_needed(Placement placement, int stages);

// A stage's optimizer over `params`, the tensors it updates: the stage's parameters, or their fp32 masters
// under --precision fp16/bf16. model_params[i] is the model parameter params[i] stands for (for names).
using OptimizerFactory = std::function<std::unique_ptr<engine::Optimizer>(
    std::vector<Tensor> params, int stage, const std::vector<Tensor>& model_params)>;

struct PipelineOptions {
  std::vector<int> balance;  // blocks per stage
  int micro_batches = 1;
  ScheduleKind kind = ScheduleKind::gpipe;
  std::vector<compress::DirectionPair> codecs;  // per boundary (size stages-1), or one entry for all
  // Learned bottlenecks per boundary (size stages-1; null: none), or empty for none: boundary b's encoder
  // runs at the end of stage b and its decoder at the start of stage b+1 (models::insert_bottlenecks makes
  // them).
  std::vector<std::shared_ptr<layers::Bottleneck>> bottlenecks;
  std::vector<engine::Device> devices;  // per stage, or one entry for all (default cpu)
  Placement placement = Placement::chain;
  LinkModel link;
  // Multi-process constructor only: "mpi" (host bytes over MPI) or "nccl" (device bodies GPU<->GPU with NCCL,
  // every stage of a rank on that rank's one CUDA device; needs a build with NCCL).
  std::string process_channel = "mpi";
  bool seed_compat = false;
  bool recompute = false;
  // BatchNorm running statistics over the whole mini-batch, committed at each optimizer step (see
  // layers::BatchNorm2d::set_deferred); off: updated per micro-batch, as the original did
  // (docs/original.md#b18).
  bool deferred_bn = false;
  double label_smoothing = 0.0;
  double clip_norm = 0.0;  // clip all gradients to this global L2 norm (0: off); see StageSetup
  // How long a stage waits for a message before it names the peer dead or stuck: > 0, this fixed bound
  // (dgpipe train --peer-timeout); 0, the bound follows the measured step time (pipeline/peer_timeout.h).
  std::chrono::milliseconds timeout{0};
  PeerTimeoutPolicy adaptive_timeout;  // the parameters of the bound that follows the step time
  bool trace = false;
  // Every stage draws dropout masks from its own Philox generator seeded from (seed, stage), so threads never
  // race for one generator and a run is reproducible.
  uint64_t seed = 0;
  // Training precision (engine/amp.h). fp16/bf16 store each local stage's blocks in half (normalisation
  // layers excepted) when the pipeline is built, and the optimizers update fp32 masters; mixed runs the
  // blocks under autocast. With an optimizer factory, every local stage gets a PrecisionStep.
  engine::amp::Precision precision = engine::amp::Precision::fp32;
  engine::LossScalerOptions loss_scaler;  // fp16 and mixed: dynamic loss scaling (the others ignore it)
};

class Pipeline {
 public:
  // Local: every stage runs on a thread of this process (LocalChannel), the same thread for every step.
  Pipeline(std::vector<layers::ModulePtr> blocks, PipelineOptions opts, OptimizerFactory make_optimizer);
  // Every stage as a thread of this process, over a caller-supplied channel (tests: a channel that carries
  // device bodies without leaving the CPU).
  Pipeline(std::vector<layers::ModulePtr> blocks, PipelineOptions opts, OptimizerFactory make_optimizer,
           std::shared_ptr<Channel> channel);
#ifdef DGPIPE_WITH_MPI
  // MPI: this process runs the stages placed on `rank` (mpi_init first); the others run in the other ranks.
  Pipeline(std::vector<layers::ModulePtr> blocks, PipelineOptions opts, OptimizerFactory make_optimizer,
           int rank, int world_size);
#endif

  // One optimizer step on a mini-batch (split into micro-batches). The result's loss/accuracy is filled on
  // the process running the last stage. Any stage failing stops all stages and rethrows its error here. On a
  // GPU the step is ordered with this thread's current streams: it starts after the work queued there, and
  // what is queued there after it returns (a checkpoint, an evaluation) runs after every stage's step.
  StepResult train_step(const MicroBatch& batch);
  StepResult eval_step(const MicroBatch& batch, bool keep_logits = false);

  int num_stages() const {
    return static_cast<int>(opts_.balance.size());
  }
  const PipelineOptions& options() const {
    return opts_;
  }
  // Stages run by this process, with their statistics and optimizers.
  std::vector<std::unique_ptr<StageExecutor>>& local_stages() {
    return stages_;
  }
  std::vector<std::unique_ptr<engine::Optimizer>>& optimizers() {
    return optimizers_;
  }
  // The optimizer and the precision step of local stage index i (null: none; see StageSetup).
  engine::Optimizer* stage_optimizer(size_t i) const {
    return stages_.at(i)->setup().optimizer;
  }
  engine::amp::PrecisionStep* stage_precision(size_t i) const {
    return stages_.at(i)->setup().precision_step;
  }
  const std::vector<int>& stage_rank() const {
    return stage_rank_;
  }
  bool runs_stage(int s) const {
    return stage_rank_[s] == rank_;
  }
  std::vector<TraceEvent> trace_events() const;
  void write_trace(const std::string& path) const;
  // Compare what every sending stage encodes with what its receiver will decode, in the training steps that
  // follow, until switched off (StageExecutor::measure_codec_error).
  void measure_codec_error(bool on) {
    for (auto& s : stages_) s->measure_codec_error(on);
  }
  // Stops recording trace events (a trace covers the first steps; recording forever would grow without
  // bound).
  void stop_tracing() {
    for (auto& s : stages_) s->set_trace(false);
  }
  // The bound on a stage's wait for the next step's messages, and how it was chosen.
  const PeerTimeout& peer_timeout() const {
    return peer_timeout_;
  }
  // Sets the learning rate of every local stage's optimizer (what a schedule calls each iteration).
  void set_lr(double lr);
  // The dropout generator of local stage index i (for checkpoints).
  engine::Generator& stage_generator(size_t i) {
    return *generators_.at(i);
  }

 private:
  void build(std::vector<layers::ModulePtr> blocks, OptimizerFactory make_optimizer);
  void start_stage_workers();
  template <class Fn>
  StepResult run_all(Fn&& fn);

  PipelineOptions opts_;
  std::shared_ptr<Channel> channel_;
  std::vector<int> stage_rank_;
  int rank_ = 0;
  std::vector<std::unique_ptr<StageExecutor>> stages_;
  std::vector<std::unique_ptr<engine::Optimizer>> optimizers_;
  std::vector<std::unique_ptr<engine::amp::PrecisionStep>> precision_steps_;
  std::vector<std::unique_ptr<engine::Generator>> generators_;
  int64_t step_ = 0;
  PeerTimeout peer_timeout_;
  // With several local stages, one worker thread per stage for the pipeline's life (empty with one stage,
  // which runs on the caller's thread). Declared last, so the threads stop before the stages they run are
  // destroyed.
  std::vector<std::unique_ptr<StageWorker>> workers_;
};

}  // namespace dgpipe::pipeline
