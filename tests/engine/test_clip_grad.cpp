#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/ops.h"
#include "engine/optim/clip_grad.h"
#include "support/golden_json.h"

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
