#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;

TEST(Dropout, MaskStatisticsAndScale) {
  const int64_t n = 200000;
  const double p = 0.3;
  Generator gen(123);
  Tensor x = full({n}, 2.0);
  std::vector<double> y = dropout(x, p, true, &gen).to_vector();
  int64_t kept = 0;
  for (double v : y) {
    if (v != 0.0) {
      ++kept;
      EXPECT_FLOAT_EQ(v, 2.0 / (1.0 - p));
    }
  }
  const double frac = static_cast<double>(kept) / n;
  // Binomial standard deviation is sqrt(0.21/n) ~ 0.001; allow 5 sigma.
  EXPECT_NEAR(frac, 1.0 - p, 0.005);
  // The scale keeps the expectation: mean(y) ~ mean(x).
  double m = 0;
  for (double v : y) m += v;
  EXPECT_NEAR(m / n, 2.0, 0.02);
}

TEST(Dropout, FollowsThePhiloxRuleOfRngH) {
  // Element i is kept iff philox_uniform(state, i) >= p, with the state the generator hands out.
  Generator gen(77);
  gen.reserve(5);  // start from a non-zero offset
  PhiloxState state = gen.state();
  const double p = 0.5;
  Tensor x = random_leaf({7, 9}, 1, 2, 3).detach();  // never zero, so zeros mean "dropped"
  std::vector<double> y = dropout(x, p, true, &gen).to_vector();
  std::vector<double> xv = x.to_vector();
  for (size_t i = 0; i < y.size(); ++i) {
    bool keep = philox_uniform(state, i) >= static_cast<float>(p);
    EXPECT_EQ(y[i], keep ? xv[i] * 2.0 : 0.0) << "element " << i;
  }
  // ceil(63 / 4) = 16 blocks were reserved.
  EXPECT_EQ(gen.state().offset, state.offset + 16);
}

TEST(Dropout, VectorLanesDrawTheScalarPhiloxBits) {
  // The CPU draws Philox blocks several at a time in vector lanes; every element must still follow the
  // scalar rule. A seed with high bits set (the second key word), a counter that crosses 2^32 inside a group
  // of lanes (its high word changes there), 20 tiles of 64 blocks and one of 14 (8 + 4 + 2 blocks: both
  // vector widths and the scalar rest), the last block 3 elements, in f32 and f64.
  for (DType dt : {DType::f32, DType::f64}) {
    Generator gen(0x9abcdef012345678ull);
    gen.set_state(PhiloxState{0x9abcdef012345678ull, (1ull << 32) - 37});
    const PhiloxState state = gen.state();
    const int64_t n = 4 * (64 * 20 + 14) - 1;
    Tensor x = full({n}, 1.0, TensorOptions(dt));
    std::vector<double> y = dropout(x, 0.3, true, &gen).to_vector();
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) {
      const bool keep = philox_uniform(state, static_cast<uint64_t>(i)) >= 0.3f;
      mismatches += (y[static_cast<size_t>(i)] != 0.0) != keep;
    }
    EXPECT_EQ(mismatches, 0) << dtype_name(dt);
  }
}

TEST(Dropout, KeepsAnElementWhoseUniformEqualsTheThreshold) {
  // The keep test is uniform >= float(p). Thresholds on either side of one element's uniform u = K / 2^24
  // and exactly on it (K < 2^23, so (K +- 0.5) / 2^24 is a float too).
  const Generator fresh(31);
  int64_t i = 0;
  while (philox_uniform(fresh.state(), static_cast<uint64_t>(i)) >= 0.5f) ++i;
  const double k = philox_uniform(fresh.state(), static_cast<uint64_t>(i)) * 16777216.0;
  Tensor x = ones({i + 1});
  auto kept = [&](double threshold_units) {
    Generator gen(31);
    return dropout(x, threshold_units / 16777216.0, true, &gen).to_vector()[static_cast<size_t>(i)] != 0.0;
  };
  EXPECT_TRUE(kept(k - 0.5));
  EXPECT_TRUE(kept(k));
  EXPECT_FALSE(kept(k + 0.5));
  EXPECT_FALSE(kept(k + 1));
}

TEST(Dropout, DeterministicForASeedAndFreshAcrossCalls) {
  Tensor x = ones({1000});
  Generator g1(42), g2(42), g3(43);
  std::vector<double> a = dropout(x, 0.5, true, &g1).to_vector();
  std::vector<double> b = dropout(x, 0.5, true, &g2).to_vector();
  std::vector<double> c = dropout(x, 0.5, true, &g3).to_vector();
  std::vector<double> a2 = dropout(x, 0.5, true, &g1).to_vector();
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, a2);  // the generator advanced
  // The default generator is reseeded by manual_seed.
  manual_seed(9);
  std::vector<double> d1 = dropout(x, 0.5, true).to_vector();
  manual_seed(9);
  std::vector<double> d2 = dropout(x, 0.5, true).to_vector();
  EXPECT_EQ(d1, d2);
}

TEST(Dropout, BackwardUsesTheSameMask) {
  Generator gen(5);
  Tensor x = random_leaf({4, 50}, 1, 2, 4);
  Tensor y = dropout(x, 0.4, true, &gen);
  Tensor g = random_leaf({4, 50}, -1, 1, 5).detach();
  y.backward(g);
  std::vector<double> yv = y.to_vector(), gx = x.grad().to_vector(), gv = g.to_vector();
  int dropped = 0;
  for (size_t i = 0; i < yv.size(); ++i) {
    if (yv[i] == 0.0) {
      EXPECT_EQ(gx[i], 0.0);
      ++dropped;
    } else {
      EXPECT_NEAR(gx[i], gv[i] / 0.6, 1e-12);
    }
  }
  EXPECT_GT(dropped, 0);
  EXPECT_LT(dropped, 200);
}

TEST(Dropout, NonContiguousInputUsesLogicalOrder) {
  Generator g1(8), g2(8);
  Tensor base = random_leaf({6, 5}, 1, 2, 6).detach();
  Tensor view = base.t();  // [5,6], not contiguous
  EXPECT_EQ(dropout(view, 0.5, true, &g1).to_vector(),
            dropout(view.contiguous(), 0.5, true, &g2).to_vector());
}

TEST(Dropout, Gradcheck) {
  Tensor x = random_leaf({3, 7}, -1, 1, 9);
  auto f = [](const Inputs& in) {
    Generator gen(2024);  // a fresh generator per call: every evaluation sees the same mask
    return dropout(in[0].t(), 0.35, true, &gen);
  };
  EXPECT_GRADCHECK(f, (Inputs{x}));
}

TEST(Dropout, EvalZeroOneAndInvalidProbabilities) {
  Tensor x = random_leaf({10}, 1, 2, 10);
  EXPECT_TRUE(dropout(x, 0.5, false).same(x));  // eval: identity
  EXPECT_TRUE(dropout(x, 0.0, true).same(x));   // p = 0: identity
  Tensor z = dropout(x, 1.0, true);             // p = 1: all dropped
  for (double v : z.to_vector()) EXPECT_EQ(v, 0.0);
  sum(z).backward();
  ASSERT_TRUE(x.grad().defined());
  for (double v : x.grad().to_vector()) EXPECT_EQ(v, 0.0);
  std::string e = error_of([&] { dropout(x, 1.5, true); });
  EXPECT_NE(e.find("dropout"), std::string::npos) << e;
  EXPECT_NE(e.find("1.5"), std::string::npos) << e;
  EXPECT_THROW(dropout(x, -0.1, true), Error);
  EXPECT_THROW(dropout(x, -0.1, false), Error);  // checked in eval too: a bad config fails early
}

TEST(Dropout, HalfInputOnCpu) {
  Generator g1(3), g2(3);
  Tensor x = random_leaf({64}, 1, 2, 11).detach().to(DType::f32);
  Tensor y32 = dropout(x, 0.25, true, &g1);
  Tensor y16 = dropout(x.to(DType::f16), 0.25, true, &g2);
  EXPECT_EQ(y16.dtype(), DType::f16);
  std::vector<double> a = y32.to_vector(), b = y16.to_vector();
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i] == 0.0, b[i] == 0.0);
    EXPECT_NEAR(a[i], b[i], 4e-3 * std::fabs(a[i]) + 1e-6);
  }
}
