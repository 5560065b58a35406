#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/ops/vec_math.h"

using namespace dgpipe::engine;

namespace {

// Distance in units in the last place between two finite floats of the same sign.
int64_t ulps(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  return std::llabs(static_cast<int64_t>(ia) - ib);
}

double gelu_ref(double x) {
  return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
}
double gelu_grad_ref(double x) {
  return 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
}

std::vector<float> sweep(float lo, float hi, int n) {
  std::vector<float> x(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) x[static_cast<size_t>(i)] = lo + (hi - lo) * static_cast<float>(i) / (n - 1);
  return x;
}

bool same_bits(float a, float b) {
  return std::memcmp(&a, &b, 4) == 0;
}

}  // namespace

TEST(VecMath, ExpWithinTwoUlpOfTheCorrectlyRoundedValue) {
  // The normal range of the result: exp(x) >= FLT_MIN from x = -87.33; up to FLT_MAX at 88.72.
  std::vector<float> x = sweep(-87.3f, 88.7f, 1000003);
  std::vector<float> y(x.size());
  cpu::exp_shifted(x.data(), static_cast<int64_t>(x.size()), 0.0f, y.data());
  int64_t worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float ref = static_cast<float>(std::exp(static_cast<double>(x[i])));
    worst = std::max(worst, ulps(y[i], ref));
  }
  EXPECT_LE(worst, 1);
  // The shift is subtracted first (in float), as softmax uses it.
  float shifted;
  const float three = 3.0f;
  cpu::exp_shifted(&three, 1, 1.0f, &shifted);
  EXPECT_LE(ulps(shifted, static_cast<float>(std::exp(2.0))), 2);
}

TEST(VecMath, ExpAtTheEdgesOfItsRange) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {0.0f, -104.0f, -200.0f, -inf, 88.8f, 100.0f, inf, std::nanf(""), -100.0f};
  std::vector<float> y(x.size());
  cpu::exp_shifted(x.data(), static_cast<int64_t>(x.size()), 0.0f, y.data());
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_EQ(y[3], 0.0f);
  EXPECT_EQ(y[4], inf);
  EXPECT_EQ(y[5], inf);
  EXPECT_EQ(y[6], inf);
  EXPECT_TRUE(std::isnan(y[7]));
  // Below FLT_MIN the result is subnormal: within 2^-149 (one subnormal step) of the true value.
  EXPECT_NEAR(y[8], std::exp(-100.0), std::ldexp(1.0, -149));
}

TEST(VecMath, GeluAndItsGradientAgainstTheLibraryErf) {
  // |error| <= 1.5e-7 in erf gives at most 0.75e-7 |x| in GELU; plus the float roundings of the result.
  std::vector<float> x = sweep(-10.0f, 10.0f, 200001);
  std::vector<float> y(x.size()), g(x.size(), 1.0f), dy(x.size());
  const int64_t n = static_cast<int64_t>(x.size());
  cpu::gelu_forward(x.data(), n, y.data());
  cpu::gelu_backward(g.data(), x.data(), n, dy.data());
  double worst_y = 0, worst_dy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double xi = x[i];
    worst_y = std::max(worst_y, std::fabs(y[i] - gelu_ref(xi)) / std::max(1.0, std::fabs(xi)));
    worst_dy = std::max(worst_dy, std::fabs(dy[i] - gelu_grad_ref(xi)) / std::max(1.0, std::fabs(xi)));
  }
  EXPECT_LT(worst_y, 2.5e-7);
  EXPECT_LT(worst_dy, 2.5e-7);
  // The gradient scales with g.
  const float gx[2] = {-2.5f, 0.75f}, xx[2] = {0.3f, -1.7f};
  float out[2];
  cpu::gelu_backward(gx, xx, 2, out);
  EXPECT_NEAR(out[0], -2.5 * gelu_grad_ref(0.3f), 1e-6);
  EXPECT_NEAR(out[1], 0.75 * gelu_grad_ref(-1.7f), 1e-6);
}

TEST(VecMath, EveryElementGetsTheSameBitsWhereverItSits) {
  // A whole array takes 8-lane (AVX2 machines), 4-lane and padded-tail paths; the same element alone, or at
  // another position, must come out the same, or results would depend on thread chunking.
  std::vector<float> x = sweep(-6.0f, 5.0f, 29);
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> g = sweep(0.5f, -1.5f, 29);
  std::vector<float> e(x.size()), y(x.size()), d(x.size());
  cpu::exp_shifted(x.data(), n, 0.25f, e.data());
  cpu::gelu_forward(x.data(), n, y.data());
  cpu::gelu_backward(g.data(), x.data(), n, d.data());
  for (int64_t start = 1; start < n; start += 3) {
    std::vector<float> e2(x.size()), y2(x.size()), d2(x.size());
    const int64_t m = n - start;
    cpu::exp_shifted(x.data() + start, m, 0.25f, e2.data());
    cpu::gelu_forward(x.data() + start, m, y2.data());
    cpu::gelu_backward(g.data() + start, x.data() + start, m, d2.data());
    for (int64_t i = 0; i < m; ++i) {
      EXPECT_TRUE(same_bits(e2[i], e[start + i])) << "exp, element " << start + i << " from " << start;
      EXPECT_TRUE(same_bits(y2[i], y[start + i])) << "gelu, element " << start + i << " from " << start;
      EXPECT_TRUE(same_bits(d2[i], d[start + i]))
          << "gelu backward, element " << start + i << " from " << start;
    }
  }
}
