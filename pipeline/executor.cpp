#include "pipeline/executor.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>

#include "engine/error.h"
#include "engine/ops.h"
#include "engine/optim/clip_grad.h"
#include "engine/optim/optimizer.h"

namespace dgpipe::pipeline {

using engine::DType;
using engine::NoGradGuard;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Side inputs travel as one tensor record per field of BlockContext, in its field order (as host bytes), or
// as one tensor per field (Message::side_inputs, with a channel that carries_side_tensors()).
void put_side_inputs(std::vector<uint8_t>& out, const layers::BlockContext& ctx) {
  ctx.for_each([&](const char*, const Tensor& t) { put_tensor_record(out, t); });
}

layers::BlockContext get_side_inputs(const uint8_t* p, const uint8_t* end, engine::Device device) {
  layers::BlockContext ctx;
  ctx.for_each([&](const char*, Tensor& t) { t = get_tensor_record(p, end, device); });
  DGP_CHECK(p == end, "pipeline message: " << end - p << " unexpected bytes after the side inputs");
  return ctx;
}

// t on `device`. The channel made this thread's current stream on t's device wait for t's writer and marked
// t's block as used there; a copy to another GPU runs on the destination's stream, so that stream's progress
// is handed back to t's device (an event): t's block is not reused before the copy has read it.
Tensor arrived_on(const Tensor& t, engine::Device device) {
  if (!t.defined() || t.device() == device) return t;
  Tensor moved = t.to(device);
  if (t.is_cuda() && device.is_cuda()) {
    engine::cuda::Event copied;
    copied.record(engine::cuda::current_stream(device.index));
    copied.wait(engine::cuda::current_stream(t.device().index));
  }
  return moved;
}

size_t side_input_bytes(const std::vector<Tensor>& side) {
  size_t bytes = 0;
  for (const Tensor& t : side) bytes += tensor_record_bytes(t);
  return bytes;
}

layers::BlockContext side_inputs_from(const std::vector<Tensor>& side, engine::Device device) {
  layers::BlockContext ctx;
  size_t n = 0;
  ctx.for_each([&](const char*, Tensor&) { ++n; });
  DGP_CHECK(side.size() == n, "pipeline message: " << side.size() << " side inputs, expected " << n);
  size_t field = 0;
  ctx.for_each([&](const char*, Tensor& t) { t = arrived_on(side[field++], device); });
  return ctx;
}

layers::BlockContext context_on(const layers::BlockContext& ctx, engine::Device device) {
  layers::BlockContext moved = ctx;
  moved.for_each([&](const char*, Tensor& t) {
    if (t.defined()) t = t.to(device);
  });
  return moved;
}

bool has_type(const layers::Module& m, const std::string& type) {
  for (auto& [name, mod] : m.named_modules())
    if (mod->type_name() == type) return true;
  return false;
}

// Loss and top-1 hits of the last stage, summed on the stage's device: reading them back per micro-batch
// would be a host-device sync per micro-batch on a GPU; finish() reads them once per step.
class LastStageMetrics {
 public:
  void add(const Tensor& logits, const Tensor& labels, const Tensor& ce, double weight) {
    NoGradGuard ng;
    Tensor weighted = engine::cast(engine::mul(ce.detach(), weight), DType::f64);
    Tensor hits =
        engine::sum(engine::cast(engine::eq(engine::argmax(logits.detach(), 1), labels), DType::f64));
    loss_ = loss_.defined() ? engine::add(loss_, weighted) : weighted;
    hits_ = hits_.defined() ? engine::add(hits_, hits) : hits;
    samples_ += labels.numel();
  }
  void finish(StepResult& r) const {
    if (!loss_.defined()) return;
    r.loss += loss_.item();
    r.correct += static_cast<int64_t>(hits_.item());
    r.samples += samples_;
  }

 private:
  Tensor loss_, hits_;
  int64_t samples_ = 0;
};

// A CUDA stage's step is one stream-ordered operation of the thread that runs it, like any op: the stage's
// compute stream (non-blocking, so never implicitly ordered with another stream) first waits for the work
// queued so far on that thread's current stream of the stage's device (which moved and initialised the
// parameters, wrote the inputs, loaded a checkpoint), and at the end that stream waits for everything the
// step queued, so what the caller does next (a checkpoint, an evaluation, item()) sees the updated
// parameters. The pipeline runs its stage workers with its caller's current streams.
class StepStreamOrder {
 public:
  explicit StepStreamOrder(const engine::cuda::Stream& compute)
      : caller_(engine::cuda::current_stream(compute.device())), compute_(compute) {
    engine::cuda::Event entered;
    entered.record(caller_);
    entered.wait(compute_);
    on_compute_.emplace(compute_);
  }
  // The caller's stream waits for the step.
  void finish() {
    on_compute_.reset();
    engine::cuda::Event done;
    done.record(compute_);
    done.wait(caller_);
    finished_ = true;
  }
  // A failed step: order what it queued all the same, but its own error is what the caller hears.
  ~StepStreamOrder() {
    if (finished_) return;
    try {
      finish();
    } catch (...) {
    }
  }
  StepStreamOrder(const StepStreamOrder&) = delete;
  StepStreamOrder& operator=(const StepStreamOrder&) = delete;

 private:
  engine::cuda::Stream caller_, compute_;
  std::optional<engine::cuda::StreamGuard> on_compute_;
  bool finished_ = false;
};

}  // namespace

StageExecutor::StageExecutor(StageSetup setup, std::shared_ptr<Channel> channel)
    : setup_(std::move(setup)), channel_(std::move(channel)) {
  const int s = setup_.stage, S = setup_.num_stages;
  DGP_CHECK(S >= 1 && s >= 0 && s < S, "pipeline: stage " << s << " of " << S);
  DGP_CHECK(!setup_.blocks.empty(), "pipeline: stage " << s << " has no blocks");
  const int up = static_cast<int>(Side::upstream), down = static_cast<int>(Side::downstream);
  const int fwd = static_cast<int>(Direction::fwd), bwd = static_cast<int>(Direction::bwd);
  auto boundary = [](int a, int b, const char* dir) {
    return "stage" + std::to_string(a) + "->" + std::to_string(b) + " " + dir;
  };
  if (s > 0) {
    codec_[up][fwd] = compress::make_codec(setup_.upstream_fwd, boundary(s - 1, s, "fwd"));
    codec_[up][bwd] = compress::make_codec(setup_.upstream_bwd, boundary(s - 1, s, "bwd"));
  }
  if (s < S - 1) {
    codec_[down][fwd] = compress::make_codec(setup_.downstream_fwd, boundary(s, s + 1, "fwd"));
    codec_[down][bwd] = compress::make_codec(setup_.downstream_bwd, boundary(s, s + 1, "bwd"));
  }
  program_ = make_schedule(S, setup_.micro_batches, setup_.kind)[s];  // once: the same every step
  forward_program_ = make_forward_schedule(S, setup_.micro_batches)[s];
  for (int side : {up, down})
    if (codec_[side][bwd] && codec_[side][bwd]->needs_sample_ids())
      DGP_FAIL("pipeline: " << codec_[side][bwd]->spec() << " at boundary '" << codec_[side][bwd]->boundary()
                            << "': delta is for activations; a gradient changes with every step, so there is "
                               "no last copy to take a difference from");
  if (setup_.device.is_cuda()) compute_stream_ = engine::cuda::Stream::create(setup_.device.index);
  if (setup_.recompute) {
    for (auto& b : setup_.blocks)
      DGP_CHECK(
          !has_type(*b, "BatchNorm2d") && !has_type(*b, "Dropout"),
          "pipeline: --recompute needs blocks without BatchNorm or Dropout (recomputing them would update "
          "running statistics twice or draw new masks); stage "
              << s << " has one");
  }
}

// What one step keeps between instructions.
struct StageExecutor::StepState {
  struct Slot {                // one micro-batch, from its forward to its backward
    Tensor input;              // leaf on receiving stages (x̂), or the data input on stage 0
    Tensor output;             // block output (non-last) or its share of the loss (last)
    Tensor grad;               // the gradient of output received from downstream (RecvGrad -> Backward)
    layers::BlockContext ctx;  // side inputs, on this stage's device
  };
  StepState(int64_t step, const std::vector<MicroBatch>& data, bool training, int micro_batches)
      : step(step), data(data), training(training), slots(micro_batches) {}

  const int64_t step;
  const std::vector<MicroBatch>& data;
  const bool training;       // false: forward only, eval mode, nothing booked in the statistics
  bool keep_logits = false;  // evaluation, last stage: return the logits
  int64_t samples = 0;       // last stage: labels in the mini-batch, which weight each micro-batch's loss
  std::vector<Slot> slots;
  LastStageMetrics metrics;
  std::vector<Tensor> logits;
  double wait_s = 0;        // blocked in recv (not busy)
  BoundaryStats unbooked;   // where evaluation traffic is counted: the statistics describe training
  bool overflowed = false;  // a non-finite tensor was to be sent under loss scaling (zeros went instead)
  bool skipped = false;     // OptimizerStep: the update was skipped (non-finite gradients somewhere)
  double loss_scale = 0;    // OptimizerStep: the scale after the step
};

StepResult StageExecutor::train_step(int64_t step, const std::vector<MicroBatch>& data) {
  StepState st(step, data, /*training=*/true, setup_.micro_batches);
  return run(st, program_);
}

StepResult StageExecutor::eval_step(int64_t step, const std::vector<MicroBatch>& data, bool keep_logits) {
  StepState st(step, data, /*training=*/false, setup_.micro_batches);
  st.keep_logits = keep_logits;
  return run(st, forward_program_);
}

StepResult StageExecutor::run(StepState& st, const StageProgram& program) {
  std::optional<StepStreamOrder> stream_order;
  if (setup_.device.is_cuda()) stream_order.emplace(compute_stream_);
  // This thread is the stage's worker: its autocast state is the stage's, whatever the other stages do.
  engine::amp::AutocastGuard autocast(setup_.precision);
  const int M = setup_.micro_batches;
  DGP_CHECK(!(is_first() || is_last()) || static_cast<int>(st.data.size()) == M,
            "pipeline: stage " << setup_.stage << " needs " << M << " micro-batches of data, got "
                               << st.data.size());
  std::optional<NoGradGuard> no_graph;
  if (!st.training) no_graph.emplace();
  for (auto& b : stage_modules()) b->train(st.training);
  if (is_last())
    for (auto& mb : st.data) st.samples += mb.labels.numel();

  const auto step_start = Clock::now();
  double instructions_s = 0;
  for (const Instruction& in : program) {
    const auto t0 = Clock::now();
    execute(st, in);
    instructions_s += seconds_since(t0);
    if (st.training) event(op_name(in.op), in.micro_batch, t0);
  }
  if (st.training) {
    stats_.busy_s += instructions_s - st.wait_s;
    stats_.wall_s += seconds_since(step_start);
  }
  StepResult result;
  st.metrics.finish(result);
  result.logits = std::move(st.logits);
  result.skipped = st.skipped;
  result.loss_scale = st.loss_scale;
  if (stream_order) stream_order->finish();
  return result;
}

void StageExecutor::execute(StepState& st, const Instruction& in) {
  const int m = in.micro_batch;
  switch (in.op) {
    case Op::RecvAct:
      return recv_act(st, m);
    case Op::Forward:
      return forward(st, m);
    case Op::SendAct:
      return send_act(st, m);
    case Op::RecvGrad:
      return recv_grad(st, m);
    case Op::Backward:
      return backward(st, m);
    case Op::SendGrad:
      return send_grad(st, m);
    case Op::OptimizerStep:
      return optimizer_step(st);
  }
}

void StageExecutor::recv_act(StepState& st, int m) {
  // A half-precision stage computes in its storage dtype; fp32 and mixed stages take what the sender made.
  std::optional<DType> dtype;
  if (engine::amp::uses_master_weights(setup_.precision))
    dtype = engine::amp::storage_dtype(setup_.precision);
  Tensor x = receive(st, Side::upstream, Direction::fwd, m, &st.slots[m].ctx, dtype).detach();
  if (st.training) x.requires_grad_(true);  // the gradient sent upstream is x̂'s
  st.slots[m].input = x;
}

void StageExecutor::forward(StepState& st, int m) {
  StepState::Slot& slot = st.slots[m];
  if (is_first()) {
    slot.input = st.data[m].input.to(setup_.device);
    slot.ctx = context_on(st.data[m].ctx, setup_.device);
  }
  std::optional<NoGradGuard> no_graph;  // --recompute: backward builds the graph again from the input
  if (st.training && setup_.recompute) no_graph.emplace();
  slot.output = compute_output(st, m, /*report=*/true);
  if (!st.training && is_last()) slot = StepState::Slot();  // evaluation keeps nothing it has used
}

void StageExecutor::send_act(StepState& st, int m) {
  StepState::Slot& slot = st.slots[m];
  send(st, Side::downstream, Direction::fwd, m, slot.output, &slot.ctx);
  if (!st.training)
    slot = StepState::Slot();
  else if (setup_.recompute)
    slot.output = Tensor();
}

void StageExecutor::recv_grad(StepState& st, int m) {
  // Into the dtype of the output it flows into (unknown yet under --recompute: the sender's, converted
  // later).
  const Tensor& out = st.slots[m].output;
  st.slots[m].grad = receive(st, Side::downstream, Direction::bwd, m, nullptr,
                             out.defined() ? std::optional<DType>(out.dtype()) : std::nullopt);
}

void StageExecutor::backward(StepState& st, int m) {
  StepState::Slot& slot = st.slots[m];
  if (setup_.recompute) slot.output = compute_output(st, m, /*report=*/false);
  if (is_last()) {
    engine::backward({slot.output}, {engine::ones_like(slot.output)});
  } else {
    Tensor g = slot.grad;
    if (g.dtype() != slot.output.dtype()) g = g.to(slot.output.dtype());
    if (slot.output.requires_grad()) engine::backward({slot.output}, {g});
    slot.grad = Tensor();
  }
  slot.output = Tensor();
}

void StageExecutor::send_grad(StepState& st, int m) {
  StepState::Slot& slot = st.slots[m];
  Tensor g = slot.input.grad();
  if (!g.defined()) g = engine::zeros_like(slot.input);
  send(st, Side::upstream, Direction::bwd, m, g, nullptr);
  slot = StepState::Slot();
}

void StageExecutor::optimizer_step(StepState& st) {
  engine::amp::PrecisionStep* ps = setup_.precision_step;
  if (!ps) {
    if (setup_.optimizer) {
      setup_.optimizer->step();
      setup_.optimizer->zero_grad();
    }
  } else {
    GradientVerdict verdict;
    verdict.all_finite = ps->unscale(setup_.optimizer) && !st.overflowed;
    const bool clipping = setup_.clip_norm > 0;
    if (clipping) {
      const double norm = engine::grad_norm(ps->optimizer_params());
      verdict.sum_sq = norm * norm;
    }
    if ((ps->scaler().enabled() || clipping) && setup_.num_stages > 1)
      verdict = agree_across_stages(st, verdict);
    // A skipped step needs no clipping; without loss scaling a non-finite norm scales by NaN, as in PyTorch.
    if (clipping && verdict.all_finite)
      engine::scale_grads_to_norm(ps->optimizer_params(), setup_.clip_norm, std::sqrt(verdict.sum_sq));
    st.skipped = !ps->step(setup_.optimizer, verdict.all_finite);
    st.loss_scale = ps->loss_scale();
  }
  if (setup_.after_step) setup_.after_step();
}

StageExecutor::GradientVerdict StageExecutor::agree_across_stages(StepState& st, GradientVerdict mine) {
  constexpr size_t kBytes = 1 + sizeof(double);
  auto pass_on = [&](Side side, const GradientVerdict& v) {
    Message msg;
    msg.bytes.resize(kBytes);
    msg.bytes[0] = v.all_finite ? 1 : 0;
    std::memcpy(msg.bytes.data() + 1, &v.sum_sq, sizeof(double));
    msg.src_stage = setup_.stage;
    msg.dst_stage = neighbour(side);
    msg.kind = MsgKind::control;
    msg.micro_batch = 0;
    msg.step = st.step;
    channel_->send(std::move(msg));
  };
  auto take = [&](Side side) {
    const auto t0 = Clock::now();
    Message msg = channel_->recv(neighbour(side), setup_.stage, MsgKind::control, 0, st.step);
    st.wait_s += seconds_since(t0);
    DGP_CHECK(msg.bytes.size() == kBytes && msg.bytes[0] <= 1,
              "pipeline: stage " << setup_.stage << " received a malformed gradient verdict ("
                                 << msg.bytes.size() << " bytes)");
    GradientVerdict v;
    v.all_finite = msg.bytes[0] == 1;
    std::memcpy(&v.sum_sq, msg.bytes.data() + 1, sizeof(double));
    return v;
  };
  GradientVerdict all = mine;
  if (!is_first()) {  // the verdict of every stage above, then ours added
    GradientVerdict above = take(Side::upstream);
    all.all_finite = above.all_finite && all.all_finite;
    all.sum_sq = above.sum_sq + all.sum_sq;
  }
  if (!is_last()) {
    pass_on(Side::downstream, all);
    all = take(Side::downstream);  // the verdict of the whole pipeline
  }
  if (!is_first()) pass_on(Side::upstream, all);
  return all;
}

// report: add the micro-batch to the step's loss and accuracy (not when --recompute runs it again in
// backward).
Tensor StageExecutor::compute_output(StepState& st, int m, bool report) {
  StepState::Slot& slot = st.slots[m];
  Tensor out = run_blocks(slot.input, slot.ctx);
  if (!is_last()) return out;
  const Tensor labels = st.data[m].labels.to(setup_.device);
  const double share = static_cast<double>(labels.numel()) / static_cast<double>(st.samples);
  // The loss in fp32 in every precision: a half loss would lose digits, and overflow once scaled.
  const Tensor logits = engine::is_half(out.dtype()) ? engine::cast(out, DType::f32) : out;
  Tensor ce = engine::cross_entropy(logits, labels, st.training ? setup_.label_smoothing : 0.0);
  if (report) {
    // reported: the mean over the mini-batch, whatever the gradient scaling (--seed-compat)
    st.metrics.add(out, labels, ce, share);
    if (st.keep_logits) st.logits.push_back(out.to(engine::Device::cpu()));
  }
  if (!st.training) return ce;
  Tensor loss = engine::mul(ce, setup_.seed_compat ? 1.0 : share);
  return setup_.precision_step ? setup_.precision_step->scale_loss(loss) : loss;
}

Tensor StageExecutor::run_blocks(const Tensor& x, const layers::BlockContext& ctx) {
  Tensor h = x;
  if (setup_.upstream_bottleneck) h = setup_.upstream_bottleneck->decoder->forward(h, ctx);
  for (auto& b : setup_.blocks) h = b->forward(h, ctx);
  if (setup_.downstream_bottleneck && !is_last()) h = setup_.downstream_bottleneck->encoder->forward(h, ctx);
  return h;
}

std::vector<layers::ModulePtr> StageExecutor::stage_modules() const {
  std::vector<layers::ModulePtr> all = setup_.blocks;
  if (setup_.upstream_bottleneck) all.push_back(setup_.upstream_bottleneck->decoder);
  if (setup_.downstream_bottleneck) all.push_back(setup_.downstream_bottleneck->encoder);
  return all;
}

int64_t StageExecutor::raw_elements(Side side, int64_t n) const {
  const auto& bottleneck = side == Side::upstream ? setup_.upstream_bottleneck : setup_.downstream_bottleneck;
  return bottleneck ? bottleneck->wide_numel(n) : n;
}

Tensor StageExecutor::sample_ids(const StepState& st, Side side, Direction dir,
                                 const layers::BlockContext* ctx) {
  compress::Codec& c = codec(side, dir);
  if (!c.needs_sample_ids() || !st.training) return Tensor();
  DGP_CHECK(ctx && ctx->sample_ids.defined(),
            "pipeline: " << c.spec() << " at boundary '" << c.boundary()
                         << "' remembers every training sample and needs the sample ids of each micro-batch "
                            "(BlockContext::sample_ids), which the data owner did not set");
  return ctx->sample_ids;
}

BoundaryStats& StageExecutor::booked(StepState& st, Side side, Direction dir) {
  return st.training ? boundary_stats(side, dir) : st.unbooked;
}

// Activations travel downstream, gradients upstream: a (side, direction) names the neighbour, the kind of
// message, the codec and the statistics of one end of a link.
Tensor StageExecutor::receive(StepState& st, Side side, Direction dir, int m, layers::BlockContext* ctx,
                              std::optional<DType> dtype) {
  BoundaryStats& bs = booked(st, side, dir);
  const auto t0 = Clock::now();
  Message msg = channel_->recv(neighbour(side), setup_.stage, kind_of(dir), m, st.step);
  const double waited = seconds_since(t0);
  bs.wait_s += waited;
  st.wait_s += waited;
  return decode_message(st, side, dir, msg, ctx, dtype);
}

void StageExecutor::send(StepState& st, Side side, Direction dir, int m, const Tensor& t,
                         const layers::BlockContext* ctx) {
  // A delta codec's packets decode only against its references, which a decode-only probe does not hold.
  const bool measure = st.training && measure_codec_error_ && !codec(side, dir).needs_sample_ids();
  Tensor payload = t;
  // Under loss scaling an overflow is expected now and then and must end in a skipped step, not in an error:
  // this stage votes "not finite" at OptimizerStep and zeros cross instead (no quantizer can encode an inf).
  engine::amp::PrecisionStep* ps = setup_.precision_step;
  if (st.training && ps && ps->scaler().enabled() && !engine::isfinite_all(t)) {
    st.overflowed = true;
    payload = engine::zeros_like(t);
  }
  compress::Packet packet;
  Message msg = encode_message(st, side, dir, payload, ctx, measure ? &packet : nullptr);
  if (measure) record_codec_error(side, dir, packet, payload, booked(st, side, dir));
  msg.src_stage = setup_.stage;
  msg.dst_stage = neighbour(side);
  msg.kind = kind_of(dir);
  msg.micro_batch = m;
  msg.step = st.step;
  channel_->send(std::move(msg));
}

// Message layout (host bytes): packet length u64 | packet | side inputs (activations only). With a channel
// that carries device bodies, "packet" is only the packet header and the body travels as Message::body, so it
// never leaves the device on this side of the link; with one that carries side tensors (the local channel),
// the side inputs travel as Message::side_inputs too and the host bytes end with the header.
Message StageExecutor::encode_message(StepState& st, Side side, Direction dir, const Tensor& t,
                                      const layers::BlockContext* ctx, compress::Packet* encoded) {
  BoundaryStats& bs = booked(st, side, dir);
  auto t0 = Clock::now();
  const bool device_bodies = channel_->carries_device_bodies();
  compress::Packet packet = codec(side, dir).encode_samples(t.detach(), sample_ids(st, side, dir, ctx));
  std::vector<uint8_t> bytes = device_bodies ? packet.serialize_header() : packet.serialize();
  bs.encode_s += seconds_since(t0);
  bs.raw_bytes += static_cast<uint64_t>(raw_elements(side, t.numel())) * 4;
  bs.wire_bytes += packet.wire_bytes();
  bs.messages++;
  Message msg;
  if (device_bodies && packet.body_bytes() > 0) msg.body = packet.body.contiguous().view({-1});
  std::vector<uint8_t>& out = msg.bytes;
  out.resize(8);
  uint64_t len64 = bytes.size();
  std::memcpy(out.data(), &len64, 8);
  out.insert(out.end(), bytes.begin(), bytes.end());
  if (ctx && channel_->carries_side_tensors()) {
    ctx->for_each([&](const char*, const Tensor& side) { msg.side_inputs.push_back(side); });
    bs.side_bytes += side_input_bytes(msg.side_inputs);
  } else if (ctx) {
    size_t before = out.size();
    put_side_inputs(out, *ctx);
    bs.side_bytes += out.size() - before;
  }
  if (encoded) *encoded = std::move(packet);
  return msg;
}

void StageExecutor::record_codec_error(Side side, Direction dir, const compress::Packet& p, const Tensor& x,
                                       BoundaryStats& bs) {
  NoGradGuard ng;
  auto& probe = probe_[static_cast<int>(side)][static_cast<int>(dir)];
  if (!probe) probe = compress::make_codec(codec(side, dir).spec(), codec(side, dir).boundary() + " (probe)");
  const Tensor exact = engine::cast(x.detach(), DType::f64);
  const Tensor got = engine::cast(probe->decode(p), DType::f64);
  const double xx = engine::sum(engine::mul(exact, exact)).item();
  const double gg = engine::sum(engine::mul(got, got)).item();
  const double xg = engine::sum(engine::mul(exact, got)).item();
  const double err2 = std::max(xx + gg - 2 * xg, 0.0);
  // An all-zero tensor sent exactly has no error and, by convention, cosine 1.
  bs.codec_rel_l2_sum += xx > 0 ? std::sqrt(err2 / xx) : (gg > 0 ? 1.0 : 0.0);
  bs.codec_cosine_sum += xx > 0 && gg > 0 ? xg / std::sqrt(xx * gg) : (xx == gg ? 1.0 : 0.0);
  bs.codec_measured++;
}

// The side inputs are read before the packet is decoded: a delta codec needs their sample ids. dtype: what to
// decode into (the receiving stage's compute dtype), or the packet's own.
Tensor StageExecutor::decode_message(StepState& st, Side side, Direction dir, const Message& msg,
                                     layers::BlockContext* ctx, std::optional<DType> dtype) {
  BoundaryStats& bs = booked(st, side, dir);
  compress::Codec& c = codec(side, dir);
  auto t0 = Clock::now();
  const std::vector<uint8_t>& bytes = msg.bytes;
  DGP_CHECK(bytes.size() >= 8, "pipeline message: truncated (" << bytes.size() << " bytes)");
  uint64_t len = 0;
  std::memcpy(&len, bytes.data(), 8);
  DGP_CHECK(len <= bytes.size() - 8, "pipeline message: packet length " << len << " exceeds message");
  compress::Packet p;
  if (channel_->carries_device_bodies()) {
    p = compress::Packet::deserialize_with_body(bytes.data() + 8, len, msg.body, c.boundary());
    p.body = arrived_on(p.body, setup_.device);
  } else {
    DGP_CHECK(!msg.body.defined(),
              "pipeline message: a device body arrived over a channel that carries host bytes");
    p = compress::Packet::deserialize(bytes.data() + 8, len, setup_.device, c.boundary());
  }
  size_t side_bytes = 0;
  if (channel_->carries_side_tensors()) {
    DGP_CHECK(len == bytes.size() - 8, "pipeline message: " << bytes.size() - 8 - len
                                                            << " host bytes after the packet header, where "
                                                            << "side inputs travel as tensors");
    DGP_CHECK(ctx || msg.side_inputs.empty(), "pipeline message: side inputs arrived with a gradient");
    if (ctx) *ctx = side_inputs_from(msg.side_inputs, setup_.device);
    side_bytes = side_input_bytes(msg.side_inputs);
  } else {
    DGP_CHECK(msg.side_inputs.empty(),
              "pipeline message: side-input tensors arrived over a channel that carries them as host bytes");
    if (ctx) *ctx = get_side_inputs(bytes.data() + 8 + len, bytes.data() + bytes.size(), setup_.device);
    side_bytes = ctx ? bytes.size() - 8 - len : 0;
  }
  Tensor x = c.decode_samples_as(p, sample_ids(st, side, dir, ctx), dtype.value_or(p.header.dtype));
  bs.decode_s += seconds_since(t0);
  bs.raw_bytes += static_cast<uint64_t>(raw_elements(side, x.numel())) * 4;
  bs.wire_bytes += p.wire_bytes();
  bs.side_bytes += side_bytes;
  bs.messages++;
  return x;
}

void StageExecutor::event(const char* name, int mb, Clock::time_point t0) {
  if (!tracing_) return;
  auto now = Clock::now();
  TraceEvent e;
  e.stage = setup_.stage;
  e.name = mb >= 0 ? std::string(name) + " " + std::to_string(mb) : std::string(name);
  e.start_us = std::chrono::duration<double, std::micro>(t0 - origin_).count();
  e.dur_us = std::chrono::duration<double, std::micro>(now - t0).count();
  trace_.push_back(std::move(e));
}

void write_chrome_trace(const std::string& path, const std::vector<TraceEvent>& events, int pid) {
  std::ofstream f(path);
  DGP_CHECK(f.good(), "trace: cannot write '" << path << "'");
  f << "{\"traceEvents\":[\n";
  for (size_t i = 0; i < events.size(); ++i) {
    const TraceEvent& e = events[i];
    f << "{\"name\":\"" << e.name << "\",\"ph\":\"X\",\"ts\":" << e.start_us << ",\"dur\":" << e.dur_us
      << ",\"pid\":" << pid << ",\"tid\":" << e.stage << "}" << (i + 1 < events.size() ? ",\n" : "\n");
  }
  f << "],\"displayTimeUnit\":\"ms\"}\n";
  DGP_CHECK(f.good(), "trace: error writing '" << path << "'");
}

std::vector<MicroBatch> split_micro_batches(const MicroBatch& batch, int M) {
  DGP_CHECK(M >= 1, "pipeline: micro-batches must be >= 1, got " << M);
  int64_t n = batch.input.size(0);
  DGP_CHECK(n >= M,
            "pipeline: a batch of " << n << " samples cannot be split into " << M << " micro-batches");
  auto inputs = engine::chunk(batch.input, M, 0);
  DGP_CHECK(
      static_cast<int>(inputs.size()) == M,
      "pipeline: a batch of " << n << " samples splits into " << inputs.size() << " chunks, not " << M
                              << " (torch.chunk sizes); choose a batch divisible by the micro-batch count");
  auto split_opt = [&](const Tensor& t) {
    std::vector<Tensor> parts(M);
    if (t.defined()) parts = engine::chunk(t, M, 0);
    return parts;
  };
  std::vector<std::vector<Tensor>> side;  // [field][micro-batch]
  batch.ctx.for_each([&](const char* name, const Tensor& t) {
    DGP_CHECK(!t.defined() || (t.dim() >= 1 && t.size(0) == n),
              "pipeline: side input " << name << " " << engine::shape_str(t.shape()) << " does not have the "
                                      << n << " rows of the batch");
    side.push_back(split_opt(t));
  });
  auto labels = split_opt(batch.labels);
  std::vector<MicroBatch> out(M);
  for (int m = 0; m < M; ++m) {
    out[m].input = inputs[m];
    out[m].labels = labels[m];
    size_t field = 0;
    out[m].ctx.for_each([&](const char*, Tensor& t) { t = side[field++][m]; });
  }
  return out;
}

}  // namespace dgpipe::pipeline
