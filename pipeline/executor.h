// The stage executor: interprets one stage's instruction list (pipeline/schedule.h) for one optimizer step.
//
// A stage runs a contiguous range of a model's blocks. Activations leave it through the forward codec of its
// downstream boundary and gradients through the backward codec of its upstream boundary; both are decoded by
// the neighbour. The sender keeps its exact activation (its own graph is untouched); the receiver trains on
// the decoded x̂, a leaf that requires grad, and sends back its gradient: straight-through, as the original.
//
// Loss: the last stage computes cross-entropy per micro-batch scaled by n_m / N, so the parameters receive
// the gradient of the mean loss over the whole mini-batch (seed_compat: unscaled sum of micro-batch means,
// the original's choice). BatchNorm normalises per micro-batch (a block sees one micro-batch at a time).
// The original's protocol and loop: docs/original.md#boundary-protocol and #training-loop.
//
// Precision (engine/amp.h): a stage runs its blocks under the autocast state of its precision, set on its own
// worker thread for each step. What crosses a boundary has the dtype the sending block produced (half
// activations and gradients of a half-precision stage cross as half); the receiver decodes activations into
// its storage dtype (fp16/bf16) or the sender's (fp32, mixed), and gradients into the dtype of the output
// they flow into. With loss scaling the last stage scales its loss, so every gradient, also those crossing
// boundaries, is a scaled one, and each stage unscales its own parameters' gradients. The decision to skip a
// step with a non-finite gradient, and the global norm --clip scales to, are agreed by all stages
// (agree_across_stages) before any of them steps.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "compress/codec.h"
#include "engine/amp.h"
#include "engine/cuda.h"
#include "layers/bottleneck.h"
#include "layers/module.h"
#include "pipeline/channel.h"
#include "pipeline/schedule.h"

namespace dgpipe::pipeline {

using engine::Tensor;

// One micro-batch as the data owner sees it.
struct MicroBatch {
  Tensor input;              // stage 0's input (images f32 [n,3,H,W] or token ids i64 [n,L])
  Tensor labels;             // i64 [n], used by the last stage
  layers::BlockContext ctx;  // side inputs; travel with the activations to later stages
};

// The two boundaries of a stage and the two directions of a boundary.
enum class Side { upstream = 0, downstream = 1 };  // the boundary stage-1 -> stage / stage -> stage+1
enum class Direction { fwd = 0, bwd = 1 };         // activations / gradients

// One direction of one boundary as one stage sees it. The stage sends on downstream/fwd (activations) and
// upstream/bwd (gradients), where it spends encode_s; it receives on upstream/fwd and downstream/bwd, where
// it spends wait_s and decode_s. Bytes and messages are counted on both ends, so the sender's and the
// receiver's counts of a boundary agree.
struct BoundaryStats {
  uint64_t raw_bytes = 0;   // what an uncompressed f32 tensor would have cost (without a learned bottleneck)
  uint64_t wire_bytes = 0;  // what the codec's packets cost (header + body)
  uint64_t side_bytes = 0;  // side inputs carried with activations (attention masks, position ids, ...)
  uint64_t messages = 0;
  double encode_s = 0, decode_s = 0, wait_s = 0;
  // Sending end, on steps that measure the codec (StageExecutor::measure_codec_error): over the messages
  // measured, the sums of |x̂ - x| / |x| and of cos(x̂, x), x̂ = decode(encode(x)) being what the receiver gets.
  double codec_rel_l2_sum = 0, codec_cosine_sum = 0;
  uint64_t codec_measured = 0;
};

struct StageStats {
  double busy_s = 0;  // time in Forward/Backward/encode/decode/optimizer
  double wall_s = 0;  // time from the first to the last instruction of the step
  double idle_fraction() const { return wall_s > 0 ? 1.0 - busy_s / wall_s : 0.0; }
};

struct TraceEvent {
  int stage;
  std::string name;
  double start_us;
  double dur_us;
};

struct StageSetup {
  int stage = 0;
  int num_stages = 1;
  int micro_batches = 1;
  ScheduleKind kind = ScheduleKind::gpipe;
  std::vector<layers::ModulePtr> blocks;  // this stage's blocks, already on `device`
  engine::Device device = engine::Device::cpu();
  std::string upstream_fwd = "none", upstream_bwd = "none";      // boundary stage-1 -> stage
  std::string downstream_fwd = "none", downstream_bwd = "none";  // boundary stage -> stage+1
  // Learned bottlenecks of the two boundaries (layers/bottleneck.h; null: none). The stage runs the decoder
  // of its upstream one before its blocks and the encoder of its downstream one after them, so what it sends
  // is the encoder's output; both halves are already on `device` and their parameters in the stage's
  // optimizer.
  std::shared_ptr<layers::Bottleneck> upstream_bottleneck, downstream_bottleneck;
  bool seed_compat = false;
  bool recompute = false;  // keep only stage inputs during forward; recompute the graph in backward
  double label_smoothing = 0.0;
  // Clip the gradients of the whole model (every stage together) to this global L2 norm at OptimizerStep,
  // after unscaling, as torch.nn.utils.clip_grad_norm_ would on the unpipelined model (0: off).
  double clip_norm = 0.0;
  engine::amp::Precision precision = engine::amp::Precision::fp32;
  // The stage's optimizer (null: no parameters, or a pipeline without optimizers) and the precision step
  // around it (master weights, loss scaling; null: a pipeline without optimizers). OptimizerStep unscales,
  // agrees on skipping, steps (or not) and drops the gradients.
  engine::Optimizer* optimizer = nullptr;
  engine::amp::PrecisionStep* precision_step = nullptr;
  std::function<void()> after_step;  // called at OptimizerStep after the update (deferred batch norm)
};

struct StepResult {
  double loss = 0;      // last stage: mini-batch loss (mean over samples)
  int64_t correct = 0;  // last stage: top-1 correct predictions
  int64_t samples = 0;
  std::vector<Tensor> logits;  // last stage, when keep_logits
  bool skipped = false;        // training with loss scaling: a non-finite gradient skipped the update
  double loss_scale = 0;       // training with a precision step: the loss scale after the step (1: none)
};

class StageExecutor {
 public:
  StageExecutor(StageSetup setup, std::shared_ptr<Channel> channel);

  // One training step. `data` is needed by stage 0 (inputs, contexts) and by the last stage (labels); other
  // stages may pass an empty vector. On a GPU the step is stream-ordered like an op: it starts after the work
  // queued on the calling thread's current stream of the stage's device, and work queued there after it
  // returns runs after the step.
  StepResult train_step(int64_t step, const std::vector<MicroBatch>& data);
  // Forward only (evaluation through the codecs, as the original validated: docs/original.md#overview); no
  // gradients, no optimizer, and nothing counted in the statistics.
  StepResult eval_step(int64_t step, const std::vector<MicroBatch>& data, bool keep_logits = false);

  const StageSetup& setup() const { return setup_; }
  // Bytes the codec of (side, dir) keeps between steps (compress::Codec::state_bytes: the references of a
  // delta codec, an error-feedback residual); 0 on a side without a neighbour.
  uint64_t codec_state_bytes(Side side, Direction dir) const {
    const auto& c = codec_[static_cast<int>(side)][static_cast<int>(dir)];
    return c ? c->state_bytes() : 0;
  }
  BoundaryStats& boundary_stats(Side side, Direction dir) {
    return boundary_stats_[static_cast<int>(side)][static_cast<int>(dir)];
  }
  StageStats& stats() { return stats_; }
  std::vector<TraceEvent>& trace() { return trace_; }
  void set_trace(bool on) { tracing_ = on; }
  // While on, every message this stage sends in a training step is also decoded here, by a second instance
  // of its codec, and compared with what was encoded (BoundaryStats::codec_rel_l2_sum, ...). That instance
  // only decodes, so the codec that sends keeps its state (warm starts, error-feedback residuals) untouched.
  void measure_codec_error(bool on) { measure_codec_error_ = on; }
  void set_trace_origin(std::chrono::steady_clock::time_point t0) { origin_ = t0; }

 private:
  struct StepState;  // what one step keeps between instructions (executor.cpp)

  // The preamble every step shares (stream, data check, train/eval mode), then the program.
  StepResult run(StepState& st, const StageProgram& program);
  void execute(StepState& st, const Instruction& in);
  // One method per schedule instruction, for micro-batch m.
  void recv_act(StepState& st, int m);
  void forward(StepState& st, int m);
  void send_act(StepState& st, int m);
  void recv_grad(StepState& st, int m);
  void backward(StepState& st, int m);
  void send_grad(StepState& st, int m);
  void optimizer_step(StepState& st);
  // What the stages must agree on before any of them steps: whether every gradient is finite (a loss-scaled
  // step is skipped everywhere or nowhere) and the squared L2 norm of all gradients (for --clip).
  struct GradientVerdict {
    bool all_finite = true;
    double sum_sq = 0.0;
  };
  // ANDs the finite flags and sums the squared norms along the pipeline: the partial verdicts travel
  // downstream as control messages (each stage adds its own), and the last stage's total travels back
  // upstream. Neighbour links only, so every channel carries it.
  GradientVerdict agree_across_stages(StepState& st, GradientVerdict mine);

  // The blocks on micro-batch m and, on the last stage, its share of the loss: what backward differentiates.
  Tensor compute_output(StepState& st, int m, bool report);
  // The upstream bottleneck's decoder, the blocks, the downstream bottleneck's encoder.
  Tensor run_blocks(const Tensor& x, const layers::BlockContext& ctx);
  // The modules the stage runs: its blocks and its halves of the bottlenecks.
  std::vector<layers::ModulePtr> stage_modules() const;
  // Elements of the full boundary tensor when a tensor of n elements crosses the boundary on `side` (more
  // than n behind a learned bottleneck): what the traffic counts call raw.
  int64_t raw_elements(Side side, int64_t n) const;
  // The sample ids the codec of (side, dir) needs for micro-batch ctx (undefined when it needs none, or when
  // evaluating); throws when a training step lacks them.
  Tensor sample_ids(const StepState& st, Side side, Direction dir, const layers::BlockContext* ctx);
  // Where this step's traffic on (side, dir) is counted: the stage's statistics when training.
  BoundaryStats& booked(StepState& st, Side side, Direction dir);
  // Waits for micro-batch m's message from the neighbour on `side` and decodes it (and its side inputs into
  // ctx, when given).
  // The tensor is decoded into `dtype`, or into the sender's dtype when `dtype` is undefined (nullopt).
  Tensor receive(StepState& st, Side side, Direction dir, int m, layers::BlockContext* ctx,
                 std::optional<engine::DType> dtype = std::nullopt);
  // Encodes t (and the side inputs of ctx, when given) and sends it to the neighbour on `side`.
  void send(StepState& st, Side side, Direction dir, int m, const Tensor& t, const layers::BlockContext* ctx);
  // Encodes t (and the side inputs of ctx, when given) into a message: host bytes, plus the packet body as a
  // device tensor when the channel carries_device_bodies(). The caller fills in the address.
  // The packet is also left in `encoded`, when given.
  Message encode_message(StepState& st, Side side, Direction dir, const Tensor& t,
                         const layers::BlockContext* ctx, compress::Packet* encoded = nullptr);
  // Decodes p with the (side, dir) probe codec and adds its error against x to bs.
  void record_codec_error(Side side, Direction dir, const compress::Packet& p, const Tensor& x,
                          BoundaryStats& bs);
  // dtype: the dtype to decode into (the receiving stage's compute dtype), or the packet's own.
  Tensor decode_message(StepState& st, Side side, Direction dir, const Message& msg,
                        layers::BlockContext* ctx, std::optional<engine::DType> dtype);
  void event(const char* name, int mb, std::chrono::steady_clock::time_point t0);
  compress::Codec& codec(Side side, Direction dir) {
    return *codec_[static_cast<int>(side)][static_cast<int>(dir)];
  }
  int neighbour(Side side) const { return setup_.stage + (side == Side::upstream ? -1 : 1); }
  static MsgKind kind_of(Direction dir) {
    return dir == Direction::fwd ? MsgKind::activation : MsgKind::gradient;
  }
  bool is_first() const { return setup_.stage == 0; }
  bool is_last() const { return setup_.stage == setup_.num_stages - 1; }

  StageSetup setup_;
  std::shared_ptr<Channel> channel_;
  // CUDA stages run their kernels on a stream of their own, so stages sharing a GPU overlap instead of
  // serialising on one stream (unused on the CPU); events order it with the caller's stream at step entry and
  // exit (executor.cpp, StepStreamOrder).
  engine::cuda::Stream compute_stream_;
  StageProgram program_;          // this stage's instruction list for a training step
  StageProgram forward_program_;  // ... and for an evaluation step (forward instructions only)
  std::unique_ptr<compress::Codec> codec_[2][2];  // [Side][Direction]; none on a side without a neighbour
  std::unique_ptr<compress::Codec> probe_[2][2];  // decode-only twins of the sending codecs, made when needed
  bool measure_codec_error_ = false;
  BoundaryStats boundary_stats_[2][2];  // [Side][Direction]
  StageStats stats_;
  std::vector<TraceEvent> trace_;
  bool tracing_ = false;
  std::chrono::steady_clock::time_point origin_ = std::chrono::steady_clock::now();
};

// Writes a Chrome/Perfetto trace (JSON "traceEvents", one complete event per instruction, one thread per
// stage).
void write_chrome_trace(const std::string& path, const std::vector<TraceEvent>& events, int pid = 0);

// Splits a mini-batch into M micro-batches along dim 0 (torch.chunk sizes); labels and every side input of
// the context are split alike.
std::vector<MicroBatch> split_micro_batches(const MicroBatch& batch, int micro_batches);

}  // namespace dgpipe::pipeline
