// max_pool2d / avg_pool2d / adaptive_avg_pool2d: PyTorch goldens, finite-difference gradients (including
// overlapping windows, padding, non-divisible adaptive bins and strided inputs), argmax routing, and errors.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/ops.h"
#include "engine/parallel.h"
#include "support/golden_json.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;

namespace {

// Written by scripts/goldens_conv_pool_bn.py.
const char* const kGoldens = "ops_conv_pool_bn.json";

void expect_golden(const std::string& name,
                   const std::function<Tensor(const Tensor&, const nlohmann::json&)>& op) {
  const nlohmann::json& c = golden_case(kGoldens, name);
  for (DType dt : {DType::f64, DType::f32}) {
    Tensor y = op(golden_tensor(c.at("input"), dt), c.at("params"));
    Tensor expected = golden_tensor(c.at("output"), DType::f64);
    ASSERT_EQ(y.shape(), expected.shape()) << name;
    EXPECT_EQ(y.dtype(), dt);
    EXPECT_LT(max_rel_diff(y, expected), 1e-5) << name << " " << dtype_name(dt);
  }
}

}  // namespace

TEST(Pool, MaxMatchesPyTorch) {
  auto op = [](const Tensor& x, const nlohmann::json& p) {
    return max_pool2d(x, p.at("kernel"), p.at("stride"), p.at("padding"));
  };
  expect_golden("max_pool", op);
  expect_golden("max_pool_k2", op);
}

TEST(Pool, AvgMatchesPyTorch) {
  expect_golden("avg_pool", [](const Tensor& x, const nlohmann::json& p) {
    return avg_pool2d(x, p.at("kernel"), p.at("stride"), p.at("padding"));
  });
}

TEST(Pool, AdaptiveMatchesPyTorch) {
  auto op = [](const Tensor& x, const nlohmann::json& p) {
    return adaptive_avg_pool2d(x, p.at("out_h"), p.at("out_w"));
  };
  expect_golden("adaptive_3x2", op);  // 7 -> 3 and 5 -> 2: overlapping, unequal bins
  expect_golden("adaptive_4x4", op);  // 5 -> 4: upsampling-like overlap
  expect_golden("adaptive_1x1", op);  // global average
}

TEST(Pool, HandComputedValues) {
  Tensor x = from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
                         {1, 1, 4, 4}, DType::f64);
  EXPECT_EQ(max_pool2d(x, 2, 2).to_vector(), (std::vector<double>{6, 8, 14, 16}));
  EXPECT_EQ(avg_pool2d(x, 2, 2).to_vector(), (std::vector<double>{3.5, 5.5, 11.5, 13.5}));
  // count_include_pad: the corner window of a 3x3/pad 1 pool sees 4 real values out of 9.
  EXPECT_DOUBLE_EQ(avg_pool2d(x, 3, 2, 1).to_vector()[0], (1 + 2 + 5 + 6) / 9.0);
  // adaptive 4 -> 3: bins [0,2), [1,3), [2,4).
  EXPECT_DOUBLE_EQ(adaptive_avg_pool2d(x, 3, 3).to_vector()[0], (1 + 2 + 5 + 6) / 4.0);
  // A 3-D [C,H,W] input is a batch of one.
  EXPECT_EQ(max_pool2d(x.select(0, 0), 2, 2).shape(), (Shape{1, 2, 2}));
}

TEST(Pool, MaxGradientGoesToArgmaxAndAccumulates) {
  // Overlapping 2x2 windows with stride 1: the centre 9 is the max of all four windows and gets all
  // gradients.
  Tensor x = from_vector(std::vector<double>{1, 2, 3, 4, 9, 5, 6, 7, 8}, {1, 1, 3, 3}, DType::f64);
  x.requires_grad_(true);
  Tensor y = max_pool2d(x, 2, 1);
  EXPECT_EQ(y.to_vector(), (std::vector<double>{9, 9, 9, 9}));
  y.backward(from_vector(std::vector<double>{1, 2, 3, 4}, {1, 1, 2, 2}, DType::f64));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{0, 0, 0, 0, 10, 0, 0, 0, 0}));
}

namespace {
// The window scan max_pool2d promises, written out: the first maximum in row-major order, a NaN beats
// anything (the last NaN wins). Returns the pooled values and the flat input index each came from.
void reference_max_pool(const std::vector<double>& x, int64_t planes, int64_t H, int64_t W, int64_t k,
                        int64_t s, std::vector<double>& out, std::vector<int64_t>& from) {
  const int64_t Ho = (H - k) / s + 1, Wo = (W - k) / s + 1;
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        double best = -INFINITY;
        int64_t at = p * H * W + oh * s * W + ow * s;
        for (int64_t h = oh * s; h < oh * s + k; ++h)
          for (int64_t w = ow * s; w < ow * s + k; ++w) {
            const double v = x[p * H * W + h * W + w];
            if (v > best || std::isnan(v)) best = v, at = p * H * W + h * W + w;
          }
        out.push_back(best);
        from.push_back(at);
      }
}
}  // namespace

// The 2x2 stride-2 paths (max_pool_2x2_plane, its f32 vector lanes) and the generic window loop keep the same scan order, on
// ties, -inf and NaN, with odd sizes (the last row and column are not pooled), at one and two threads.
TEST(Pool, MaxPicksTheFirstMaximumAndTheLastNaNAtAnyThreadCount) {
  const int64_t N = 3, C = 5, H = 7, W = 37;  // 18 windows a row: two blocks of 8 (f32) and a rest
  Generator gen(11);
  std::vector<double> v = randn({N * C * H * W}, {}, &gen).to_vector();
  for (double& e : v) e = std::round(1.5 * e);  // many ties
  for (size_t i = 0; i < v.size(); i += 13) v[i] = -INFINITY;
  for (size_t i = 5; i < v.size(); i += 29) v[i] = NAN;
  const int threads_before = cpu_threads();
  for (int64_t k : {2, 3}) {
    std::vector<double> expected;
    std::vector<int64_t> from;
    reference_max_pool(v, N * C, H, W, k, 2, expected, from);
    for (int threads : {1, 2}) {
      SCOPED_TRACE("kernel " + std::to_string(k) + ", " + std::to_string(threads) + " threads");
      set_cpu_threads(threads);
      for (DType dt : {DType::f32, DType::f64}) {
        Tensor x = from_vector(v, {N, C, H, W}, dt).requires_grad_(true);
        Tensor y = max_pool2d(x, k, 2);
        // Each output's gradient is its own position + 1, so the input gradient shows where it came from.
        Tensor g = arange(1, y.numel() + 1).to(dt).reshape(y.shape());
        y.backward(g);
        const std::vector<double> got = y.to_vector(), gx = x.grad().to_vector();
        ASSERT_EQ(got.size(), expected.size());
        std::vector<double> expected_gx(v.size(), 0.0);
        for (size_t i = 0; i < from.size(); ++i) expected_gx[from[i]] += static_cast<double>(i + 1);
        for (size_t i = 0; i < got.size(); ++i)
          ASSERT_TRUE(got[i] == expected[i] || (std::isnan(got[i]) && std::isnan(expected[i])))
              << "output " << i << ": " << got[i] << " vs " << expected[i];
        EXPECT_EQ(gx, expected_gx);
      }
    }
  }
  set_cpu_threads(threads_before);
}

TEST(Pool, MaxPropagatesNaN) {
  Tensor x = from_vector(std::vector<double>{1, NAN, 3, 4}, {1, 1, 2, 2}, DType::f64);
  EXPECT_TRUE(std::isnan(max_pool2d(x, 2, 2).item()));
}

namespace {
// Gradchecks `pool` on x at three windows (kernel, stride, padding): overlapping with padding, tiling,
// stride 1.
void expect_pool_gradients(Tensor (*pool)(const Tensor&, int64_t, int64_t, int64_t), const Tensor& x) {
  const int64_t windows[][3] = {{3, 2, 1}, {2, 2, 0}, {3, 1, 1}};
  for (const auto& w : windows) {
    const int64_t k = w[0], s = w[1], p = w[2];
    SCOPED_TRACE("kernel " + std::to_string(k) + " stride " + std::to_string(s) + " padding " +
                 std::to_string(p));
    EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return pool(in[0], k, s, p); },
                     std::vector<Tensor>({x}));
  }
}
}  // namespace

TEST(Pool, GradMax) {
  // Random values are distinct, so every argmax is unique and the function is smooth around the point.
  expect_pool_gradients(max_pool2d, random_leaf({2, 2, 7, 6}, -1, 1, 31));
}

TEST(Pool, GradAvg) {
  expect_pool_gradients(avg_pool2d, random_leaf({2, 2, 7, 6}, -1, 1, 32));
}

TEST(Pool, GradAdaptive) {
  Tensor x = random_leaf({2, 2, 7, 5}, -1, 1, 33);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return adaptive_avg_pool2d(in[0], 3, 2); },
                   std::vector<Tensor>({x}));
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return adaptive_avg_pool2d(in[0], 4, 4); },
                   std::vector<Tensor>({x}));
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return adaptive_avg_pool2d(in[0], 1, 1); },
                   std::vector<Tensor>({x}));
}

TEST(Pool, GradNonContiguousAnd3D) {
  Tensor x_nhwc = random_leaf({2, 6, 5, 3}, -1, 1, 34);
  auto nchw = [](const Tensor& t) { return t.permute({0, 3, 1, 2}); };
  EXPECT_GRADCHECK([nchw](const std::vector<Tensor>& in) { return max_pool2d(nchw(in[0]), 2, 2, 1); },
                   std::vector<Tensor>({x_nhwc}));
  EXPECT_GRADCHECK([nchw](const std::vector<Tensor>& in) { return avg_pool2d(nchw(in[0]), 3, 2, 1); },
                   std::vector<Tensor>({x_nhwc}));
  EXPECT_GRADCHECK([nchw](const std::vector<Tensor>& in) { return adaptive_avg_pool2d(nchw(in[0]), 2, 3); },
                   std::vector<Tensor>({x_nhwc}));
  Tensor big = random_leaf({3, 8, 6}, -1, 1, 35);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return max_pool2d(in[0].slice(1, 0, 8, 2), 2, 1); },
                   std::vector<Tensor>({big}));
}

TEST(Pool, Float16RunsInFloat32) {
  Tensor x = random_leaf({1, 2, 6, 6}, -1, 1, 36).detach();
  Tensor y16 = avg_pool2d(x.to(DType::f16), 2, 2);
  EXPECT_EQ(y16.dtype(), DType::f16);
  EXPECT_LT(max_rel_diff(y16, avg_pool2d(x, 2, 2)), 2e-3);
}

TEST(Pool, ErrorsNameOpAndShapes) {
  Tensor x = zeros({2, 3, 8, 8});
  std::string msg = error_of([&] { max_pool2d(x, 3, 2, 2); });  // padding > kernel/2
  EXPECT_NE(msg.find("max_pool2d"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2,3,8,8]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("padding"), std::string::npos) << msg;
  EXPECT_THROW(max_pool2d(x, 3, 2, 2), Error);

  msg = error_of([&] { avg_pool2d(zeros({1, 1, 2, 2}), 3, 1); });
  EXPECT_NE(msg.find("avg_pool2d"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[1,1,2,2]"), std::string::npos) << msg;

  msg = error_of([&] { avg_pool2d(x, 2, 0); });
  EXPECT_NE(msg.find("stride"), std::string::npos) << msg;

  msg = error_of([&] { max_pool2d(zeros({8, 8}), 2, 2); });
  EXPECT_NE(msg.find("max_pool2d"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[8,8]"), std::string::npos) << msg;

  msg = error_of([&] { adaptive_avg_pool2d(x, 0, 2); });
  EXPECT_NE(msg.find("adaptive_avg_pool2d"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2,3,8,8]"), std::string::npos) << msg;

  msg = error_of([&] { max_pool2d(zeros({1, 1, 4, 4}, DType::i64), 2, 2); });
  EXPECT_NE(msg.find("floating"), std::string::npos) << msg;
}
