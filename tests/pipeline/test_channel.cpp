#include "pipeline/channel.h"

#include <gtest/gtest.h>

#include <thread>

#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "support/gradcheck.h"

using namespace dgpipe::pipeline;
using Clock = std::chrono::steady_clock;

namespace {
Message make_msg(int src, int dst, MsgKind kind, int mb, int64_t step, size_t bytes) {
  Message m;
  m.src_stage = src;
  m.dst_stage = dst;
  m.kind = kind;
  m.micro_batch = mb;
  m.step = step;
  m.bytes.assign(bytes, static_cast<uint8_t>(mb));
  return m;
}
}  // namespace

TEST(Channel, ParsesBandwidthAndLatency) {
  EXPECT_DOUBLE_EQ(parse_bandwidth("1gbit"), 125e6);
  EXPECT_DOUBLE_EQ(parse_bandwidth("100Mbit/s"), 12.5e6);
  EXPECT_DOUBLE_EQ(parse_bandwidth("10MB"), 10e6);
  EXPECT_DOUBLE_EQ(parse_bandwidth("2MiB"), 2.0 * 1048576);
  EXPECT_DOUBLE_EQ(parse_latency("5ms"), 0.005);
  EXPECT_DOUBLE_EQ(parse_latency("0"), 0.0);
  EXPECT_THROW(parse_bandwidth("fast"), dgpipe::engine::Error);
  EXPECT_THROW(parse_bandwidth("10parsec"), dgpipe::engine::Error);
  EXPECT_THROW(parse_latency("3 weeks"), dgpipe::engine::Error);
}

TEST(Channel, LocalIsFifoPerAddress) {
  LocalChannel ch;
  for (int mb = 0; mb < 4; ++mb) ch.send(make_msg(0, 1, MsgKind::activation, mb, 7, 10));
  ch.send(make_msg(1, 0, MsgKind::gradient, 3, 7, 5));
  Message g = ch.recv(1, 0, MsgKind::gradient, 3, 7);
  EXPECT_EQ(g.bytes.size(), 5u);
  for (int mb = 0; mb < 4; ++mb) {
    Message m = ch.recv(0, 1, MsgKind::activation, mb, 7);
    EXPECT_EQ(m.micro_batch, mb);
    EXPECT_EQ(m.bytes[0], mb);
  }
}

TEST(Channel, MismatchedMicroBatchIsAnError) {
  LocalChannel ch;
  ch.send(make_msg(0, 1, MsgKind::activation, 1, 0, 1));
  try {
    ch.recv(0, 1, MsgKind::activation, 0, 0);
    FAIL();
  } catch (const dgpipe::engine::Error& e) {
    EXPECT_NE(std::string(e.what()).find("micro-batch 0"), std::string::npos) << e.what();
  }
}

TEST(Channel, TimeoutNamesThePeerAndStep) {
  LocalChannel ch;
  ch.set_timeout(std::chrono::milliseconds(100));
  auto t0 = Clock::now();
  try {
    ch.recv(2, 3, MsgKind::activation, 5, 11);
    FAIL();
  } catch (const dgpipe::engine::Error& e) {
    std::string w = e.what();
    EXPECT_NE(w.find("stage 2"), std::string::npos) << w;
    EXPECT_NE(w.find("step 11"), std::string::npos) << w;
  }
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(2));
}

TEST(Channel, AbortWakesBlockedReceivers) {
  LocalChannel ch;
  std::string error;
  std::thread waiter([&] {
    try {
      ch.recv(0, 1, MsgKind::activation, 0, 0);
    } catch (const dgpipe::engine::Error& e) {
      error = e.what();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ch.abort("stage 0 failed: boom");
  waiter.join();
  EXPECT_NE(error.find("boom"), std::string::npos) << error;
}

// The throttle's arithmetic, without timing anything: each message occupies the wire for bytes / rate after
// the previous one on the same link, latency is added once per message, and links are independent.
TEST(Channel, ThrottleReservesTheConfiguredWireTime) {
  LinkModel link;
  link.bandwidth_bytes_per_s = 4e6;
  link.latency_s = 0.05;
  LinkThrottle throttle(link);
  const auto t0 = Clock::now();
  Clock::time_point last;
  for (int mb = 0; mb < 8; ++mb) last = throttle.reserve(0, 1, 100000);  // 8 x 25 ms on one link
  const auto t1 = Clock::now();
  const double wire = std::chrono::duration<double>(last - t0).count();
  EXPECT_GE(wire, 0.2 + 0.05 - 1e-6) << "8 x 100 kB at 4 MB/s, plus the latency of the last message";
  EXPECT_LE(wire, 0.2 + 0.05 + std::chrono::duration<double>(t1 - t0).count() + 1e-6);
  const double other = std::chrono::duration<double>(throttle.reserve(1, 2, 100000) - t1).count();
  EXPECT_GE(other, 0.025 + 0.05 - 1e-6) << "another link does not wait for this one";
  EXPECT_LE(other, 0.025 + 0.05 + std::chrono::duration<double>(Clock::now() - t1).count() + 1e-6);
}

// The channel delivers a throttled message no earlier than its reserved arrival (a floor, which holds on a
// loaded machine too; how late it may be is the scheduler's business, not asserted).
TEST(Channel, ThrottledMessagesAreNeverEarly) {
  LinkModel link;
  link.bandwidth_bytes_per_s = 4e6;
  LocalChannel ch(link);
  auto t0 = Clock::now();
  for (int mb = 0; mb < 8; ++mb) ch.send(make_msg(0, 1, MsgKind::activation, mb, 0, 100000));
  for (int mb = 0; mb < 8; ++mb) ch.recv(0, 1, MsgKind::activation, mb, 0);
  EXPECT_GE(std::chrono::duration<double>(Clock::now() - t0).count(), 0.2 * 0.999);
  LinkModel lat;
  lat.latency_s = 0.05;
  LocalChannel ch2(lat);
  t0 = Clock::now();
  ch2.send(make_msg(0, 1, MsgKind::activation, 0, 0, 10));
  ch2.recv(0, 1, MsgKind::activation, 0, 0);
  EXPECT_GE(std::chrono::duration<double>(Clock::now() - t0).count(), 0.05);
}

TEST(Channel, TensorRecordsRoundTripAndKnowTheirSize) {
  using dgpipe::engine::Tensor;
  std::vector<Tensor> tensors = {
      Tensor(), dgpipe::engine::from_vector(std::vector<int64_t>{1, 2, 3, 4, 5, 6}, {2, 3}),
      dgpipe::engine::full({4}, 0.5), dgpipe::engine::full({}, 2.0, dgpipe::engine::DType::f64)};
  std::vector<uint8_t> bytes;
  for (const Tensor& t : tensors) {
    size_t before = bytes.size();
    put_tensor_record(bytes, t);
    EXPECT_EQ(bytes.size() - before, tensor_record_bytes(t));
  }
  const uint8_t* p = bytes.data();
  for (const Tensor& t : tensors) {
    Tensor back = get_tensor_record(p, bytes.data() + bytes.size(), dgpipe::engine::Device::cpu());
    ASSERT_EQ(back.defined(), t.defined());
    if (!t.defined()) continue;
    EXPECT_EQ(back.dtype(), t.dtype());
    EXPECT_EQ(back.shape(), t.shape());
    EXPECT_EQ(back.to_vector(), t.to_vector());
  }
  EXPECT_EQ(p, bytes.data() + bytes.size());
  // A message charges its side inputs at their record size, whether they travel as bytes or as tensors.
  Message as_tensors = make_msg(0, 1, MsgKind::activation, 0, 0, 10);
  as_tensors.side_inputs = tensors;
  as_tensors.body = dgpipe::engine::zeros({7}, dgpipe::engine::TensorOptions(dgpipe::engine::DType::u8));
  Message as_bytes = make_msg(0, 1, MsgKind::activation, 0, 0, 10);
  as_bytes.bytes.insert(as_bytes.bytes.end(), 7, 0);
  as_bytes.bytes.insert(as_bytes.bytes.end(), bytes.begin(), bytes.end());
  EXPECT_EQ(message_bytes(as_tensors), message_bytes(as_bytes));
  EXPECT_EQ(message_bytes(as_bytes), as_bytes.bytes.size());
}

// On a GPU: a tensor sent over the local channel while its writer is still queued on the sender's stream is
// read on the receiver's stream only after that writer (the channel's event). Without it the receiver reads
// the zeros that were there before.
TEST(Channel, LocalCudaTensorsAreReadAfterTheirWriter) {
  DGP_SKIP_WITHOUT_CUDA();
  namespace E = dgpipe::engine;
  namespace cuda = dgpipe::engine::cuda;
  const E::TensorOptions on_gpu(E::DType::f32, E::Device::cuda(0));
  E::Tensor body = E::zeros({1 << 20}, on_gpu);
  cuda::device_synchronize();
  LocalChannel ch;
  cuda::Stream sender = cuda::Stream::create(0), receiver = cuda::Stream::create(0);
  {
    cuda::StreamGuard g(sender);
    // Tens of milliseconds of GEMMs queued ahead of the write.
    E::Tensor a = E::mul(E::ones({4096, 4096}, on_gpu), 1.0 / 4096);
    for (int i = 0; i < 30; ++i) a = E::matmul(a, a);
    body.fill_(7.0);
    Message msg = make_msg(0, 1, MsgKind::activation, 0, 0, 4);
    msg.body = body;
    msg.side_inputs = {E::Tensor(), body.narrow(0, 0, 8)};
    ch.send(std::move(msg));
  }
  cuda::StreamGuard g(receiver);
  Message got = ch.recv(0, 1, MsgKind::activation, 0, 0);
  std::vector<double> seen = got.body.narrow(0, (1 << 20) - 4, 4).to_vector();  // read on `receiver`
  EXPECT_EQ(seen, std::vector<double>(4, 7.0));
  EXPECT_EQ(got.side_inputs[1].to_vector(), std::vector<double>(8, 7.0));
}
