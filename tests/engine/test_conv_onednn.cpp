// The oneDNN CPU convolution against the reference kernels (im2col + GEMM): forward, input gradient and
// weight and bias gradients on a table of shapes (strides, padding, kernel sizes, bias, batch sizes, odd
// sizes, groups, dilation); that oneDNN really runs them (no silent fallback); bitwise-repeatable results at
// a fixed thread count; the backend switch.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/ops/conv_onednn.h"
#include "engine/parallel.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;

namespace {

#define SKIP_WITHOUT_ONEDNN() \
  if (!onednn_built()) GTEST_SKIP() << "this build has no oneDNN (DGPIPE_WITH_ONEDNN=OFF)"

struct ConvCase {
  std::string name;
  int64_t N, C, H, W, O, k, stride, pad;
  bool bias;
  int64_t groups = 1, dilation = 1;
};

void PrintTo(const ConvCase& c, std::ostream* os) {
  *os << c.name;
}

Conv2dParams params_of(const ConvCase& c) {
  Conv2dParams p;
  p.stride_h = p.stride_w = c.stride;
  p.pad_h = p.pad_w = c.pad;
  p.dilation_h = p.dilation_w = c.dilation;
  p.groups = c.groups;
  return p;
}

// The output and every gradient of sum(conv2d(x, w, b) * probe), in f32.
std::vector<Tensor> results(const ConvCase& c) {
  Generator gen(17);
  const TensorOptions f32(DType::f32);
  Tensor x = randn({c.N, c.C, c.H, c.W}, f32, &gen).requires_grad_(true);
  Tensor w = mul(randn({c.O, c.C / c.groups, c.k, c.k}, f32, &gen), 0.3).detach().requires_grad_(true);
  Tensor b = c.bias ? randn({c.O}, f32, &gen).requires_grad_(true) : Tensor();
  Tensor y = conv2d(x, w, b, params_of(c));
  Tensor probe = randn(y.shape(), f32, &gen);
  sum(mul(y, probe)).backward();
  std::vector<Tensor> r = {y.detach(), x.grad(), w.grad()};
  if (c.bias) r.push_back(b.grad());
  return r;
}

// ResNet18's, VGG11-BN's and MobileNetV2's shapes in small: 3x3 stride 1 and 2, 1x1 (stride 1 reads the input
// directly in the reference), the 7x7 stem, deep layers at 4x4 and 2x2, odd sizes, padding 0, groups,
// dilation.
const std::vector<ConvCase> kCases = {
    {"3x3_pad1_bias_batch1", 1, 3, 7, 7, 4, 3, 1, 1, true},
    {"3x3_stride2_odd_sizes", 2, 3, 9, 11, 5, 3, 2, 1, false},
    {"3x3_pad0_bias", 2, 4, 10, 10, 6, 3, 1, 0, true},
    {"3x3_blocked_channels_stride2", 2, 32, 6, 6, 48, 3, 2, 1, false},
    {"3x3_deep_4x4", 3, 16, 4, 4, 32, 3, 1, 1, false},
    {"3x3_deep_2x2_bias", 1, 16, 2, 2, 16, 3, 1, 1, true},
    {"1x1_pointwise", 3, 8, 8, 8, 16, 1, 1, 0, false},
    {"1x1_stride2_odd_bias", 2, 8, 9, 9, 16, 1, 2, 0, true},
    {"7x7_stem_stride2_pad3", 2, 3, 23, 21, 8, 7, 2, 3, true},
    {"3x3_groups2", 2, 8, 7, 7, 12, 3, 1, 1, true, 2},
    {"3x3_dilation2", 2, 4, 9, 9, 6, 3, 1, 2, false, 1, 2},
};

}  // namespace

class OnednnMatchesReference : public ::testing::TestWithParam<ConvCase> {};

TEST_P(OnednnMatchesReference, ForwardAndGradients) {
  SKIP_WITHOUT_ONEDNN();
  const ConvCase& c = GetParam();
  std::vector<Tensor> ref, dnn;
  {
    CpuConvBackendScope backend(CpuConvBackend::reference);
    ref = results(c);
  }
  {
    CpuConvBackendScope backend(CpuConvBackend::onednn);
    dnn = results(c);
  }
  const char* what[] = {"output", "input gradient", "weight gradient", "bias gradient"};
  ASSERT_EQ(ref.size(), dnn.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_EQ(dnn[i].shape(), ref[i].shape()) << what[i];
    // Sums of up to a few hundred f32 products in another order: differences of a few ulps of the sum.
    EXPECT_LT(max_rel_diff(dnn[i], ref[i]), 1e-4) << c.name << ": " << what[i];
  }
}

TEST_P(OnednnMatchesReference, RunsOnOnednnWithoutFallback) {
  SKIP_WITHOUT_ONEDNN();
  const ConvCase& c = GetParam();
  ConvGeometry g;
  g.p = params_of(c);
  g.N = c.N, g.C = c.C, g.H = c.H, g.W = c.W, g.O = c.O, g.kh = g.kw = c.k;
  g.Cg = c.C / c.groups, g.Og = c.O / c.groups;
  const int64_t span = c.dilation * (c.k - 1) + 1;
  g.Ho = (c.H + 2 * c.pad - span) / c.stride + 1;
  g.Wo = (c.W + 2 * c.pad - span) / c.stride + 1;
  std::vector<float> x(g.N * g.C * g.H * g.W, 1.f), w(g.O * g.K(), 1.f), b(g.O, 0.f),
      y(g.N * g.O * g.Ho * g.Wo, 0.f);
  EXPECT_TRUE(onednn::conv_forward(x.data(), w.data(), c.bias ? b.data() : nullptr, y.data(), g)) << c.name;
  EXPECT_TRUE(onednn::conv_backward_data(y.data(), w.data(), x.data(), g)) << c.name;
  EXPECT_TRUE(onednn::conv_backward_weights(y.data(), x.data(), w.data(), g)) << c.name;
}

INSTANTIATE_TEST_SUITE_P(Shapes, OnednnMatchesReference, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<ConvCase>& info) { return info.param.name; });

TEST(OnednnConv, BitwiseRepeatableAtAFixedThreadCount) {
  SKIP_WITHOUT_ONEDNN();
  CpuConvBackendScope backend(CpuConvBackend::onednn);
  const ConvCase c = {"repeat", 4, 16, 12, 12, 32, 3, 1, 1, true};
  for (int threads : {1, 2}) {
    ThreadsScope scope(threads);
    const std::vector<Tensor> first = results(c), second = results(c);
    for (size_t i = 0; i < first.size(); ++i)
      EXPECT_EQ(first[i].to_vector(), second[i].to_vector())
          << "result " << i << ", " << threads << " threads";
  }
}

TEST(OnednnConv, F64StaysOnTheReferenceKernels) {
  SKIP_WITHOUT_ONEDNN();
  // oneDNN has no f64 convolution: f64 under the onednn backend is the reference result, bit for bit.
  Tensor x = random_leaf({2, 3, 6, 6}, -1, 1, 3).detach(), w = random_leaf({4, 3, 3, 3}, -1, 1, 4).detach();
  Conv2dParams p;
  p.pad_h = p.pad_w = 1;
  Tensor ref, dnn;
  {
    CpuConvBackendScope backend(CpuConvBackend::reference);
    ref = conv2d(x, w, Tensor(), p);
  }
  {
    CpuConvBackendScope backend(CpuConvBackend::onednn);
    dnn = conv2d(x, w, Tensor(), p);
  }
  EXPECT_EQ(dnn.to_vector(), ref.to_vector());
}

TEST(CpuConvBackendSwitch, SetsAndNames) {
  const CpuConvBackend old = cpu_conv_backend();
  set_cpu_conv_backend(CpuConvBackend::reference);
  EXPECT_EQ(cpu_conv_backend(), CpuConvBackend::reference);
  EXPECT_STREQ(cpu_conv_backend_name(CpuConvBackend::reference), "reference");
  EXPECT_STREQ(cpu_conv_backend_name(CpuConvBackend::onednn), "onednn");
  if (onednn_built()) {
    set_cpu_conv_backend(CpuConvBackend::onednn);
    EXPECT_EQ(cpu_conv_backend(), CpuConvBackend::onednn);
  } else {
    const std::string msg = error_of([] { set_cpu_conv_backend(CpuConvBackend::onednn); });
    EXPECT_NE(msg.find("no oneDNN"), std::string::npos) << msg;
  }
  set_cpu_conv_backend(old);
}

// The environment switch both CPU backends read (DGPIPE_CPU_CONV, DGPIPE_CPU_GEMM), on a variable of its own.
TEST(CpuConvBackendSwitch, EnvironmentChoiceAndItsErrors) {
  const char* var = "DGPIPE_TEST_BACKEND_CHOICE";
  unsetenv(var);
  EXPECT_EQ(onednn_chosen_by(var, "reference"), onednn_built());
  setenv(var, "reference", 1);
  EXPECT_FALSE(onednn_chosen_by(var, "reference"));
  setenv(var, "onednn", 1);
  if (onednn_built()) {
    EXPECT_TRUE(onednn_chosen_by(var, "reference"));
  } else {
    EXPECT_NE(dgpipe::testing::error_of([&] { onednn_chosen_by(var, "reference"); }).find("no oneDNN"),
              std::string::npos);
  }
  setenv(var, "bogus", 1);
  const std::string msg = dgpipe::testing::error_of([&] { onednn_chosen_by(var, "openblas"); });
  EXPECT_NE(msg.find("DGPIPE_TEST_BACKEND_CHOICE must be 'openblas' or 'onednn', got 'bogus'"), std::string::npos)
      << msg;
  unsetenv(var);
}
