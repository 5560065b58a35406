#include "pipeline/channel.h"

#include <gtest/gtest.h>

#include <thread>

#include "engine/error.h"

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

TEST(Channel, ThrottleMatchesConfiguredBandwidth) {
  // 4 MB/s and 8 messages of 100 kB: 0.2 s on the wire, serialized on one link.
  LinkModel link;
  link.bandwidth_bytes_per_s = 4e6;
  LocalChannel ch(link);
  auto t0 = Clock::now();
  for (int mb = 0; mb < 8; ++mb) ch.send(make_msg(0, 1, MsgKind::activation, mb, 0, 100000));
  for (int mb = 0; mb < 8; ++mb) ch.recv(0, 1, MsgKind::activation, mb, 0);
  double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_GE(elapsed, 0.2 * 0.999);  // the wire time is a floor
  EXPECT_LT(elapsed, 0.2 * 1.1);    // within 10%
  // Latency adds once per message but overlaps across messages in flight.
  LinkModel lat;
  lat.latency_s = 0.05;
  LocalChannel ch2(lat);
  t0 = Clock::now();
  ch2.send(make_msg(0, 1, MsgKind::activation, 0, 0, 10));
  ch2.recv(0, 1, MsgKind::activation, 0, 0);
  elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_GE(elapsed, 0.05);   // never early
  EXPECT_LT(elapsed, 0.075);  // and not much late, even on a loaded machine
}
