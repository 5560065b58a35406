// The executor's three ways of handing a message to a channel: host bytes (MPI), the packet body as a tensor
// next to the header bytes (NCCL; exercised on the CPU with a channel that claims to carry device bodies but
// keeps everything in this process), and body and side inputs as tensors (the local channel). Each must give
// exactly the same training and count (and charge to the link) exactly the same bytes as the host-bytes path,
// and the split must really happen. On a GPU the local channel's tensors stay on the device.
#include "pipeline/executor.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "compress/codec.h"
#include "engine/optim/sgd.h"
#include "pipeline/pipeline.h"
#include "pipeline_test_models.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe;
using namespace dgpipe::pipeline;
using engine::Tensor;

namespace {

const pipeline::OptimizerFactory make_sgd = testmodels::sgd_factory();

std::shared_ptr<LocalChannel> host_bytes_channel() {
  return std::make_shared<LocalChannel>(LinkModel{}, LocalChannel::Payload::host_bytes);
}

// A local channel of either payload that records, per message, the bytes it charges to the link
// (message_bytes, what the throttle of --link-bandwidth is given), and what travels as host bytes and as
// tensors.
class RecordingLocalChannel : public Channel {
 public:
  explicit RecordingLocalChannel(LocalChannel::Payload payload = LocalChannel::Payload::tensors)
      : inner_(LinkModel{}, payload) {}
  void send(Message msg) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      charged_[{msg.src_stage, msg.dst_stage, static_cast<int>(msg.kind), msg.step, msg.micro_batch}] =
          message_bytes(msg);
      messages_++;
      host_bytes_ += msg.bytes.size();
      if (msg.body.defined()) {
        bodies_++;
        body_bytes_ += msg.body.nbytes();
        cuda_tensors_ += msg.body.is_cuda();
      }
      for (const Tensor& t : msg.side_inputs) {
        side_tensors_++;
        cuda_tensors_ += t.defined() && t.is_cuda();
      }
    }
    inner_.send(in_transit(std::move(msg)));
  }
  Message recv(int src, int dst, MsgKind kind, int micro_batch, int64_t step) override {
    return inner_.recv(src, dst, kind, micro_batch, step);
  }
  void abort(const std::string& reason) override { inner_.abort(reason); }
  bool carries_device_bodies() const override { return inner_.carries_device_bodies(); }
  bool carries_side_tensors() const override { return inner_.carries_side_tensors(); }

  using Address = std::tuple<int, int, int, int64_t, int>;  // src, dst, kind, step, micro-batch
  std::map<Address, size_t> charged() const { return charged_; }
  uint64_t messages() const { return messages_; }
  uint64_t host_bytes() const { return host_bytes_; }
  uint64_t bodies() const { return bodies_; }
  uint64_t body_bytes() const { return body_bytes_; }
  uint64_t side_tensors() const { return side_tensors_; }
  uint64_t cuda_tensors() const { return cuda_tensors_; }

 protected:
  // What the transport hands on (recorded before).
  virtual Message in_transit(Message msg) { return msg; }

 private:
  LocalChannel inner_;
  std::mutex mu_;
  std::map<Address, size_t> charged_;
  uint64_t messages_ = 0, host_bytes_ = 0, bodies_ = 0, body_bytes_ = 0, side_tensors_ = 0, cuda_tensors_ = 0;
};

// Reports carries_device_bodies() (side inputs as host bytes, as the NCCL channel) and moves bodies as
// tensors next to the host bytes, copying them as a real transport would (the receiver never aliases the
// sender's memory).
class DeviceBodyChannel : public RecordingLocalChannel {
 public:
  bool carries_device_bodies() const override { return true; }
  bool carries_side_tensors() const override { return false; }
  void drop_bodies() { drop_bodies_ = true; }

 protected:
  Message in_transit(Message msg) override {
    if (msg.body.defined()) {
      EXPECT_EQ(msg.body.dtype(), engine::DType::u8);
      EXPECT_EQ(msg.body.dim(), 1);
      msg.body = drop_bodies_ ? Tensor() : msg.body.clone();
    }
    return msg;
  }

 private:
  bool drop_bodies_ = false;
};

std::vector<double> flat_params(const std::vector<layers::ModulePtr>& blocks) {
  std::vector<double> all;
  for (auto& b : blocks)
    for (auto& [name, t] : b->state_dict()) {
      auto v = t.to_vector();
      all.insert(all.end(), v.begin(), v.end());
    }
  return all;
}

struct RunResult {
  std::vector<double> params;
  std::vector<double> losses;
  uint64_t wire_bytes = 0;
  uint64_t side_bytes = 0;
};

// Three steps of a pipeline over `channel` (nullptr: the ordinary local channel), its stages on `device`.
RunResult run(const std::string& model, int S, int M, const std::string& codec, ScheduleKind kind,
              std::shared_ptr<Channel> channel, engine::Device device = engine::Device::cpu()) {
  auto blocks = testmodels::make_blocks(model);
  PipelineOptions opts;
  opts.devices = {device};
  opts.balance = balance_by_cost(std::vector<double>(blocks.size(), 1.0), S);
  opts.micro_batches = M;
  opts.kind = kind;
  opts.codecs = {compress::parse_direction_pair(codec)};
  std::unique_ptr<Pipeline> pipe = channel ? std::make_unique<Pipeline>(blocks, opts, make_sgd, channel)
                                           : std::make_unique<Pipeline>(blocks, opts, make_sgd);
  RunResult r;
  for (int step = 0; step < 3; ++step)
    r.losses.push_back(pipe->train_step(testmodels::make_batch(model, 8, 40 + step)).loss);
  for (auto& st : pipe->local_stages()) {
    r.wire_bytes += st->boundary_stats(Side::downstream, Direction::fwd).wire_bytes +
                    st->boundary_stats(Side::upstream, Direction::bwd).wire_bytes;
    r.side_bytes += st->boundary_stats(Side::downstream, Direction::fwd).side_bytes;
  }
  r.params = flat_params(blocks);
  return r;
}

// Same packets decoded the same way: bit-identical training, not merely close, and the same traffic.
void expect_bit_identical(const RunResult& host, const RunResult& other) {
  ASSERT_EQ(host.params.size(), other.params.size());
  size_t differing = 0;
  for (size_t i = 0; i < host.params.size(); ++i) differing += host.params[i] != other.params[i];
  EXPECT_EQ(differing, 0u) << "of " << host.params.size() << " parameters";
  EXPECT_EQ(host.losses, other.losses);
  EXPECT_EQ(host.wire_bytes, other.wire_bytes);
  EXPECT_EQ(host.side_bytes, other.side_bytes);
}

void expect_same_training(const std::string& model, int S, int M, const std::string& codec,
                          ScheduleKind kind) {
  SCOPED_TRACE(model + " S=" + std::to_string(S) + " M=" + std::to_string(M) + " codec " + codec);
  auto channel = std::make_shared<DeviceBodyChannel>();
  RunResult host = run(model, S, M, codec, kind, host_bytes_channel());
  RunResult device = run(model, S, M, codec, kind, channel);
  expect_bit_identical(host, device);
  // Every message carried its body apart from the bytes: S-1 boundaries, M micro-batches, two directions, 3
  // steps.
  const uint64_t expected_messages = static_cast<uint64_t>(S - 1) * M * 2 * 3;
  EXPECT_EQ(channel->messages(), expected_messages);
  EXPECT_EQ(channel->bodies(), expected_messages);
  // Host bytes are exactly length prefixes + packet headers + side inputs: the bodies are not in them too.
  EXPECT_GT(channel->body_bytes(), 0u);
  EXPECT_EQ(channel->host_bytes(),
            expected_messages * 8 + (device.wire_bytes - channel->body_bytes()) + device.side_bytes);
}

}  // namespace

TEST(Executor, DeviceBodyPathTrainsExactlyLikeHostBytes) {
  expect_same_training("mlp", 3, 2, "none", ScheduleKind::gpipe);
  expect_same_training("mlp", 4, 4, "fwd=sortquant:6+2,bwd=uniform:8", ScheduleKind::one_f_one_b);
  expect_same_training("mlp", 2, 1, "topk:0.25", ScheduleKind::gpipe);
}

TEST(Executor, DeviceBodyPathCarriesSideInputs) {
  // RoBERTa stages receive the attention mask with every activation: it stays in the host bytes.
  expect_same_training("roberta", 3, 2, "uniform:8", ScheduleKind::gpipe);
}

namespace {

size_t block_context_fields() {
  size_t n = 0;
  layers::BlockContext().for_each([&](const char*, const Tensor&) { ++n; });
  return n;
}

void expect_local_tensors_like_host_bytes(const std::string& model, int S, int M, const std::string& codec,
                                          ScheduleKind kind) {
  SCOPED_TRACE(model + " S=" + std::to_string(S) + " M=" + std::to_string(M) + " codec " + codec);
  auto host_channel = std::make_shared<RecordingLocalChannel>(LocalChannel::Payload::host_bytes);
  auto tensor_channel = std::make_shared<RecordingLocalChannel>(LocalChannel::Payload::tensors);
  RunResult host = run(model, S, M, codec, kind, host_channel);
  RunResult tensors = run(model, S, M, codec, kind, tensor_channel);
  expect_bit_identical(host, tensors);
  // Every message costs the link the same bytes either way (the throttle is charged message_bytes).
  EXPECT_EQ(host_channel->charged(), tensor_channel->charged());
  // The serializing channel carried no tensors; the other one no host bytes but length prefixes and packet
  // headers.
  const uint64_t messages = static_cast<uint64_t>(S - 1) * M * 2 * 3, activations = messages / 2;
  EXPECT_EQ(host_channel->bodies() + host_channel->side_tensors(), 0u);
  EXPECT_EQ(tensor_channel->bodies(), messages);
  EXPECT_EQ(tensor_channel->side_tensors(), activations * block_context_fields());
  EXPECT_EQ(tensor_channel->host_bytes(), messages * 8 + (tensors.wire_bytes - tensor_channel->body_bytes()));
}

}  // namespace

TEST(Executor, LocalTensorPathTrainsAndChargesExactlyLikeHostBytes) {
  expect_local_tensors_like_host_bytes("mlp", 3, 2, "none", ScheduleKind::gpipe);
  expect_local_tensors_like_host_bytes("mlp", 4, 4, "fwd=sortquant:6+2,bwd=uniform:8",
                                       ScheduleKind::one_f_one_b);
  expect_local_tensors_like_host_bytes("roberta", 3, 2, "uniform:8", ScheduleKind::gpipe);  // side inputs
}

TEST(Executor, LocalChannelIsTheTensorPathByDefault) {
  LocalChannel local;
  EXPECT_TRUE(local.carries_device_bodies());
  EXPECT_TRUE(local.carries_side_tensors());
  LocalChannel serializing(LinkModel{}, LocalChannel::Payload::host_bytes);
  EXPECT_FALSE(serializing.carries_device_bodies());
  EXPECT_FALSE(serializing.carries_side_tensors());
}

// On a GPU: stages on cuda:0 hand each other device tensors only (no body or side input goes through the
// host), and train like the CPU; stages on the CPU and the GPU in turn move what arrives to their device.
TEST(Executor, LocalTensorsStayOnTheDeviceAndMoveBetweenDevices) {
  DGP_SKIP_WITHOUT_CUDA();
  const engine::Device gpu = engine::Device::cuda(0);
  for (const std::string codec : {"none", "fwd=sortquant:6+2,bwd=uniform:8"}) {
    SCOPED_TRACE(codec);
    RunResult cpu = run("roberta", 3, 2, codec, ScheduleKind::gpipe, host_bytes_channel());
    auto channel = std::make_shared<RecordingLocalChannel>(LocalChannel::Payload::tensors);
    RunResult on_gpu = run("roberta", 3, 2, codec, ScheduleKind::gpipe, channel, gpu);
    const uint64_t messages = 2 * 2 * 2 * 3;        // boundaries, micro-batches, directions, steps
    const uint64_t defined_side = 3 * (2 * 2 * 3);  // mask, additive mask, positions per activation
    EXPECT_EQ(channel->cuda_tensors(), messages + defined_side);
    EXPECT_EQ(cpu.wire_bytes, on_gpu.wire_bytes);
    EXPECT_EQ(cpu.side_bytes, on_gpu.side_bytes);
    ASSERT_EQ(cpu.params.size(), on_gpu.params.size());
    if (codec != "none") continue;  // a quantizer may round a value to another level on the GPU
    for (size_t i = 0; i < cpu.losses.size(); ++i) EXPECT_NEAR(cpu.losses[i], on_gpu.losses[i], 1e-4);
    double worst = 0;
    for (size_t i = 0; i < cpu.params.size(); ++i)
      worst = std::max(worst,
                       std::abs(cpu.params[i] - on_gpu.params[i]) / std::max(1.0, std::abs(cpu.params[i])));
    EXPECT_LT(worst, 1e-4);
  }
  // cpu -> cuda:0 -> cpu: bodies and side inputs arrive on another device than they were made on.
  auto blocks = testmodels::make_blocks("roberta"), reference = testmodels::make_blocks("roberta");
  PipelineOptions opts =
      testmodels::pipeline_options(balance_by_cost(std::vector<double>(blocks.size(), 1.0), 3), 2);
  opts.devices = {engine::Device::cpu(), gpu, engine::Device::cpu()};
  Pipeline mixed(blocks, opts, make_sgd);
  opts.devices = {engine::Device::cpu()};
  Pipeline all_cpu(reference, opts, make_sgd, host_bytes_channel());
  for (int step = 0; step < 3; ++step) {
    pipeline::MicroBatch batch = testmodels::make_batch("roberta", 8, 40 + step);
    EXPECT_NEAR(mixed.train_step(batch).loss, all_cpu.train_step(batch).loss, 1e-4);
  }
  std::vector<size_t> all(blocks.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  EXPECT_LT(testmodels::max_state_difference(blocks, reference, all), 1e-4);
}

TEST(Executor, MissingDeviceBodyNamesTheBoundary) {
  auto channel = std::make_shared<DeviceBodyChannel>();
  channel->drop_bodies();
  auto blocks = testmodels::make_blocks("mlp");
  PipelineOptions opts = testmodels::pipeline_options({2, 3}, 2, "uniform:8");
  opts.timeout = std::chrono::seconds(30);
  Pipeline pipe(blocks, opts, make_sgd, channel);
  try {
    pipe.train_step(testmodels::make_batch("mlp", 4, 1));
    FAIL() << "expected an error";
  } catch (const engine::Error& e) {
    std::string w = e.what();
    EXPECT_NE(w.find("stage0->1 fwd"), std::string::npos) << w;
    EXPECT_NE(w.find("no body arrived"), std::string::npos) << w;
  }
}

namespace {

// A message from stage 0 to stage 1 made by hand: length prefix, the packet of a [2,8] tensor of ones, then
// `side` as the side-input bytes.
Message hand_made_message(bool header_only, const std::vector<uint8_t>& side) {
  auto codec = compress::make_codec("none");
  compress::Packet p = codec->encode(engine::ones({2, 8}));
  Message msg;
  msg.src_stage = 0;
  msg.dst_stage = 1;
  std::vector<uint8_t> packet = header_only ? p.serialize_header() : p.serialize();
  msg.bytes.resize(8);
  uint64_t len = packet.size();
  std::memcpy(msg.bytes.data(), &len, 8);
  msg.bytes.insert(msg.bytes.end(), packet.begin(), packet.end());
  msg.bytes.insert(msg.bytes.end(), side.begin(), side.end());
  if (header_only) msg.body = p.body;
  return msg;
}

// One "absent" record per side input.
std::vector<uint8_t> no_side_inputs() {
  std::vector<uint8_t> side;
  layers::BlockContext().for_each([&](const char*, const Tensor&) { side.push_back(0); });
  return side;
}

// What stage 1 of a two-stage MLP says when evaluating on `msg`.
std::string error_receiving(Message msg, std::shared_ptr<Channel> channel = host_bytes_channel()) {
  StageSetup setup;
  setup.stage = 1;
  setup.num_stages = 2;
  setup.blocks = testmodels::make_blocks("mlp");
  StageExecutor exec(setup, channel);
  channel->send(std::move(msg));
  return dgpipe::testing::error_of([&] { exec.eval_step(0, {testmodels::make_batch("mlp", 2, 1)}); });
}

}  // namespace

TEST(Executor, HostByteChannelRejectsADeviceBody) {
  // A body arriving over a channel that does not carry bodies would be silently ignored; it is an error
  // instead.
  std::string error = error_receiving(hand_made_message(/*header_only=*/true, no_side_inputs()));
  EXPECT_NE(error.find("device body"), std::string::npos) << error;
}

TEST(Executor, SideInputsAreCheckedOnArrival) {
  // The well-formed message is accepted...
  EXPECT_EQ(error_receiving(hand_made_message(false, no_side_inputs())), "(no error)");
  // ... a record short, or a record cut inside its dimensions, is truncated ...
  std::vector<uint8_t> short_one = no_side_inputs();
  short_one.pop_back();
  EXPECT_NE(error_receiving(hand_made_message(false, short_one)).find("truncated side inputs"),
            std::string::npos);
  std::vector<uint8_t> cut = {1, static_cast<uint8_t>(engine::DType::i64), 2, 4, 0, 0};
  EXPECT_NE(error_receiving(hand_made_message(false, cut)).find("truncated side inputs"), std::string::npos);
  // ... and bytes left over (a sender with more side inputs than this build knows) are refused.
  std::vector<uint8_t> extra = no_side_inputs();
  extra.push_back(0);
  EXPECT_NE(error_receiving(hand_made_message(false, extra)).find("unexpected bytes after the side inputs"),
            std::string::npos);
}

TEST(Executor, TensorPathChecksWhatArrives) {
  auto tensor_channel = [] { return std::make_shared<LocalChannel>(); };
  // Header, body and one (absent) side input per field: accepted.
  Message good = hand_made_message(/*header_only=*/true, {});
  good.side_inputs.resize(block_context_fields());
  EXPECT_EQ(error_receiving(good, tensor_channel()), "(no error)");
  // A side input short.
  Message short_one = good;
  short_one.side_inputs.pop_back();
  EXPECT_NE(error_receiving(short_one, tensor_channel()).find("side inputs, expected"), std::string::npos);
  // Side-input bytes after the header, where the side inputs travel as tensors.
  Message bytes_too = hand_made_message(/*header_only=*/true, no_side_inputs());
  bytes_too.side_inputs.resize(block_context_fields());
  EXPECT_NE(error_receiving(bytes_too, tensor_channel()).find("host bytes after the packet header"),
            std::string::npos);
  // Side-input tensors over a channel that carries side inputs as host bytes (only the body as a tensor).
  Message tensors_too = hand_made_message(/*header_only=*/true, no_side_inputs());
  tensors_too.side_inputs.resize(block_context_fields());
  EXPECT_NE(error_receiving(tensors_too, std::make_shared<DeviceBodyChannel>()).find("side-input tensors"),
            std::string::npos);
}

TEST(Executor, BoundaryStatisticsAreBookedBySideAndDirection) {
  // Over a link with latency, every receiver waits. A stage sends activations downstream/fwd and gradients
  // upstream/bwd (encode time there), and receives activations upstream/fwd and gradients downstream/bwd
  // (wait and decode time there); both ends count the bytes.
  const int S = 3, M = 2, steps = 2;
  auto blocks = testmodels::make_blocks("mlp");
  PipelineOptions opts = testmodels::pipeline_options({2, 1, 2}, M, "fwd=sortquant:6+2,bwd=uniform:8");
  opts.link.latency_s = 0.002;
  Pipeline pipe(blocks, opts, make_sgd);
  for (int step = 0; step < steps; ++step) pipe.train_step(testmodels::make_batch("mlp", 8, 60 + step));
  auto& stages = pipe.local_stages();
  auto stats = [&](int s, Side side, Direction dir) { return stages[s]->boundary_stats(side, dir); };
  for (int s = 0; s < S; ++s) {
    SCOPED_TRACE("stage " + std::to_string(s));
    for (Direction dir : {Direction::fwd, Direction::bwd}) {
      const bool sends = dir == Direction::fwd;  // downstream/fwd and upstream/bwd are sent
      const Side sent_side = sends ? Side::downstream : Side::upstream;
      const Side received_side = sends ? Side::upstream : Side::downstream;
      const bool has_sent = sent_side == Side::downstream ? s < S - 1 : s > 0;
      const bool has_received = received_side == Side::upstream ? s > 0 : s < S - 1;
      BoundaryStats sent = stats(s, sent_side, dir), received = stats(s, received_side, dir);
      EXPECT_EQ(sent.wait_s, 0.0);
      EXPECT_EQ(sent.decode_s, 0.0);
      EXPECT_EQ(received.encode_s, 0.0);
      EXPECT_EQ(sent.messages, has_sent ? uint64_t(steps * M) : 0u);
      EXPECT_EQ(received.messages, has_received ? uint64_t(steps * M) : 0u);
      EXPECT_EQ(sent.encode_s > 0, has_sent);
      EXPECT_EQ(received.wait_s > 0, has_received);
      EXPECT_EQ(received.decode_s > 0, has_received);
      if (!has_sent) {
        EXPECT_EQ(sent.wire_bytes, 0u);
      }
      if (!has_received) {
        EXPECT_EQ(received.wire_bytes, 0u);
      }
    }
    // The two ends of a boundary count the same traffic.
    if (s < S - 1) {
      for (Direction dir : {Direction::fwd, Direction::bwd}) {
        BoundaryStats mine = stats(s, Side::downstream, dir), theirs = stats(s + 1, Side::upstream, dir);
        EXPECT_GT(mine.wire_bytes, 0u);
        EXPECT_EQ(mine.wire_bytes, theirs.wire_bytes);
        EXPECT_EQ(mine.raw_bytes, theirs.raw_bytes);
        EXPECT_EQ(mine.side_bytes, theirs.side_bytes);
      }
    }
  }
  // Evaluation is not booked.
  BoundaryStats before = stats(1, Side::upstream, Direction::fwd);
  pipe.eval_step(testmodels::make_batch("mlp", 8, 70));
  EXPECT_EQ(stats(1, Side::upstream, Direction::fwd).messages, before.messages);
  EXPECT_EQ(stats(1, Side::upstream, Direction::fwd).wait_s, before.wait_s);
}
