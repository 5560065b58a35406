#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/ops.h"
#include "engine/optim/clip_grad.h"
#include "support/golden_json.h"
#include "support/gradcheck.h"

using namespace dgpipe::engine;
using dgpipe::testing::load_golden_json;
using nlohmann::json;

namespace {
Tensor leaf_with_grad(const Shape& shape, const std::vector<double>& grad) {
  Tensor p = zeros(shape);
  p.requires_grad_();
  p.set_grad(from_vector(grad, shape));
  return p;
}
}  // namespace

TEST(ClipGradNorm, MatchesPyTorch) {
  json cases = load_golden_json("optim.json")["clip_grad_norm"];
  ASSERT_EQ(cases.size(), 2u);
  bool clipped_some = false, left_some = false;
  for (const json& c : cases) {
    std::vector<Tensor> params;
    for (size_t i = 0; i < c["shapes"].size(); ++i)
      params.push_back(leaf_with_grad(c["shapes"][i].get<Shape>(), c["grads"][i].get<std::vector<double>>()));
    double max_norm = c["max_norm"];
    double total = clip_grad_norm(params, max_norm);
    EXPECT_NEAR(total, c["total_norm"].get<double>(), 1e-5 * c["total_norm"].get<double>());
    (total > max_norm ? clipped_some : left_some) = true;
    for (size_t i = 0; i < params.size(); ++i) {
      std::vector<double> got = params[i].grad().to_vector();
      std::vector<double> want = c["clipped"][i].get<std::vector<double>>();
      for (size_t k = 0; k < got.size(); ++k)
        EXPECT_NEAR(got[k], want[k], 1e-6 + 1e-6 * std::abs(want[k]))
            << "max_norm " << max_norm << " param " << i;
    }
  }
  EXPECT_TRUE(clipped_some && left_some) << "the goldens should cover both the clipping and the no-op case";
}

TEST(ClipGradNorm, KnownNormsAndSkippedParameters) {
  Tensor a = leaf_with_grad({2}, {3.0, 0.0});
  Tensor b = leaf_with_grad({1}, {-4.0});
  Tensor none = zeros({3});
  none.requires_grad_();  // no gradient: skipped
  EXPECT_DOUBLE_EQ(grad_norm({a, b, none}), 5.0);
  EXPECT_DOUBLE_EQ(grad_norm({a, b}, std::numeric_limits<double>::infinity()), 4.0);
  double total = clip_grad_norm({a, b, none}, 1.0);
  EXPECT_DOUBLE_EQ(total, 5.0);
  double coef = 1.0 / (5.0 + 1e-6);
  EXPECT_NEAR(a.grad().to_vector()[0], 3.0 * coef, 1e-6);
  EXPECT_NEAR(b.grad().to_vector()[0], -4.0 * coef, 1e-6);
  EXPECT_FALSE(none.grad().defined());
  EXPECT_NEAR(grad_norm({a, b}), 1.0, 1e-5);
}

TEST(ClipGradNorm, NonFiniteNormsAreReportedOrRejected) {
  Tensor a = leaf_with_grad({2}, {1.0, std::numeric_limits<double>::quiet_NaN()});
  EXPECT_TRUE(std::isnan(clip_grad_norm({a}, 1.0)));
  Tensor b = leaf_with_grad({2}, {1.0, std::numeric_limits<double>::infinity()});
  try {
    clip_grad_norm({b}, 1.0, 2.0, /*error_if_nonfinite=*/true);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("clip_grad_norm"), std::string::npos) << e.what();
  }
  EXPECT_THROW(clip_grad_norm({b}, 1.0, 1.0), Error);  // only the 2-norm and the max norm
  EXPECT_THROW(clip_grad_norm({b}, -1.0), Error);
}

namespace {
// Gradients of many shapes and dtypes, deterministic in seed, on `device`.
std::vector<Tensor> many_params(uint64_t seed, Device device) {
  Generator gen(seed);
  std::vector<Tensor> params;
  for (int i = 0; i < 12; ++i) {
    Shape shape = i % 3 == 0 ? Shape{17, 5} : i % 3 == 1 ? Shape{33} : Shape{2, 3, 4};
    DType dtype = i % 4 == 3 ? DType::f64 : DType::f32;
    Tensor p = zeros(shape, TensorOptions(dtype, device));
    p.requires_grad_();
    p.set_grad(mul(randn(shape, TensorOptions(dtype, Device::cpu()), &gen), 0.1 * (i + 1)).to(device));
    params.push_back(p);
  }
  return params;
}
}  // namespace

TEST(ClipGradNorm, NormIsTheHostSumOfPerTensorReductions) {
  // What the norm always was: each gradient reduced on its own (in f32, or f64 for f64), accumulated in
  // double in parameter order. The device-side accumulation must give exactly that, not merely close to it.
  std::vector<Tensor> params = many_params(5, Device::cpu());
  double sum_sq = 0.0, max_abs = 0.0;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    sum_sq += sum(mul(g, g)).item();
    max_abs = std::max(max_abs, max(abs(g)).item());
  }
  EXPECT_EQ(grad_norm(params), std::sqrt(sum_sq));
  EXPECT_EQ(grad_norm(params, std::numeric_limits<double>::infinity()), max_abs);
  EXPECT_EQ(grad_norm({}), 0.0);
  // A NaN anywhere makes both norms NaN; an Inf makes them Inf.
  std::vector<double> g(33, 0.5);
  g[7] = std::numeric_limits<double>::quiet_NaN();
  params[4].set_grad(from_vector(g, {33}));
  EXPECT_TRUE(std::isnan(grad_norm(params)));
  EXPECT_TRUE(std::isnan(grad_norm(params, std::numeric_limits<double>::infinity())));
  g[7] = -std::numeric_limits<double>::infinity();
  params[4].set_grad(from_vector(g, {33}));
  EXPECT_EQ(grad_norm(params), std::numeric_limits<double>::infinity());
  EXPECT_EQ(grad_norm(params, std::numeric_limits<double>::infinity()),
            std::numeric_limits<double>::infinity());
}

TEST(ClipGradNorm, CudaMatchesCpu) {
  DGP_SKIP_WITHOUT_CUDA();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<Tensor> cpu = many_params(6, Device::cpu()), gpu = many_params(6, Device::cuda(0));
  const double norm = grad_norm(cpu);
  EXPECT_NEAR(grad_norm(gpu), norm, 1e-6 * norm);
  EXPECT_EQ(grad_norm(gpu, inf), grad_norm(cpu, inf));
  // Gradients on two devices: gathered on the first one's.
  std::vector<Tensor> mixed = many_params(6, Device::cpu());
  for (size_t i = 0; i < mixed.size(); i += 2) mixed[i] = gpu[i];
  EXPECT_NEAR(grad_norm(mixed), norm, 1e-6 * norm);
  EXPECT_NEAR(clip_grad_norm(gpu, 0.5 * norm), norm, 1e-6 * norm);
  EXPECT_EQ(clip_grad_norm(cpu, 0.5 * norm), norm);
  for (size_t i = 0; i < cpu.size(); ++i) {
    std::vector<double> want = cpu[i].grad().to_vector(), got = gpu[i].grad().to_vector();
    for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(got[k], want[k], 1e-6 + 1e-5 * std::abs(want[k]));
  }
  gpu[3].set_grad(full(gpu[3].shape(), std::numeric_limits<double>::quiet_NaN(),
                       TensorOptions(gpu[3].dtype(), Device::cuda(0))));
  EXPECT_TRUE(std::isnan(grad_norm(gpu)));
  EXPECT_TRUE(std::isnan(grad_norm(gpu, inf)));
}
