// conv2d: forward values against PyTorch goldens, finite-difference gradients for every input and every code
// path (im2col+GEMM, 1x1 without im2col, depthwise direct loop), strided inputs, and error messages.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/ops.h"
#include "engine/ops/conv_kernels.h"
#include "support/golden_json.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;

namespace {

// Written by scripts/goldens_conv_pool_bn.py.
const char* const kGoldens = "ops_conv_pool_bn.json";

Conv2dParams params(int64_t stride, int64_t pad, int64_t dilation = 1, int64_t groups = 1) {
  Conv2dParams p;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  p.dilation_h = p.dilation_w = dilation;
  p.groups = groups;
  return p;
}

}  // namespace

class ConvGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ConvGolden, MatchesPyTorch) {
  const nlohmann::json& c = golden_case(kGoldens, GetParam());
  const nlohmann::json& pj = c.at("params");
  Conv2dParams p;
  p.stride_h = pj.at("stride")[0], p.stride_w = pj.at("stride")[1];
  p.pad_h = pj.at("padding")[0], p.pad_w = pj.at("padding")[1];
  p.dilation_h = pj.at("dilation")[0], p.dilation_w = pj.at("dilation")[1];
  p.groups = pj.at("groups");
  for (DType dt : {DType::f64, DType::f32}) {
    Tensor b = c.contains("bias") ? golden_tensor(c.at("bias"), dt) : Tensor();
    Tensor y = conv2d(golden_tensor(c.at("input"), dt), golden_tensor(c.at("weight"), dt), b, p);
    Tensor expected = golden_tensor(c.at("output"), DType::f64);
    ASSERT_EQ(y.shape(), expected.shape()) << GetParam();
    EXPECT_LT(max_rel_diff(y, expected), 1e-5) << GetParam() << " " << dtype_name(dt);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, ConvGolden,
                         ::testing::Values("conv_groups_dilation", "conv_depthwise", "conv_pointwise",
                                           "conv_3x3"));

TEST(Conv2d, HandComputedValue) {
  // 1 channel 3x3 input, 2x2 all-ones kernel, no padding: each output is the sum of a 2x2 block, plus bias.
  Tensor x = from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3}, DType::f64);
  Tensor w = ones({1, 1, 2, 2}, DType::f64);
  Tensor b = full({1}, 0.5, DType::f64);
  EXPECT_EQ(conv2d(x, w, b, params(1, 0)).to_vector(), (std::vector<double>{12.5, 16.5, 24.5, 28.5}));
}

TEST(Conv2d, GradBasic3x3Padded) {
  Tensor x = random_leaf({2, 3, 5, 4}, -1, 1, 1), w = random_leaf({4, 3, 3, 3}, -1, 1, 2),
         b = random_leaf({4}, -1, 1, 3);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], params(1, 1)); },
                   std::vector<Tensor>({x, w, b}));
}

TEST(Conv2d, GradStride2Padding) {
  Tensor x = random_leaf({2, 2, 7, 6}, -1, 1, 4), w = random_leaf({3, 2, 3, 3}, -1, 1, 5),
         b = random_leaf({3}, -1, 1, 6);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], params(2, 1)); },
                   std::vector<Tensor>({x, w, b}));
}

TEST(Conv2d, GradDilation2) {
  Tensor x = random_leaf({1, 2, 7, 7}, -1, 1, 7), w = random_leaf({3, 2, 3, 3}, -1, 1, 8);
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], Tensor(), params(1, 2, 2)); },
      std::vector<Tensor>({x, w}));
}

TEST(Conv2d, GradGroups2WithAsymmetricParams) {
  Tensor x = random_leaf({2, 4, 7, 6}, -1, 1, 9), w = random_leaf({6, 2, 3, 2}, -1, 1, 10),
         b = random_leaf({6}, -1, 1, 11);
  Conv2dParams p;
  p.stride_h = 2, p.stride_w = 1, p.pad_h = 1, p.pad_w = 2, p.dilation_h = 1, p.dilation_w = 2, p.groups = 2;
  EXPECT_GRADCHECK([p](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], p); },
                   std::vector<Tensor>({x, w, b}));
}

TEST(Conv2d, GradDepthwise) {
  Tensor x = random_leaf({2, 3, 6, 5}, -1, 1, 12), w = random_leaf({3, 1, 3, 3}, -1, 1, 13),
         b = random_leaf({3}, -1, 1, 14);
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], params(1, 1, 1, 3)); },
      std::vector<Tensor>({x, w, b}));
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], params(2, 1, 1, 3)); },
      std::vector<Tensor>({x, w, b}));
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], params(1, 2, 2, 3)); },
      std::vector<Tensor>({x, w, b}));
}

TEST(Conv2d, GradDepthwiseChannelMultiplier) {
  Tensor x = random_leaf({1, 2, 5, 5}, -1, 1, 15), w = random_leaf({4, 1, 3, 3}, -1, 1, 16);
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], Tensor(), params(2, 1, 1, 2)); },
      std::vector<Tensor>({x, w}));
}

TEST(Conv2d, GradPointwise) {
  // 1x1 stride 1 reads the input directly (no im2col); 1x1 stride 2 goes through im2col.
  Tensor x = random_leaf({2, 3, 4, 3}, -1, 1, 17), w = random_leaf({5, 3, 1, 1}, -1, 1, 18),
         b = random_leaf({5}, -1, 1, 19);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], params(1, 0)); },
                   std::vector<Tensor>({x, w, b}));
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], params(2, 0)); },
                   std::vector<Tensor>({x, w, b}));
}

TEST(Conv2d, GradNonContiguousInputs) {
  // A channels-last leaf seen as NCHW through permute, and a weight seen through a transpose of its kh/kw
  // dims.
  Tensor x_nhwc = random_leaf({2, 5, 4, 3}, -1, 1, 20), w_t = random_leaf({4, 3, 3, 2}, -1, 1, 21);
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) {
        Tensor x = in[0].permute({0, 3, 1, 2});
        Tensor w = in[1].transpose(2, 3);
        EXPECT_FALSE(x.is_contiguous());
        EXPECT_FALSE(w.is_contiguous());
        return conv2d(x, w, Tensor(), params(1, 1));
      },
      std::vector<Tensor>({x_nhwc, w_t}));
  // A strided slice of a larger input (every other row, a channel window).
  Tensor big = random_leaf({2, 5, 9, 4}, -1, 1, 22), w = random_leaf({2, 3, 2, 2}, -1, 1, 23);
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) {
        return conv2d(in[0].slice(1, 1, 4).slice(2, 0, 9, 2), in[1], Tensor(), params(1, 0));
      },
      std::vector<Tensor>({big, w}));
}

TEST(Conv2d, GradOnlyForRequestedInputs) {
  Tensor x = random_leaf({1, 2, 4, 4}, -1, 1, 24);
  Tensor w_const = random_leaf({3, 2, 3, 3}, -1, 1, 25).detach();
  EXPECT_GRADCHECK(
      [w_const](const std::vector<Tensor>& in) { return conv2d(in[0], w_const, Tensor(), params(1, 1)); },
      std::vector<Tensor>({x}));
  Tensor x_const = random_leaf({1, 2, 4, 4}, -1, 1, 26).detach();
  Tensor w = random_leaf({3, 2, 3, 3}, -1, 1, 27);
  EXPECT_GRADCHECK(
      [x_const](const std::vector<Tensor>& in) { return conv2d(x_const, in[0], Tensor(), params(1, 1)); },
      std::vector<Tensor>({w}));
  Tensor y = conv2d(x_const, w.detach(), Tensor(), params(1, 1));
  EXPECT_FALSE(y.requires_grad());
}

TEST(Conv2d, Float32MatchesFloat64) {
  Tensor x = random_leaf({2, 4, 8, 8}, -1, 1, 28).detach(), w = random_leaf({6, 2, 3, 3}, -1, 1, 29).detach();
  Conv2dParams p = params(2, 1, 1, 2);
  Tensor y64 = conv2d(x, w, Tensor(), p);
  Tensor y32 = conv2d(x.to(DType::f32), w.to(DType::f32), Tensor(), p);
  EXPECT_EQ(y32.dtype(), DType::f32);
  EXPECT_LT(max_rel_diff(y32, y64), 1e-5);
  Tensor y16 = conv2d(x.to(DType::f16), w.to(DType::f16), Tensor(), p);  // computed in f32 on the CPU
  EXPECT_EQ(y16.dtype(), DType::f16);
  EXPECT_LT(max_rel_diff(y16, y64), 2e-2);
}

TEST(Conv2d, ErrorsNameOpAndShapes) {
  Tensor x = zeros({2, 3, 8, 8}), w = zeros({8, 4, 3, 3});
  std::string msg = error_of([&] { conv2d(x, w, Tensor(), params(1, 1)); });
  EXPECT_NE(msg.find("conv2d"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2,3,8,8]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[8,4,3,3]"), std::string::npos) << msg;
  EXPECT_THROW(conv2d(x, w, Tensor(), params(1, 1)), Error);

  Tensor w_ok = zeros({8, 3, 3, 3});
  msg = error_of([&] { conv2d(x, w_ok, zeros({7}), params(1, 1)); });
  EXPECT_NE(msg.find("bias"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[7]"), std::string::npos) << msg;

  msg = error_of([&] { conv2d(x, zeros({8, 1, 3, 3}), Tensor(), params(1, 1, 1, 2)); });  // 3 % 2 != 0
  EXPECT_NE(msg.find("groups"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2,3,8,8]"), std::string::npos) << msg;

  msg = error_of([&] { conv2d(zeros({1, 3, 2, 2}), w_ok, Tensor(), params(1, 0)); });  // kernel > input
  EXPECT_NE(msg.find("larger than the padded input"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[1,3,2,2]"), std::string::npos) << msg;

  msg = error_of([&] { conv2d(zeros({3, 8, 8}), w_ok, Tensor(), params(1, 1)); });
  EXPECT_NE(msg.find("4-D input"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3,8,8]"), std::string::npos) << msg;

  msg = error_of([&] { conv2d(x, w_ok.to(DType::f64), Tensor(), params(1, 1)); });
  EXPECT_NE(msg.find("dtype"), std::string::npos) << msg;

  msg = error_of([&] { conv2d(x, w_ok, Tensor(), params(0, 1)); });
  EXPECT_NE(msg.find("stride"), std::string::npos) << msg;
  msg = error_of([&] { conv2d(x, w_ok, Tensor(), params(1, -1)); });
  EXPECT_NE(msg.find("padding"), std::string::npos) << msg;
  msg = error_of([&] { conv2d(x, w_ok, Tensor(), params(1, 1, 0)); });
  EXPECT_NE(msg.find("dilation"), std::string::npos) << msg;
}

// How the CUDA convolution settles on a cuDNN algorithm (conv_kernels.h): the heuristic's candidates in rank
// order until one runs; the reasons of those that did not are kept for the error.
TEST(ConvAlgorithmChoice, TriesCandidatesInOrderUntilOneRuns) {
  const std::vector<int> candidates = {6, 1, 0, 7};
  std::vector<int> tried;
  std::string failures;
  const int ran = dgpipe::engine::try_in_order(
      candidates,
      [&](int algo) -> std::string {
        tried.push_back(algo);
        return algo == 0 ? "" : "algorithm " + std::to_string(algo) + ": not supported";
      },
      failures);
  EXPECT_EQ(ran, 2);
  EXPECT_EQ(tried, (std::vector<int>{6, 1, 0}));
  EXPECT_EQ(failures, "algorithm 6: not supported; algorithm 1: not supported");
}

TEST(ConvAlgorithmChoice, ReportsWhenNoCandidateRuns) {
  std::string failures;
  EXPECT_EQ(dgpipe::engine::try_in_order(
                std::vector<int>{3, 4}, [](int algo) { return "algorithm " + std::to_string(algo) + ": no"; },
                failures),
            -1);
  EXPECT_EQ(failures, "algorithm 3: no; algorithm 4: no");
  failures.clear();
  EXPECT_EQ(dgpipe::engine::try_in_order(
                std::vector<int>{}, [](int) { return std::string(); }, failures),
            -1);
  EXPECT_TRUE(failures.empty());
}
