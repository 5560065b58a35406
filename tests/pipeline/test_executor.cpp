// The executor's device-body path (what the NCCL channel uses: packet header as host bytes, body as a
// tensor), exercised on the CPU with a channel that claims to carry device bodies but keeps everything in
// this process. It must give exactly the same training as the host-bytes path, and the split must really
// happen.
#include "pipeline/executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>

#include "compress/codec.h"
#include "engine/optim/sgd.h"
#include "pipeline/pipeline.h"
#include "pipeline_test_models.h"
#include "support/test_util.h"

using namespace dgpipe;
using namespace dgpipe::pipeline;
using engine::Tensor;

namespace {

const pipeline::OptimizerFactory make_sgd = testmodels::sgd_factory();

// Reports carries_device_bodies() and moves bodies as tensors next to the host bytes, copying them as a real
// transport would (the receiver never aliases the sender's memory). Counts what crosses.
class DeviceBodyChannel : public Channel {
 public:
  void send(Message msg) override {
    if (msg.body.defined()) {
      EXPECT_EQ(msg.body.dtype(), engine::DType::u8);
      EXPECT_EQ(msg.body.dim(), 1);
      bodies_++;
      body_bytes_ += msg.body.nbytes();
      msg.body = drop_bodies_ ? Tensor() : msg.body.clone();
    }
    messages_++;
    host_bytes_ += msg.bytes.size();
    inner_.send(std::move(msg));
  }
  Message recv(int src, int dst, MsgKind kind, int micro_batch, int64_t step) override {
    return inner_.recv(src, dst, kind, micro_batch, step);
  }
  void abort(const std::string& reason) override { inner_.abort(reason); }
  bool carries_device_bodies() const override { return true; }

  void drop_bodies() { drop_bodies_ = true; }
  uint64_t messages() const { return messages_; }
  uint64_t bodies() const { return bodies_; }
  uint64_t host_bytes() const { return host_bytes_; }
  uint64_t body_bytes() const { return body_bytes_; }

 private:
  LocalChannel inner_;
  bool drop_bodies_ = false;
  std::atomic<uint64_t> messages_{0}, bodies_{0}, host_bytes_{0}, body_bytes_{0};
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

// Three steps of a pipeline over `channel` (nullptr: the ordinary local channel, host bytes).
RunResult run(const std::string& model, int S, int M, const std::string& codec, ScheduleKind kind,
              std::shared_ptr<Channel> channel) {
  auto blocks = testmodels::make_blocks(model);
  PipelineOptions opts;
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

void expect_same_training(const std::string& model, int S, int M, const std::string& codec,
                          ScheduleKind kind) {
  SCOPED_TRACE(model + " S=" + std::to_string(S) + " M=" + std::to_string(M) + " codec " + codec);
  auto channel = std::make_shared<DeviceBodyChannel>();
  RunResult host = run(model, S, M, codec, kind, nullptr);
  RunResult device = run(model, S, M, codec, kind, channel);
  // Same packets decoded the same way: bit-identical training, not merely close.
  ASSERT_EQ(host.params.size(), device.params.size());
  size_t differing = 0;
  for (size_t i = 0; i < host.params.size(); ++i) differing += host.params[i] != device.params[i];
  EXPECT_EQ(differing, 0u) << "of " << host.params.size() << " parameters";
  EXPECT_EQ(host.losses, device.losses);
  EXPECT_EQ(host.wire_bytes, device.wire_bytes);
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

TEST(Executor, MissingDeviceBodyNamesTheBoundary) {
  auto channel = std::make_shared<DeviceBodyChannel>();
  channel->drop_bodies();
  auto blocks = testmodels::make_blocks("mlp");
  PipelineOptions opts;
  opts.balance = {2, 3};
  opts.micro_batches = 2;
  opts.codecs = {compress::parse_direction_pair("uniform:8")};
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
std::string error_receiving(Message msg) {
  auto channel = std::make_shared<LocalChannel>();
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

TEST(Executor, BoundaryStatisticsAreBookedBySideAndDirection) {
  // Over a link with latency, every receiver waits. A stage sends activations downstream/fwd and gradients
  // upstream/bwd (encode time there), and receives activations upstream/fwd and gradients downstream/bwd
  // (wait and decode time there); both ends count the bytes.
  const int S = 3, M = 2, steps = 2;
  auto blocks = testmodels::make_blocks("mlp");
  PipelineOptions opts;
  opts.balance = {2, 1, 2};
  opts.micro_batches = M;
  opts.codecs = {compress::parse_direction_pair("fwd=sortquant:6+2,bwd=uniform:8")};
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
