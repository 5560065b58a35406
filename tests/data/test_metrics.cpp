#include "data/metrics.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/error.h"

using namespace dgpipe::data;
using dgpipe::engine::Error;
using V = std::vector<int64_t>;

TEST(Metrics, BinaryMatchesScikitLearn) {
  const V pred = {1, 1, 0, 1, 0, 0, 1, 1, 0, 1}, label = {1, 0, 0, 1, 1, 0, 1, 1, 0, 0};
  // TP 4, FP 2, FN 1, TN 3.
  EXPECT_DOUBLE_EQ(accuracy(pred, label), 0.7);
  EXPECT_NEAR(matthews_corrcoef(pred, label), 0.408248290463863, 1e-12);  // sklearn.metrics.matthews_corrcoef
  EXPECT_NEAR((4.0 * 3 - 2.0 * 1) / std::sqrt(6.0 * 5 * 5 * 4), 0.408248290463863,
              1e-12);  // the binary formula
  EXPECT_NEAR(f1_score(pred, label), 0.7272727272727273, 1e-12);
  EXPECT_NEAR(f1_score(pred, label, 0), 2.0 * 3 / (2 * 3 + 1 + 2), 1e-12);
}

TEST(Metrics, MulticlassAndDegenerateCases) {
  const V pred = {0, 1, 2, 2, 1, 0, 2, 1, 1, 0, 2, 2}, label = {0, 1, 2, 1, 1, 0, 2, 0, 1, 2, 2, 1};
  EXPECT_NEAR(matthews_corrcoef(pred, label), 0.5, 1e-12);         // sklearn
  EXPECT_DOUBLE_EQ(matthews_corrcoef({1, 1, 1}, {0, 1, 0}), 0.0);  // constant prediction: undefined -> 0
  EXPECT_DOUBLE_EQ(matthews_corrcoef({0, 1, 0, 1}, {0, 1, 0, 1}), 1.0);
  EXPECT_DOUBLE_EQ(matthews_corrcoef({1, 0, 1, 0}, {0, 1, 0, 1}), -1.0);
  EXPECT_DOUBLE_EQ(f1_score({0, 0}, {0, 0}), 0.0);
  EXPECT_THROW(accuracy({1, 2}, {1}), Error);
  EXPECT_THROW(f1_score({}, {}), Error);
}

TEST(Metrics, ArgmaxRows) {
  const auto scores =
      dgpipe::engine::from_vector(std::vector<float>{0.1f, 0.7f, 0.2f, 3.f, -1.f, 2.f}, {2, 3});
  EXPECT_EQ(argmax_rows(scores), (V{1, 0}));
  EXPECT_THROW(argmax_rows(dgpipe::engine::zeros({3})), Error);
}
