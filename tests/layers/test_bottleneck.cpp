// Learned bottlenecks: specs, shapes and names, the conv decoder is a transposed convolution, exact
// gradients, and an autoencoder that can learn (what the first phase of the two-phase recipe relies on).
#include <gtest/gtest.h>

#include "engine/optim/sgd.h"
#include "layers/bottleneck.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe;
using namespace dgpipe::layers;
using dgpipe::testing::contains;
using dgpipe::testing::error_of;
using engine::Shape;
using engine::Tensor;

TEST(Bottleneck, SpecsParseAndNameTheirProblems) {
  EXPECT_EQ(parse_bottleneck_spec("conv:8/2").str(), "conv:8/2");
  EXPECT_EQ(parse_bottleneck_spec("conv:320").stride, 1);
  EXPECT_EQ(parse_bottleneck_spec("linear:64").width, 64);
  EXPECT_EQ(parse_bottleneck_spec("none").kind, BottleneckSpec::Kind::none);
  EXPECT_TRUE(contains(error_of([] { parse_bottleneck_spec("conv:0"); }), "'0' is not a positive integer"));
  EXPECT_TRUE(contains(error_of([] { parse_bottleneck_spec("conv:8/x"); }), "stride S"));
  EXPECT_TRUE(contains(error_of([] { parse_bottleneck_spec("pool:2"); }), "unknown kind 'pool'"));
}

TEST(Bottleneck, ConvShapesNamesAndTraffic) {
  Bottleneck b(parse_bottleneck_spec("conv:8/2"), 32);
  EXPECT_EQ(b.narrow_shape({4, 32, 16, 16}), (Shape{4, 8, 8, 8}));
  Tensor x = engine::randn({4, 32, 16, 16});
  EXPECT_EQ(b.encoder->forward(x, {}).shape(), (Shape{4, 8, 8, 8}));
  EXPECT_EQ(b(x).shape(), x.shape());
  EXPECT_EQ(b.wide_numel(4 * 8 * 8 * 8), x.numel());
  std::vector<std::string> names;
  for (auto& [n, t] : b.state_dict()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"encoder.weight", "encoder.bias", "decoder.0.weight",
                                             "decoder.0.bias"}));
  EXPECT_TRUE(contains(error_of([&] { b.narrow_shape({4, 32, 15, 16}); }), "not divisible by the stride 2"));
  EXPECT_TRUE(contains(error_of([&] { b.narrow_shape({4, 16, 16, 16}); }), "made for 32 channels"));
  EXPECT_TRUE(contains(error_of([&] { b.narrow_shape({4, 128, 32}); }), "image boundary"));
}

TEST(Bottleneck, LinearWorksOnTheLastDim) {
  Bottleneck b(parse_bottleneck_spec("linear:6"), 20);
  Tensor x = engine::randn({2, 5, 20});
  EXPECT_EQ(b.narrow_shape(x.shape()), (Shape{2, 5, 6}));
  EXPECT_EQ(b.encoder->forward(x, {}).shape(), (Shape{2, 5, 6}));
  EXPECT_EQ(b(x).shape(), x.shape());
  EXPECT_EQ(b.wide_numel(60), 200);
  EXPECT_TRUE(contains(error_of([&] { b.narrow_shape({2, 5, 21}); }), "last dim of 20"));
}

TEST(Bottleneck, TheConvDecoderIsATransposedConvolution) {
  // out[n, c, h*S + i, w*S + j] = bias[c*S*S + i*S + j] + sum_k W[c*S*S + i*S + j, k] * z[n, k, h, w]
  const int64_t S = 2, C = 3, Cin = 5;
  Bottleneck b(parse_bottleneck_spec("conv:3/2"), Cin);
  Tensor z = engine::randn({2, C, 3, 4});
  Tensor y = b.decoder->forward(z, {});
  ASSERT_EQ(y.shape(), (Shape{2, Cin, 6, 8}));
  auto& conv = dynamic_cast<Conv2d&>(*dynamic_cast<Sequential&>(*b.decoder)[0]);
  std::vector<double> w = conv.weight.to_vector(), bias = conv.bias.to_vector(), zv = z.to_vector(),
                      yv = y.to_vector();
  double worst = 0;
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < Cin; ++c)
      for (int i = 0; i < S; ++i)
        for (int j = 0; j < S; ++j)
          for (int h = 0; h < 3; ++h)
            for (int v = 0; v < 4; ++v) {
              const int64_t o = c * S * S + i * S + j;
              double want = bias[o];
              for (int k = 0; k < C; ++k) want += w[o * C + k] * zv[((n * C + k) * 3 + h) * 4 + v];
              worst = std::max(worst, std::fabs(want - yv[((n * Cin + c) * 6 + h * S + i) * 8 + v * S + j]));
            }
  EXPECT_LT(worst, 1e-5);
}

TEST(Bottleneck, GradientsAreExact) {
  for (const std::string spec : {"conv:3/2", "conv:2", "linear:3"}) {
    Bottleneck b(parse_bottleneck_spec(spec), 4);
    b.to(engine::DType::f64);
    Shape shape = spec[0] == 'c' ? Shape{2, 4, 4, 2} : Shape{2, 3, 4};
    EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return b(in[0]); },
                     {dgpipe::testing::random_leaf(shape)}, {});
  }
}

TEST(Bottleneck, AnAutoencoderLearnsDataThatFitsTheBottleneck) {
  // 8 channels that are mixtures of 3 sources: a 3-channel 1x1 bottleneck can reconstruct them.
  engine::Generator gen(5);
  Tensor sources = engine::randn({16, 3, 4, 4}, engine::DType::f32, &gen);
  Tensor mix = engine::randn({8, 3}, engine::DType::f32, &gen);
  Tensor x = engine::matmul(mix, sources.permute({1, 0, 2, 3}).reshape({3, -1}))
                 .reshape({8, 16, 4, 4})
                 .permute({1, 0, 2, 3})
                 .contiguous();
  Bottleneck b(parse_bottleneck_spec("conv:3"), 8, &gen);
  engine::SGDOptions o;
  o.lr = 0.05;
  o.momentum = 0.9;
  engine::SGD opt(b.parameters(), o);
  auto mse = [&] { return engine::mean(engine::pow(engine::sub(b(x), x), 2.0)); };
  const double before = mse().item();
  for (int step = 0; step < 300; ++step) {
    Tensor loss = mse();
    loss.backward();
    opt.step();
    opt.zero_grad();
  }
  EXPECT_LT(mse().item(), 0.01 * before);
}
