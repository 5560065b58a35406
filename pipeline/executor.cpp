#include "pipeline/executor.h"

#include <cstring>
#include <fstream>
#include <map>

#include "engine/error.h"
#include "engine/ops.h"

namespace dgpipe::pipeline {

using engine::DType;
using engine::NoGradGuard;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---- side-input serialization, per tensor: present u8 | dtype u8 | ndim u8 | dims i64... | raw bytes ----
void put_tensor(std::vector<uint8_t>& out, const Tensor& t) {
  if (!t.defined()) {
    out.push_back(0);
    return;
  }
  Tensor c = t.to(engine::Device::cpu()).contiguous();
  out.push_back(1);
  out.push_back(static_cast<uint8_t>(c.dtype()));
  out.push_back(static_cast<uint8_t>(c.dim()));
  for (int64_t d : c.shape()) {
    uint8_t b[8];
    std::memcpy(b, &d, 8);
    out.insert(out.end(), b, b + 8);
  }
  const uint8_t* p = static_cast<const uint8_t*>(c.raw_data());
  out.insert(out.end(), p, p + c.nbytes());
}

Tensor get_tensor(const uint8_t*& p, const uint8_t* end, engine::Device device) {
  auto need = [&](size_t n) {
    DGP_CHECK(static_cast<size_t>(end - p) >= n, "pipeline message: truncated side inputs");
  };
  need(1);
  if (*p++ == 0) return Tensor();
  need(2);
  DType dtype = static_cast<DType>(*p++);
  DGP_CHECK(static_cast<int>(dtype) <= static_cast<int>(DType::boolean),
            "pipeline message: bad side-input dtype");
  int ndim = *p++;
  engine::Shape shape(ndim);
  need(8 * static_cast<size_t>(ndim));
  for (int i = 0; i < ndim; ++i) {
    std::memcpy(&shape[i], p, 8);
    p += 8;
    DGP_CHECK(shape[i] >= 0 && shape[i] < (int64_t(1) << 40), "pipeline message: bad side-input shape");
  }
  Tensor t = engine::empty(shape, engine::TensorOptions(dtype, engine::Device::cpu()));
  need(t.nbytes());
  std::memcpy(t.raw_data(), p, t.nbytes());
  p += t.nbytes();
  return t.to(device);
}

void address(Message& msg, int src, int dst, MsgKind kind, int micro_batch, int64_t step) {
  msg.src_stage = src;
  msg.dst_stage = dst;
  msg.kind = kind;
  msg.micro_batch = micro_batch;
  msg.step = step;
}

// Side inputs travel as one tensor record per field of BlockContext, in its field order.
void put_side_inputs(std::vector<uint8_t>& out, const layers::BlockContext& ctx) {
  ctx.for_each([&](const char*, const Tensor& t) { put_tensor(out, t); });
}

layers::BlockContext get_side_inputs(const uint8_t* p, const uint8_t* end, engine::Device device) {
  layers::BlockContext ctx;
  ctx.for_each([&](const char*, Tensor& t) { t = get_tensor(p, end, device); });
  DGP_CHECK(p == end, "pipeline message: " << end - p << " unexpected bytes after the side inputs");
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

}  // namespace

StageExecutor::StageExecutor(StageSetup setup, std::shared_ptr<Channel> channel)
    : setup_(std::move(setup)), channel_(std::move(channel)) {
  const int s = setup_.stage, S = setup_.num_stages;
  DGP_CHECK(S >= 1 && s >= 0 && s < S, "pipeline: stage " << s << " of " << S);
  DGP_CHECK(!setup_.blocks.empty(), "pipeline: stage " << s << " has no blocks");
  auto boundary = [](int a, int b, const char* dir) {
    return "stage" + std::to_string(a) + "->" + std::to_string(b) + " " + dir;
  };
  if (s > 0) {
    up_fwd_ = compress::make_codec(setup_.upstream_fwd, boundary(s - 1, s, "fwd"));
    up_bwd_ = compress::make_codec(setup_.upstream_bwd, boundary(s - 1, s, "bwd"));
  }
  if (s < S - 1) {
    down_fwd_ = compress::make_codec(setup_.downstream_fwd, boundary(s, s + 1, "fwd"));
    down_bwd_ = compress::make_codec(setup_.downstream_bwd, boundary(s, s + 1, "bwd"));
  }
  program_ = make_schedule(S, setup_.micro_batches, setup_.kind)[s];  // once: the same every step
#ifdef DGPIPE_WITH_CUDA
  if (setup_.device.is_cuda()) compute_stream_ = engine::cuda::Stream::create(setup_.device.index);
#endif
  if (setup_.recompute) {
    for (auto& b : setup_.blocks)
      DGP_CHECK(
          !has_type(*b, "BatchNorm2d") && !has_type(*b, "Dropout"),
          "pipeline: --recompute needs blocks without BatchNorm or Dropout (recomputing them would update "
          "running statistics twice or draw new masks); stage "
              << s << " has one");
  }
}

Tensor StageExecutor::run_blocks(const Tensor& x, const layers::BlockContext& ctx) {
  Tensor h = x;
  for (auto& b : setup_.blocks) h = b->forward(h, ctx);
  return h;
}

// Message layout (host bytes): packet length u64 | packet | side inputs (activations only). With a channel
// that carries device bodies, "packet" is only the packet header and the body travels as Message::body, so it
// never leaves the device on this side of the link.
Message StageExecutor::encode_message(compress::Codec& codec, const Tensor& t,
                                      const layers::BlockContext* ctx, BoundaryStats& st) {
  auto t0 = Clock::now();
  const bool device_bodies = channel_->carries_device_bodies();
  compress::Packet packet = codec.encode(t.detach());
  std::vector<uint8_t> bytes = device_bodies ? packet.serialize_header() : packet.serialize();
  st.encode_s += seconds_since(t0);
  st.raw_bytes += static_cast<uint64_t>(t.numel()) * 4;
  st.wire_bytes += packet.wire_bytes();
  st.messages++;
  Message msg;
  if (device_bodies && packet.body_bytes() > 0) msg.body = packet.body.contiguous().view({-1});
  std::vector<uint8_t>& out = msg.bytes;
  out.resize(8);
  uint64_t len64 = bytes.size();
  std::memcpy(out.data(), &len64, 8);
  out.insert(out.end(), bytes.begin(), bytes.end());
  if (ctx) {
    size_t before = out.size();
    put_side_inputs(out, *ctx);
    st.side_bytes += out.size() - before;
  }
  return msg;
}

Tensor StageExecutor::decode_message(compress::Codec& codec, const Message& msg, layers::BlockContext* ctx,
                                     BoundaryStats& st) {
  auto t0 = Clock::now();
  const std::vector<uint8_t>& bytes = msg.bytes;
  DGP_CHECK(bytes.size() >= 8, "pipeline message: truncated (" << bytes.size() << " bytes)");
  uint64_t len = 0;
  std::memcpy(&len, bytes.data(), 8);
  DGP_CHECK(len <= bytes.size() - 8, "pipeline message: packet length " << len << " exceeds message");
  compress::Packet p;
  if (channel_->carries_device_bodies()) {
    p = compress::Packet::deserialize_with_body(bytes.data() + 8, len, msg.body, codec.boundary());
    if (p.body.device() != setup_.device) p.body = p.body.to(setup_.device);
  } else {
    DGP_CHECK(!msg.body.defined(),
              "pipeline message: a device body arrived over a channel that carries host bytes");
    p = compress::Packet::deserialize(bytes.data() + 8, len, setup_.device, codec.boundary());
  }
  Tensor x = codec.decode(p);
  if (ctx) *ctx = get_side_inputs(bytes.data() + 8 + len, bytes.data() + bytes.size(), setup_.device);
  st.decode_s += seconds_since(t0);
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

StepResult StageExecutor::train_step(int64_t step, const std::vector<MicroBatch>& data) {
#ifdef DGPIPE_WITH_CUDA
  std::unique_ptr<engine::cuda::StreamGuard> on_stream;
  if (setup_.device.is_cuda()) on_stream = std::make_unique<engine::cuda::StreamGuard>(compute_stream_);
#endif
  const int s = setup_.stage, S = setup_.num_stages, M = setup_.micro_batches;
  const bool first = s == 0, last = s == S - 1;
  DGP_CHECK(!(first || last) || static_cast<int>(data.size()) == M,
            "pipeline: stage " << s << " needs " << M << " micro-batches of data, got " << data.size());
  for (auto& b : setup_.blocks) b->train(true);
  int64_t total = 0;
  if (last)
    for (auto& mb : data) total += mb.labels.numel();

  struct Saved {
    Tensor input;   // leaf on receiving stages (x̂), or the data input on stage 0
    Tensor output;  // block output (non-last) or the scaled loss (last)
    layers::BlockContext ctx;
  };
  std::vector<Saved> saved(M);
  std::vector<Tensor> grads_in(M);
  StepResult result;
  auto step_start = Clock::now();
  double busy = 0;
  const StageProgram& program = program_;
  LastStageMetrics metrics;

  // report: add the micro-batch to the step's loss and accuracy (not when --recompute runs it again in
  // backward)
  auto forward_mb = [&](int m, bool with_grad, bool report) {
    Saved& sv = saved[m];
    std::unique_ptr<NoGradGuard> ng;
    if (!with_grad) ng = std::make_unique<NoGradGuard>();
    Tensor out = run_blocks(sv.input, sv.ctx);
    if (last) {
      const Tensor labels = data[m].labels.to(setup_.device);
      Tensor ce = engine::cross_entropy(out, labels, setup_.label_smoothing);
      double weight =
          setup_.seed_compat ? 1.0 : static_cast<double>(labels.numel()) / static_cast<double>(total);
      Tensor loss = engine::mul(ce, weight);
      // reported: the mean over the mini-batch, whatever the gradient scaling (--seed-compat)
      if (report)
        metrics.add(out, labels, ce, static_cast<double>(labels.numel()) / static_cast<double>(total));
      sv.output = loss;
    } else {
      sv.output = out;
    }
  };

  for (const Instruction& in : program) {
    const int m = in.micro_batch;
    auto t0 = Clock::now();
    bool counts_busy = true;
    switch (in.op) {
      case Op::RecvAct: {
        Message msg = channel_->recv(s - 1, s, MsgKind::activation, m, step);
        up_stats_.wait_s += seconds_since(t0);
        counts_busy = false;
        auto td = Clock::now();
        Tensor x = decode_message(*up_fwd_, msg, &saved[m].ctx, up_stats_).detach();
        x.requires_grad_(true);
        saved[m].input = x;
        busy += seconds_since(td);
        break;
      }
      case Op::Forward: {
        if (first) {
          saved[m].input = data[m].input.to(setup_.device);
          saved[m].ctx = context_on(data[m].ctx, setup_.device);
        }
        forward_mb(m, !setup_.recompute, true);
        break;
      }
      case Op::SendAct: {
        Message msg = encode_message(*down_fwd_, saved[m].output, &saved[m].ctx, down_fwd_stats_);
        address(msg, s, s + 1, MsgKind::activation, m, step);
        channel_->send(std::move(msg));
        if (setup_.recompute) saved[m].output = Tensor();
        break;
      }
      case Op::RecvGrad: {
        Message msg = channel_->recv(s + 1, s, MsgKind::gradient, m, step);
        down_fwd_stats_.wait_s += seconds_since(t0);
        counts_busy = false;
        auto td = Clock::now();
        BoundaryStats dummy;
        grads_in[m] = decode_message(*down_bwd_, msg, nullptr, dummy);
        down_fwd_stats_.decode_s += dummy.decode_s;
        busy += seconds_since(td);
        break;
      }
      case Op::Backward: {
        if (setup_.recompute) forward_mb(m, true, false);
        Saved& sv = saved[m];
        if (last) {
          engine::backward({sv.output}, {engine::ones_like(sv.output)});
        } else {
          Tensor g = grads_in[m];
          if (g.dtype() != sv.output.dtype()) g = g.to(sv.output.dtype());
          if (sv.output.requires_grad()) engine::backward({sv.output}, {g});
          grads_in[m] = Tensor();
        }
        sv.output = Tensor();
        break;
      }
      case Op::SendGrad: {
        Tensor g = saved[m].input.grad();
        if (!g.defined()) g = engine::zeros_like(saved[m].input);
        Message msg = encode_message(*up_bwd_, g, nullptr, up_bwd_stats_);
        address(msg, s, s - 1, MsgKind::gradient, m, step);
        channel_->send(std::move(msg));
        saved[m] = Saved();
        break;
      }
      case Op::OptimizerStep: {
        if (setup_.optimizer_step) setup_.optimizer_step();
        break;
      }
    }
    if (counts_busy) busy += seconds_since(t0);
    event(op_name(in.op), m, t0);
  }
  stats_.busy_s += busy;
  stats_.wall_s += seconds_since(step_start);
  metrics.finish(result);
  return result;
}

StepResult StageExecutor::eval_step(int64_t step, const std::vector<MicroBatch>& data, bool keep_logits) {
#ifdef DGPIPE_WITH_CUDA
  std::unique_ptr<engine::cuda::StreamGuard> on_stream;
  if (setup_.device.is_cuda()) on_stream = std::make_unique<engine::cuda::StreamGuard>(compute_stream_);
#endif
  const int s = setup_.stage, S = setup_.num_stages, M = setup_.micro_batches;
  const bool first = s == 0, last = s == S - 1;
  DGP_CHECK(!(first || last) || static_cast<int>(data.size()) == M,
            "pipeline: stage " << s << " needs " << M << " micro-batches of data, got " << data.size());
  NoGradGuard ng;
  for (auto& b : setup_.blocks) b->train(false);
  StepResult result;
  LastStageMetrics metrics;
  int64_t total = 0;
  if (last)
    for (auto& mb : data) total += mb.labels.numel();
  for (int m = 0; m < M; ++m) {
    Tensor x;
    layers::BlockContext ctx;
    if (first) {
      x = data[m].input.to(setup_.device);
      ctx = context_on(data[m].ctx, setup_.device);
    } else {
      Message msg = channel_->recv(s - 1, s, MsgKind::activation, m, step);
      BoundaryStats ignore;
      x = decode_message(*up_fwd_, msg, &ctx, ignore);
    }
    Tensor out = run_blocks(x, ctx);
    if (last) {
      Tensor labels = data[m].labels.to(setup_.device);
      Tensor ce = engine::cross_entropy(out, labels);
      metrics.add(out, labels, ce, static_cast<double>(labels.numel()) / static_cast<double>(total));
      if (keep_logits) result.logits.push_back(out.to(engine::Device::cpu()));
    } else {
      BoundaryStats ignore;
      Message msg = encode_message(*down_fwd_, out, &ctx, ignore);
      address(msg, s, s + 1, MsgKind::activation, m, step);
      channel_->send(std::move(msg));
    }
  }
  metrics.finish(result);
  return result;
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
