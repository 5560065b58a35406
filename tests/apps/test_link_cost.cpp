// The two link models and their break-even bandwidths, on numbers worked out by hand.
#include "apps/link_cost.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace dgpipe::apps;

namespace {
// Per step: 0.5 s compute, 0.25 s encode+decode, 2.5 MB sent instead of 10 MB.
LinkTraffic sortquant_like() {
  return LinkTraffic{2'500'000, 10'000'000, 0.25, 0.5};
}
}  // namespace

TEST(LinkCost, SerialAndOverlappedTimes) {
  const LinkTraffic t = sortquant_like();
  const double mbit100 = 12.5e6;  // bytes per second
  EXPECT_DOUBLE_EQ(wire_seconds(10'000'000, mbit100), 0.8);
  EXPECT_DOUBLE_EQ(serial_seconds(t, mbit100, /*compressed=*/true), 0.5 + 0.25 + 0.2);
  EXPECT_DOUBLE_EQ(serial_seconds(t, mbit100, /*compressed=*/false), 0.5 + 0.8);
  EXPECT_DOUBLE_EQ(overlapped_seconds(t, mbit100, true), 0.75);  // compute-bound
  EXPECT_DOUBLE_EQ(overlapped_seconds(t, mbit100, false), 0.8);  // link-bound
}

TEST(LinkCost, BreakEvenIsWhereTheCodecStopsPaying) {
  const LinkTraffic t = sortquant_like();
  const double serial = serial_break_even(t), overlapped = overlapped_break_even(t);
  EXPECT_DOUBLE_EQ(serial, 7.5e6 / 0.25);     // the 7.5 MB saved take 0.25 s at 30 MB/s
  EXPECT_DOUBLE_EQ(overlapped, 10e6 / 0.75);  // 10 MB take the codec run's 0.75 s at 13.3 MB/s
  for (double b : {serial, overlapped}) {
    auto model = b == serial ? serial_seconds : overlapped_seconds;
    EXPECT_NEAR(model(t, b, true), model(t, b, false), 1e-12);     // equal at the break-even
    EXPECT_LT(model(t, 0.9 * b, true), model(t, 0.9 * b, false));  // the codec wins below it
    EXPECT_GT(model(t, 1.1 * b, true), model(t, 1.1 * b, false));  // and loses above it
  }
  EXPECT_EQ(serial_break_even(LinkTraffic{10, 10, 0.1, 1}), 0);          // nothing saved: never
  EXPECT_TRUE(std::isinf(serial_break_even(LinkTraffic{5, 10, 0, 1})));  // free codec: any speed
  EXPECT_EQ(human_bandwidth(0), "never");
  EXPECT_EQ(human_bandwidth(12.5e6), "100 Mbit/s");
  EXPECT_EQ(human_bandwidth(0.15e9), "1.20 Gbit/s");
}
