// The bound on a stage's wait for a message: the first step's, then a multiple of the slowest recent step
// with a floor, or a fixed bound that replaces the policy.
#include "pipeline/peer_timeout.h"

#include <gtest/gtest.h>

#include "engine/error.h"

using namespace dgpipe::pipeline;
using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(PeerTimeout, FirstStepThenTenTimesTheSlowestRecentStepAtLeastTheFloor) {
  PeerTimeout t;  // defaults: 120 s first, 10 x the slowest of 20 steps, at least 30 s
  EXPECT_EQ(t.bound(), seconds(120));
  EXPECT_NE(t.describe().find("first step"), std::string::npos) << t.describe();
  t.record_step(0.2);
  EXPECT_EQ(t.bound(), seconds(30));  // 2 s is below the floor
  t.record_step(4.5);
  EXPECT_EQ(t.bound(), seconds(45));
  EXPECT_NE(t.describe().find("10 x the slowest of the last 2 steps"), std::string::npos) << t.describe();
  for (int i = 0; i < 19; ++i) t.record_step(3.0);
  EXPECT_EQ(t.bound(), seconds(45));  // the 4.5 s step is still among the last 20
  t.record_step(3.0);
  EXPECT_EQ(t.bound(), seconds(30));  // ... and now it is not
}

TEST(PeerTimeout, AFixedBoundReplacesThePolicy) {
  PeerTimeoutPolicy p;
  p.fixed = milliseconds(2500);
  PeerTimeout t(p);
  EXPECT_EQ(t.bound(), milliseconds(2500));
  t.record_step(100.0);
  EXPECT_EQ(t.bound(), milliseconds(2500));
  EXPECT_NE(t.describe().find("fixed"), std::string::npos) << t.describe();
}

TEST(PeerTimeout, PolicyParametersAreUsedAndChecked) {
  PeerTimeoutPolicy p;
  p.first_step = seconds(7);
  p.floor = milliseconds(100);
  p.factor = 3;
  p.window = 2;
  PeerTimeout t(p);
  EXPECT_EQ(t.bound(), seconds(7));
  t.record_step(1.0);
  t.record_step(0.01);
  EXPECT_EQ(t.bound(), seconds(3));
  t.record_step(0.01);
  EXPECT_EQ(t.bound(), milliseconds(100));
  p.factor = 0;
  EXPECT_THROW(PeerTimeout{p}, dgpipe::engine::Error);
}
