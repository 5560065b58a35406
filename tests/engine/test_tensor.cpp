#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops.h"
#include "support/gradcheck.h"

using namespace dgpipe::engine;
using dgpipe::testing::random_leaf;

TEST(Tensor, FactoriesAndViews) {
  Tensor a = arange(0, 24, 1, DType::f32).reshape({2, 3, 4});
  EXPECT_EQ(a.shape(), (Shape{2, 3, 4}));
  EXPECT_TRUE(a.is_contiguous());
  Tensor p = a.permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_FALSE(p.is_contiguous());
  EXPECT_EQ(p.storage(), a.storage());
  Tensor c = p.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  // p[1][1][2] = a[1][2][1] = 1*12 + 2*4 + 1 = 21
  EXPECT_EQ(c.to_vector()[1 * 6 + 1 * 3 + 2], 21.0);
  Tensor s = a.slice(2, 1, 4, 2);  // columns 1 and 3
  EXPECT_EQ(s.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(s.to_vector()[0], 1.0);
  EXPECT_EQ(s.to_vector()[1], 3.0);
  Tensor e = from_vector(std::vector<float>{1, 2, 3}, {3}).unsqueeze(0).expand({4, 3});
  EXPECT_EQ(e.stride(0), 0);
  EXPECT_EQ(sum(e).item(), 24.0);
  EXPECT_EQ(a.select(1, -1).shape(), (Shape{2, 4}));
  EXPECT_EQ(a.flatten(1).shape(), (Shape{2, 12}));
  EXPECT_EQ(a.transpose(0, 2).reshape({-1}).numel(), 24);
}

TEST(Tensor, ViewErrorsNameTheOp) {
  Tensor a = zeros({2, 3});
  try {
    a.view({4, 2});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("view"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("[4,2]"), std::string::npos);
  }
  EXPECT_THROW(a.t().view({6}), Error);  // non-contiguous: needs reshape
  EXPECT_NO_THROW(a.t().reshape({6}));
  EXPECT_THROW(a.select(0, 2), Error);
  EXPECT_THROW(a.permute({0, 0}), Error);
  EXPECT_THROW(a.expand({3, 3}), Error);
  EXPECT_THROW(a.size(2), Error);
}

TEST(Tensor, DtypeConversions) {
  Tensor a = from_vector(std::vector<double>{1.5, -2.25, 65504.0, 1e-8, 3.14159}, {5}, DType::f64);
  std::vector<double> h = a.to(DType::f16).to(DType::f64).to_vector();
  EXPECT_EQ(h[0], 1.5);
  EXPECT_EQ(h[1], -2.25);
  EXPECT_EQ(h[2], 65504.0);
  EXPECT_NEAR(h[3], 1e-8, 6e-8);  // subnormal in f16
  EXPECT_NEAR(h[4], 3.140625, 1e-9);
  std::vector<double> b = a.to(DType::bf16).to(DType::f64).to_vector();
  EXPECT_EQ(b[0], 1.5);
  EXPECT_NEAR(b[4], 3.140625, 1e-9);
  EXPECT_EQ(a.to(DType::i32).to_vector()[1], -2.0);
  // round-to-nearest-even at the f16 tie: 2049 is halfway between 2048 and 2050
  EXPECT_EQ(full({1}, 2049.0).to(DType::f16).item(), 2048.0);
  EXPECT_EQ(full({1}, 2051.0).to(DType::f16).item(), 2052.0);
  EXPECT_EQ(full({1}, 70000.0).to(DType::f16).item(), INFINITY);
}

TEST(Tensor, RandomIsReproducible) {
  Generator g1(42), g2(42);
  Tensor a = randn({1000}, {}, &g1), b = randn({1000}, {}, &g2);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  double m = mean(a).item();
  EXPECT_NEAR(m, 0.0, 0.1);
  Tensor u = rand({1000}, {}, &g1);
  EXPECT_GE(min(u).item(), 0.0);
  EXPECT_LT(max(u).item(), 1.0);
}

TEST(Autograd, ViewsPropagateGradients) {
  Tensor x = random_leaf({2, 3, 4});
  auto f = [](const std::vector<Tensor>& in) {
    return in[0].permute({2, 0, 1}).slice(0, 1, 4, 2).reshape({2, 6}).t().unsqueeze(0).expand({3, 6, 2});
  };
  EXPECT_GRADCHECK(f, {x});
  auto g = [](const std::vector<Tensor>& in) { return in[0].select(1, 2).narrow(1, 1, 2).flatten() * 2.0; };
  EXPECT_GRADCHECK(g, {x});
}

TEST(Autograd, AccumulatesAndFrees) {
  Tensor x = random_leaf({3});
  Tensor y = sum(mul(x, x));
  y.backward();
  std::vector<double> g1 = x.grad().to_vector();
  EXPECT_THROW(y.backward(), Error);  // graph freed
  Tensor z = sum(mul(x, x));
  z.backward();
  std::vector<double> g2 = x.grad().to_vector();
  std::vector<double> xv = x.to_vector();
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(g1[i], 2 * xv[i], 1e-12);
    EXPECT_NEAR(g2[i], 4 * xv[i], 1e-12);
  }
  {
    NoGradGuard ng;
    EXPECT_FALSE(mul(x, x).requires_grad());
  }
  EXPECT_FALSE(x.detach().requires_grad());
}

TEST(Autograd, BackwardWithGivenGradient) {
  // What a pipeline stage does: back-propagate a received gradient from a non-scalar output.
  Tensor x = random_leaf({2, 3});
  Tensor y = mul(x, 3.0);
  Tensor g = ones({2, 3}, DType::f64);
  backward({y}, {g});
  for (double v : x.grad().to_vector()) EXPECT_NEAR(v, 3.0, 1e-12);
  EXPECT_THROW(backward({mul(x, 1.0)}, {ones({3, 2}, DType::f64)}), Error);
}
