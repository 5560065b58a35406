#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops.h"
#include "support/golden_json.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;

namespace {
// Checks a unary op elementwise against a scalar reference and its gradient by finite differences, on a
// contiguous leaf and on a transposed (non-contiguous) view of it.
void check_unary(const char* name, const std::function<Tensor(const Tensor&)>& op, double (*ref)(double),
                 double lo, double hi, uint64_t seed) {
  SCOPED_TRACE(name);
  Tensor x = random_leaf({4, 3}, lo, hi, seed);
  std::vector<double> xv = x.to_vector(), yv = op(x.detach()).to_vector();
  for (size_t i = 0; i < xv.size(); ++i)
    EXPECT_NEAR(yv[i], ref(xv[i]), 1e-12 * std::max(1.0, std::fabs(yv[i])));
  Fn f = [op](const Inputs& in) { return op(in[0]); };
  EXPECT_GRADCHECK(f, (Inputs{x}));
  Fn ft = [op](const Inputs& in) { return op(in[0].t()); };
  EXPECT_GRADCHECK(ft, (Inputs{x}));
}

double gelu_ref(double x) {
  return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
}
double sigmoid_ref(double x) {
  return 1 / (1 + std::exp(-x));
}
}  // namespace

// ---------------- binary, broadcasting ----------------

TEST(Elementwise, BinaryOpsBroadcastForward) {
  Tensor a = from_vector(std::vector<double>{1, 2, 3}, {3, 1}, DType::f64);
  Tensor b = from_vector(std::vector<double>{10, 20}, {2}, DType::f64);
  EXPECT_EQ(add(a, b).shape(), (Shape{3, 2}));
  EXPECT_EQ(add(a, b).to_vector(), (std::vector<double>{11, 21, 12, 22, 13, 23}));
  EXPECT_EQ(sub(a, b).to_vector(), (std::vector<double>{-9, -19, -8, -18, -7, -17}));
  EXPECT_EQ(mul(a, b).to_vector(), (std::vector<double>{10, 20, 20, 40, 30, 60}));
  EXPECT_EQ(div(b, a).to_vector(), (std::vector<double>{10, 20, 5, 10, 10.0 / 3, 20.0 / 3}));
  EXPECT_EQ((a + b).to_vector(), add(a, b).to_vector());
  EXPECT_EQ((a * 2.0 - 1.0).to_vector(), (std::vector<double>{1, 3, 5}));
  EXPECT_EQ((a / 2.0).to_vector(), (std::vector<double>{0.5, 1, 1.5}));
  EXPECT_EQ((-a).to_vector(), (std::vector<double>{-1, -2, -3}));
  EXPECT_EQ(rsub(1.0, a).to_vector(), (std::vector<double>{0, -1, -2}));
  EXPECT_EQ(rdiv(6.0, a).to_vector(), (std::vector<double>{6, 3, 2}));
}

TEST(Elementwise, BroadcastRowsMatchTheElementwiseDefinition) {
  // [3,4,1,6] with [4,5,1]: the last dim runs with unit stride on one side and stride 0 on the other, and
  // the other way round; a transposed operand (last dim strided) takes the element loop. Every element
  // against a[i,j,0,l] op b[j,k,0] computed here.
  Tensor a = random_leaf({3, 4, 1, 6}, -2, 2, 40).detach(), b = random_leaf({4, 5, 1}, 0.5, 2, 41).detach();
  std::vector<double> av = a.to_vector(), bv = b.to_vector();
  auto expect_rows = [&](const Tensor& got, bool a_first) {
    ASSERT_EQ(got.shape(), (Shape{3, 4, 5, 6}));
    std::vector<double> g = got.to_vector();
    size_t e = 0;
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j)
        for (int k = 0; k < 5; ++k)
          for (int l = 0; l < 6; ++l, ++e) {
            const double x = av[static_cast<size_t>((i * 4 + j) * 6 + l)],
                         y = bv[static_cast<size_t>(j * 5 + k)];
            ASSERT_EQ(g[e], a_first ? x - y : y - x) << "element " << e;
          }
  };
  expect_rows(sub(a, b), true);
  expect_rows(sub(b, a), false);
  Tensor at = a.transpose(0, 3).contiguous().transpose(0, 3);  // same values, last dim strided
  expect_rows(sub(at, b), true);
}

TEST(Elementwise, GradcheckBinaryOpsWithBroadcasting) {
  // [2,1,4] with [3,1]: both sides broadcast; and a 0-d operand.
  Tensor a = random_leaf({2, 1, 4}, -2, 2, 1), b = random_leaf({3, 1}, 0.5, 2, 2),
         s = random_leaf({}, 0.5, 2, 3);
  std::vector<std::pair<const char*, Fn>> cases = {
      {"add", [](const Inputs& in) { return add(in[0], in[1]); }},
      {"sub", [](const Inputs& in) { return sub(in[0], in[1]); }},
      {"mul", [](const Inputs& in) { return mul(in[0], in[1]); }},
      {"div", [](const Inputs& in) { return div(in[0], in[1]); }},
      {"div_rev", [](const Inputs& in) { return div(in[1], add(mul(in[0], in[0]), 1.0)); }},
  };
  for (auto& [name, f] : cases) {
    SCOPED_TRACE(name);
    EXPECT_GRADCHECK(f, (Inputs{a, b}));
    EXPECT_GRADCHECK(f, (Inputs{a, s}));
  }
}

TEST(Elementwise, GradcheckBinaryOpsNonContiguousAndSameInputTwice) {
  Tensor a = random_leaf({3, 4}, -2, 2, 4), b = random_leaf({4, 3}, 0.5, 2, 5);
  Fn f = [](const Inputs& in) { return div(mul(in[0], in[1].t()), add(in[1].t(), 1.0)); };
  EXPECT_GRADCHECK(f, (Inputs{a, b}));
  // The same tensor feeds both sides (gradients from two edges accumulate); the second side is a strided
  // slice broadcast against the full tensor.
  Fn g = [](const Inputs& in) { return sub(mul(in[0], in[0]), in[0].slice(1, 1, 2)); };
  EXPECT_GRADCHECK(g, (Inputs{a}));
}

TEST(Elementwise, GradcheckScalarOps) {
  Tensor x = random_leaf({2, 3}, 0.5, 2, 6);
  std::vector<std::pair<const char*, Fn>> cases = {
      {"add_scalar", [](const Inputs& in) { return add(in[0], 1.5); }},
      {"mul_scalar", [](const Inputs& in) { return mul(in[0], -2.5); }},
      {"rsub", [](const Inputs& in) { return rsub(3.0, in[0]); }},
      {"rdiv", [](const Inputs& in) { return rdiv(3.0, in[0]); }},
      {"operators", [](const Inputs& in) { return (2.0 * in[0] - 1.0) / 4.0 + in[0] * 3.0; }},
  };
  for (auto& [name, f] : cases) {
    SCOPED_TRACE(name);
    EXPECT_GRADCHECK(f, (Inputs{x}));
  }
}

// ---------------- unary ----------------

TEST(Elementwise, UnaryOpsValuesAndGradients) {
  check_unary(
      "neg", [](const Tensor& t) { return neg(t); }, [](double v) { return -v; }, -2, 2, 10);
  check_unary(
      "exp", [](const Tensor& t) { return exp(t); }, [](double v) { return std::exp(v); }, -2, 2, 11);
  check_unary(
      "log", [](const Tensor& t) { return log(t); }, [](double v) { return std::log(v); }, 0.2, 3, 12);
  check_unary(
      "sqrt", [](const Tensor& t) { return sqrt(t); }, [](double v) { return std::sqrt(v); }, 0.2, 3, 13);
  check_unary(
      "rsqrt", [](const Tensor& t) { return rsqrt(t); }, [](double v) { return 1 / std::sqrt(v); }, 0.2, 3,
      14);
  check_unary(
      "tanh", [](const Tensor& t) { return tanh(t); }, [](double v) { return std::tanh(v); }, -3, 3, 15);
  check_unary(
      "sigmoid", [](const Tensor& t) { return sigmoid(t); }, sigmoid_ref, -4, 4, 16);
  check_unary(
      "gelu", [](const Tensor& t) { return gelu(t); }, gelu_ref, -4, 4, 17);
  check_unary(
      "pow2.5", [](const Tensor& t) { return pow(t, 2.5); }, [](double v) { return std::pow(v, 2.5); }, 0.2,
      2, 18);
  check_unary(
      "pow3", [](const Tensor& t) { return pow(t, 3.0); }, [](double v) { return v * v * v; }, -2, 2, 19);
  check_unary(
      "pow-1", [](const Tensor& t) { return pow(t, -1.0); }, [](double v) { return 1 / v; }, 0.5, 2, 20);
}

TEST(Elementwise, PiecewiseOpsAwayFromTheirKinks) {
  // Finite differences are only meaningful away from kinks: keep |x| >= 0.1 and x away from 6 and the clamp
  // bounds.
  Tensor x = from_vector(std::vector<double>{-3, -1.2, -0.3, 0.25, 0.9, 2.2, 4.7, 5.5, 6.6, 8.1, -0.15, 1.7},
                         {3, 4}, DType::f64)
                 .requires_grad_(true);
  std::vector<double> xv = x.to_vector();
  auto check = [&](const char* name, const std::function<Tensor(const Tensor&)>& op, double (*ref)(double)) {
    SCOPED_TRACE(name);
    std::vector<double> yv = op(x.detach()).to_vector();
    for (size_t i = 0; i < xv.size(); ++i) EXPECT_DOUBLE_EQ(yv[i], ref(xv[i])) << "x = " << xv[i];
    Fn f = [op](const Inputs& in) { return op(in[0].t()); };
    EXPECT_GRADCHECK(f, (Inputs{x}));
  };
  check(
      "abs", [](const Tensor& t) { return abs(t); }, [](double v) { return std::fabs(v); });
  check(
      "relu", [](const Tensor& t) { return relu(t); }, [](double v) { return v > 0 ? v : 0.0; });
  check(
      "relu6", [](const Tensor& t) { return relu6(t); },
      [](double v) { return std::min(std::max(v, 0.0), 6.0); });
  check(
      "clamp", [](const Tensor& t) { return clamp(t, -1.0, 5.0); },
      [](double v) { return std::min(std::max(v, -1.0), 5.0); });
  check(
      "clamp_lo", [](const Tensor& t) { return clamp(t, 0.5, std::nullopt); },
      [](double v) { return std::max(v, 0.5); });
  check(
      "clamp_hi", [](const Tensor& t) { return clamp(t, std::nullopt, 2.0); },
      [](double v) { return std::min(v, 2.0); });
}

TEST(Elementwise, KinkConventionsMatchPyTorch) {
  // PyTorch: relu'(0) = 0, abs'(0) = 0, clamp passes the gradient at its bounds.
  Tensor x = from_vector(std::vector<double>{0.0, -1.0, 5.0}, {3}, DType::f64).requires_grad_(true);
  sum(relu(x)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{0, 0, 1}));
  x.zero_grad();
  sum(abs(x)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{0, -1, 1}));
  x.zero_grad();
  sum(clamp(x, -1.0, 5.0)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{1, 1, 1}));
  x.zero_grad();
  sum(pow(x, 0.0)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{0, 0, 0}));
}

TEST(Elementwise, GeluMatchesPyTorchGolden) {
  auto c = load_golden_json("ops_nn.json").at("cases").at("gelu");
  Tensor x = golden_tensor(c.at("x"), DType::f32);
  EXPECT_LT(max_rel_diff(gelu(x), golden_tensor(c.at("y"), DType::f32)), 1e-5);
}

// ---------------- where, masked_fill, cast ----------------

TEST(Elementwise, WhereAndMaskedFill) {
  Tensor a = random_leaf({3, 4}, -1, 1, 30), b = random_leaf({4}, -1, 1, 31);
  Tensor cond = gt(random_leaf({3, 1}, -1, 1, 32).detach(), 0.0);  // broadcasts over columns
  Tensor w = where(cond, a.detach(), b.detach());
  std::vector<double> cv = cond.to_vector(), av = a.to_vector(), bv = b.to_vector(), wv = w.to_vector();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_EQ(wv[i * 4 + j], cv[i] ? av[i * 4 + j] : bv[j]);
  Fn f = [cond](const Inputs& in) { return where(cond, in[0], in[1]); };
  EXPECT_GRADCHECK(f, (Inputs{a, b}));

  Tensor mask = lt(random_leaf({3, 4}, -1, 1, 33).detach(), 0.0);
  Tensor m = masked_fill(a.detach(), mask, -7.0);
  std::vector<double> mv = mask.to_vector(), filled = m.to_vector();
  for (size_t i = 0; i < filled.size(); ++i) EXPECT_EQ(filled[i], mv[i] ? -7.0 : av[i]);
  Fn g = [mask](const Inputs& in) { return masked_fill(in[0].t().t(), mask, -7.0); };
  EXPECT_GRADCHECK(g, (Inputs{a}));
  EXPECT_TRUE(contains(error_of([&] { where(zeros({3, 4}), a, b); }), "bool"));
}

TEST(Elementwise, CastBetweenF64AndF32IsDifferentiable) {
  Tensor x = random_leaf({2, 3}, -1, 1, 40);
  Tensor y = cast(x, DType::f32);
  EXPECT_EQ(y.dtype(), DType::f32);
  EXPECT_LT(max_rel_diff(y.to(DType::f64), x.detach()), 1e-7);
  // f64 -> f32 -> f64: a linear map, so a coarse step is exact up to f32 rounding of the values.
  Fn f = [](const Inputs& in) { return cast(mul(cast(in[0], DType::f32), 3.0), DType::f64); };
  GradcheckOptions opts;
  opts.eps = 1e-2;
  opts.atol = 1e-4;
  EXPECT_GRADCHECK(f, (Inputs{x}), opts);
  // The gradient reaching an f64 leaf through an f32 cast is f64.
  x.zero_grad();
  sum(cast(x, DType::f32)).backward();
  EXPECT_EQ(x.grad().dtype(), DType::f64);
  EXPECT_EQ(x.grad().to_vector(), std::vector<double>(6, 1.0));
  EXPECT_TRUE(cast(x, DType::f64).same(x));
}

TEST(Elementwise, ErrorsNameTheOpAndShapes) {
  std::string e = error_of([] { add(zeros({2, 3}), zeros({4})); });
  EXPECT_TRUE(contains(e, "add") && contains(e, "[2,3]") && contains(e, "[4]")) << e;
  e = error_of([] { mul(zeros({2}), zeros({2}, DType::f64)); });
  EXPECT_TRUE(contains(e, "mul") && contains(e, "f32") && contains(e, "f64")) << e;
  e = error_of([] { exp(zeros({2}, DType::i64)); });
  EXPECT_TRUE(contains(e, "exp")) << e;
  e = error_of([] { clamp(zeros({2}), 3.0, 1.0); });
  EXPECT_TRUE(contains(e, "clamp")) << e;
}
