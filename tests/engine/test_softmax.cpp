#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops.h"
#include "support/golden_json.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;

// ---------------- softmax / log_softmax ----------------

TEST(Softmax, MatchesPyTorchGoldensIncludingHugeLogits) {
  auto c = load_golden_json("ops_nn.json").at("cases").at("softmax");
  Tensor x = golden_tensor(c.at("x"), DType::f32);  // holds entries shifted by +-1000
  EXPECT_LT(max_rel_diff(softmax(x, 1), golden_tensor(c.at("softmax_dim1"), DType::f32)), 1e-5);
  EXPECT_LT(max_rel_diff(softmax(x, -1), golden_tensor(c.at("softmax_dim2"), DType::f32)), 1e-5);
  EXPECT_LT(max_rel_diff(log_softmax(x, 1), golden_tensor(c.at("log_softmax_dim1"), DType::f32)), 1e-5);
  EXPECT_LT(max_rel_diff(log_softmax(x, 2), golden_tensor(c.at("log_softmax_dim2"), DType::f32)), 1e-5);
  EXPECT_TRUE(isfinite_all(log_softmax(x, 1)));
  EXPECT_TRUE(isfinite_all(softmax(x, 2)));
}

TEST(Softmax, RowsSumToOneAlongEveryDim) {
  Tensor x = random_leaf({3, 4, 5}, -3, 3, 1).detach();
  for (int64_t d = 0; d < 3; ++d) {
    for (double v : sum(softmax(x, d), {d}).to_vector()) EXPECT_NEAR(v, 1.0, 1e-12) << "dim " << d;
    for (double v : sum(exp(log_softmax(x, d)), {d}).to_vector()) EXPECT_NEAR(v, 1.0, 1e-12) << "dim " << d;
  }
}

TEST(Softmax, GradcheckEveryDim) {
  for (int64_t d : {0, 1, 2, -1}) {
    Tensor x = random_leaf({3, 4, 5}, -2, 2, 10 + d);
    auto f = [d](const Inputs& in) { return softmax(in[0], d); };
    auto g = [d](const Inputs& in) { return log_softmax(in[0], d); };
    SCOPED_TRACE("dim " + std::to_string(d));
    EXPECT_GRADCHECK(f, (Inputs{x}));
    EXPECT_GRADCHECK(g, (Inputs{x}));
  }
}

TEST(Softmax, GradcheckNonContiguousInput) {
  Tensor leaf = random_leaf({5, 3, 4}, -2, 2, 20);
  auto f = [](const Inputs& in) { return softmax(in[0].permute({2, 0, 1}), 1); };
  auto g = [](const Inputs& in) { return log_softmax(in[0].transpose(0, 2), 2); };
  EXPECT_GRADCHECK(f, (Inputs{leaf}));
  EXPECT_GRADCHECK(g, (Inputs{leaf}));
}

TEST(Softmax, ZeroDimTensorAndErrors) {
  Tensor s = full({}, 3.0, DType::f64);
  EXPECT_DOUBLE_EQ(softmax(s, 0).item(), 1.0);
  EXPECT_DOUBLE_EQ(log_softmax(s, -1).item(), 0.0);
  std::string e = error_of([] { softmax(zeros({2, 3}), 2); });
  EXPECT_TRUE(contains(e, "softmax")) << e;
  e = error_of([] { log_softmax(zeros({2, 3}, DType::i64), 1); });
  EXPECT_TRUE(contains(e, "log_softmax")) << e;
}

// ---------------- cross_entropy ----------------

TEST(CrossEntropy, MatchesPyTorchLossAndGradient) {
  auto cases = load_golden_json("ops_nn.json").at("cases");
  for (const char* name : {"cross_entropy_smooth", "cross_entropy_ignore5"}) {
    auto c = cases.at(name);
    Tensor logits = golden_tensor(c.at("logits"), DType::f32).requires_grad_(true);
    Tensor target = golden_tensor(c.at("target"), DType::i64);
    Tensor loss = cross_entropy(logits, target, c.at("label_smoothing").get<double>(),
                                c.at("ignore_index").get<int64_t>());
    EXPECT_EQ(loss.dim(), 0);
    double expect = c.at("loss").get<double>();
    EXPECT_NEAR(loss.item(), expect, 1e-5 * std::max(1.0, std::fabs(expect))) << name;
    loss.backward();
    EXPECT_LT(max_rel_diff(logits.grad(), golden_tensor(c.at("grad"), DType::f32)), 1e-5) << name;
  }
}

TEST(CrossEntropy, EqualsTheComposedFormula) {
  // loss = mean over kept rows of (1-eps) * nll + eps * mean_c(-log p_c), from log_softmax by hand.
  Tensor logits = random_leaf({6, 5}, -3, 3, 30).detach();
  Tensor target = from_vector(std::vector<int64_t>{4, -1, 0, 2, -1, 1}, {6});
  const double eps = 0.25;
  std::vector<double> lp = log_softmax(logits, 1).to_vector();
  std::vector<double> t = target.to_vector();
  double total = 0;
  int kept = 0;
  for (int i = 0; i < 6; ++i) {
    if (t[i] == -1) continue;
    double nll = -lp[i * 5 + static_cast<int>(t[i])], smooth = 0;
    for (int c = 0; c < 5; ++c) smooth -= lp[i * 5 + c] / 5.0;
    total += (1 - eps) * nll + eps * smooth;
    ++kept;
  }
  EXPECT_NEAR(cross_entropy(logits, target, eps, -1).item(), total / kept, 1e-12);
}

TEST(CrossEntropy, GradcheckWithSmoothingAndIgnoredRows) {
  Tensor logits = random_leaf({5, 4}, -2, 2, 40);
  Tensor target = from_vector(std::vector<int64_t>{3, -100, 0, 1, -100}, {5});
  for (double eps : {0.0, 0.1, 1.0}) {
    auto f = [target, eps](const Inputs& in) { return cross_entropy(in[0], target, eps, -100); };
    SCOPED_TRACE("label_smoothing " + std::to_string(eps));
    EXPECT_GRADCHECK(f, (Inputs{logits}));
  }
}

TEST(CrossEntropy, GradcheckNonContiguousLogitsAndI32Targets) {
  Tensor leaf = random_leaf({4, 6}, -2, 2, 50);  // logits = leaf^T: [6,4], not contiguous
  Tensor target = from_vector(std::vector<int64_t>{0, 3, 2, 2, 1, 3}, {6}).to(DType::i32);
  auto f = [target](const Inputs& in) { return cross_entropy(in[0].t(), target, 0.1, 2); };
  EXPECT_GRADCHECK(f, (Inputs{leaf}));
}

TEST(CrossEntropy, IgnoredRowsGetNoGradient) {
  Tensor logits = random_leaf({3, 4}, -1, 1, 60);
  Tensor target = from_vector(std::vector<int64_t>{1, 7, 2}, {3});
  cross_entropy(logits, target, 0.1, 7).backward();
  std::vector<double> g = logits.grad().to_vector();
  for (int c = 0; c < 4; ++c) EXPECT_EQ(g[4 + c], 0.0);
  // Each kept row's gradient is (p - q) / kept: it sums to zero over classes.
  for (int r : {0, 2}) {
    double s = 0;
    for (int c = 0; c < 4; ++c) s += g[r * 4 + c];
    EXPECT_NEAR(s, 0.0, 1e-12);
  }
}

TEST(CrossEntropy, AllIgnoredGivesZeroLossAndZeroGradient) {
  // PyTorch returns nan here (0/0); the engine documents and returns 0 (see softmax.cpp).
  Tensor logits = random_leaf({3, 4}, -1, 1, 70);
  Tensor target = from_vector(std::vector<int64_t>{-100, -100, -100}, {3});
  Tensor loss = cross_entropy(logits, target, 0.1);
  EXPECT_EQ(loss.item(), 0.0);
  loss.backward();
  for (double v : logits.grad().to_vector()) EXPECT_EQ(v, 0.0);
}

TEST(CrossEntropy, HugeLogitsStayFinite) {
  Tensor logits = from_vector(std::vector<float>{1000.f, 0.f, -1000.f, 3000.f, 3001.f, 2999.f}, {2, 3});
  Tensor target = from_vector(std::vector<int64_t>{2, 1}, {2});
  double loss = cross_entropy(logits, target).item();
  EXPECT_TRUE(std::isfinite(loss));
  // row 0: -log p_2 = 2000; row 1: -log softmax(0,1,-1)_1
  double row1 = std::log(std::exp(-1.0) + 1.0 + std::exp(-2.0));
  EXPECT_NEAR(loss, (2000.0 + row1) / 2.0, 1e-3);
}

TEST(CrossEntropy, OutOfRangeTargetErrorNamesOpIndexAndClassCount) {
  Tensor logits = zeros({3, 5});
  std::string e = error_of([&] { cross_entropy(logits, from_vector(std::vector<int64_t>{0, 5, 1}, {3})); });
  EXPECT_TRUE(contains(e, "cross_entropy")) << e;
  EXPECT_TRUE(contains(e, "target 5")) << e;
  EXPECT_TRUE(contains(e, "position 1")) << e;
  EXPECT_TRUE(contains(e, "5 classes")) << e;
  e = error_of([&] { cross_entropy(logits, from_vector(std::vector<int64_t>{0, 1, -3}, {3})); });
  EXPECT_TRUE(contains(e, "target -3")) << e;
  e = error_of([&] { cross_entropy(logits, from_vector(std::vector<int64_t>{0, 1}, {2})); });
  EXPECT_TRUE(contains(e, "cross_entropy") && contains(e, "[3,5]")) << e;
  EXPECT_THROW(cross_entropy(logits, zeros({3})), Error);                                     // float target
  EXPECT_THROW(cross_entropy(zeros({3}), from_vector(std::vector<int64_t>{0}, {1})), Error);  // 1-D logits
  EXPECT_THROW(cross_entropy(logits, from_vector(std::vector<int64_t>{0, 1, 2}, {3}), 1.5), Error);
}

TEST(Softmax, HalfInputsComputeInFloatOnCpu) {
  Tensor x = random_leaf({4, 6}, -3, 3, 80).detach().to(DType::f32);
  Tensor y16 = softmax(x.to(DType::f16), 1);
  EXPECT_EQ(y16.dtype(), DType::f16);
  EXPECT_LT(max_rel_diff(y16.to(DType::f32), softmax(x, 1)), 2e-3);
  Tensor logits16 = x.to(DType::bf16).requires_grad_(true);
  Tensor target = from_vector(std::vector<int64_t>{0, 5, 2, 3}, {4});
  Tensor loss = cross_entropy(logits16, target, 0.1);
  EXPECT_EQ(loss.dtype(), DType::bf16);
  EXPECT_NEAR(loss.item(), cross_entropy(logits16.detach().to(DType::f32), target, 0.1).item(), 2e-2);
  loss.backward();
  EXPECT_EQ(logits16.grad().dtype(), DType::bf16);
}
