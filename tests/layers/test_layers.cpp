#include <gtest/gtest.h>

#include <cmath>

#include "engine/amp.h"
#include "layers/init.h"
#include "layers/layers.h"
#include "support/gradcheck.h"

using namespace dgpipe;
using namespace dgpipe::layers;
using engine::Tensor;

TEST(Layers, LinearInitBoundsAndForward) {
  Linear l(50, 20);
  double bound = 1.0 / std::sqrt(50.0);
  EXPECT_LE(engine::max(engine::abs(l.weight)).item(), bound);
  EXPECT_GT(engine::max(engine::abs(l.weight)).item(), 0.9 * bound);  // uniform fills the range
  EXPECT_LE(engine::max(engine::abs(l.bias)).item(), bound);
  Tensor x = engine::randn({3, 7, 50});
  Tensor y = l(x);
  EXPECT_EQ(y.shape(), (engine::Shape{3, 7, 20}));
  EXPECT_LT(dgpipe::testing::max_rel_diff(y, engine::matmul(x, l.weight.t()) + l.bias), 1e-5);
  EXPECT_THROW(l(engine::randn({2, 49})), engine::Error);
}

TEST(Layers, Conv2dShapesAndInit) {
  Conv2dOptions o;
  o.kernel = 3;
  o.stride = 2;
  o.padding = 1;
  o.groups = 2;
  Conv2d c(4, 6, o);
  EXPECT_EQ(c.weight.shape(), (engine::Shape{6, 2, 3, 3}));
  EXPECT_EQ(init::fan_in(c.weight), 18);
  EXPECT_LE(engine::max(engine::abs(c.weight)).item(), 1.0 / std::sqrt(18.0));
  EXPECT_EQ(c(engine::randn({2, 4, 9, 9})).shape(), (engine::Shape{2, 6, 5, 5}));
  o.groups = 3;
  EXPECT_THROW(Conv2d(4, 6, o), engine::Error);
}

TEST(Layers, BatchNormTrainUpdatesRunningStatsEvalUsesThem) {
  BatchNorm2d bn(3);
  Tensor x = engine::add(engine::mul(engine::randn({8, 3, 4, 4}), 2.0), 1.0);
  bn.train();
  Tensor y = bn(x);
  // batch statistics: each channel of y has mean 0 and biased variance ~1
  for (double m : engine::mean(y, {0, 2, 3}).to_vector()) EXPECT_NEAR(m, 0.0, 1e-5);
  std::vector<double> batch_mean = engine::mean(x, {0, 2, 3}).to_vector();
  std::vector<double> batch_var = engine::var(x, {0, 2, 3}, 1).to_vector();  // unbiased for running_var
  std::vector<double> rm = bn.running_mean.to_vector(), rv = bn.running_var.to_vector();
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(rm[c], 0.1 * batch_mean[c], 1e-5);
    EXPECT_NEAR(rv[c], 0.9 + 0.1 * batch_var[c], 1e-5);
  }
  EXPECT_EQ(bn.num_batches_tracked.item(), 1.0);
  bn.eval();
  Tensor ye = bn(x);
  EXPECT_EQ(bn.num_batches_tracked.item(), 1.0);  // eval changes nothing
  EXPECT_EQ(bn.running_mean.to_vector(), rm);
  Tensor expect =
      (x - bn.running_mean.view({1, 3, 1, 1})) / engine::sqrt(bn.running_var.view({1, 3, 1, 1}) + 1e-5);
  EXPECT_LT(dgpipe::testing::max_rel_diff(ye, expect), 1e-5);
}

TEST(Layers, DropoutOffInEvalScaledInTrain) {
  Dropout d(0.25);
  Tensor x = engine::ones({10000});
  d.eval();
  EXPECT_TRUE(d(x).same(x));
  d.train();
  std::vector<double> y = d(x).to_vector();
  int zeros = 0;
  for (double v : y) {
    if (v == 0.0)
      ++zeros;
    else
      EXPECT_NEAR(v, 1.0 / 0.75, 1e-6);
  }
  EXPECT_NEAR(zeros / 10000.0, 0.25, 0.02);
  EXPECT_THROW(Dropout(1.0), engine::Error);
}

TEST(Layers, EmbeddingPaddingRowIsZeroAndGetsNoGradient) {
  Embedding e(10, 4, /*padding_idx=*/1);
  EXPECT_EQ(engine::sum(engine::abs(e.weight.select(0, 1))).item(), 0.0);
  Tensor ids = engine::from_vector(std::vector<int64_t>{1, 3, 1, 3}, {2, 2});
  engine::sum(e(ids)).backward();
  EXPECT_EQ(engine::sum(engine::abs(e.weight.grad().select(0, 1))).item(), 0.0);
  EXPECT_EQ(e.weight.grad().select(0, 3).to_vector(), (std::vector<double>{2, 2, 2, 2}));
}

TEST(Layers, LayerNormNormalisesLastDim) {
  LayerNorm ln(6, 1e-12);
  Tensor y = ln(engine::add(engine::mul(engine::randn({4, 6}), 3.0), 5.0));
  for (double m : engine::mean(y, {1}).to_vector()) EXPECT_NEAR(m, 0.0, 1e-5);
  for (double v : engine::var(y, {1}, 0).to_vector()) EXPECT_NEAR(v, 1.0, 1e-4);
  EXPECT_THROW(ln(engine::randn({4, 5})), engine::Error);
}

TEST(Layers, ActivationsPoolingAndContainers) {
  Tensor x = engine::from_vector(std::vector<float>{-1, 0.5, 7, 3}, {1, 1, 2, 2});
  EXPECT_EQ((*ReLU())(x).to_vector(), (std::vector<double>{0, 0.5, 7, 3}));
  EXPECT_EQ((*ReLU6())(x).to_vector(), (std::vector<double>{0, 0.5, 6, 3}));
  EXPECT_NEAR((*Tanh())(x).to_vector()[1], std::tanh(0.5), 1e-6);
  EXPECT_NEAR((*GELU())(x).to_vector()[0], -1 * 0.5 * (1 + std::erf(-1 / std::sqrt(2.0))), 1e-6);
  EXPECT_EQ((*MaxPool2d(2, 2))(x).to_vector(), std::vector<double>{7});
  EXPECT_EQ((*AvgPool2d(2, 2))(x).to_vector(), std::vector<double>{2.375});
  EXPECT_EQ((*AdaptiveAvgPool2d(1))(x).to_vector(), std::vector<double>{2.375});
  Sequential seq({ReLU(), std::make_shared<Flatten>()});
  EXPECT_EQ(seq(x).shape(), (engine::Shape{1, 4}));
  EXPECT_EQ(seq.children()[1].first, "1");
}

TEST(BatchNorm2dDeferred, TwoMicroBatchesEqualOneFullBatch) {
  // Running statistics from two deferred micro-batches equal those of one BatchNorm call on the whole
  // mini-batch; each micro-batch is still normalised with its own statistics.
  dgpipe::engine::Generator gen(21);
  Tensor x =
      dgpipe::engine::add(dgpipe::engine::mul(dgpipe::engine::randn({8, 3, 4, 4}, {}, &gen), 2.0), 0.5);
  dgpipe::layers::BatchNorm2d full(3), deferred(3);
  full.train();
  deferred.train();
  deferred.set_deferred(true);
  full(x);
  auto halves = dgpipe::engine::chunk(x, 2, 0);
  Tensor y0 = deferred(halves[0]);
  Tensor running_before = deferred.running_mean.clone();
  deferred(halves[1]);
  EXPECT_EQ(deferred.running_mean.to_vector(), running_before.to_vector()) << "untouched until commit";
  deferred.commit_deferred();
  auto a = full.running_mean.to_vector(), b = deferred.running_mean.to_vector();
  auto av = full.running_var.to_vector(), bv = deferred.running_var.to_vector();
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(a[c], b[c], 1e-6);
    EXPECT_NEAR(av[c], bv[c], 1e-5);
  }
  EXPECT_EQ(deferred.num_batches_tracked.item(), 1.0);
  // the micro-batch output is normalised by its own statistics
  dgpipe::layers::BatchNorm2d plain(3);
  plain.train();
  EXPECT_EQ(plain(halves[0]).to_vector(), y0.to_vector());
}

TEST(Layers, PixelShuffleMovesChannelsIntoTheMap) {
  // [1, 2*3*3, 2, 2] -> [1, 2, 6, 6]: input channel c*9 + i*3 + j at (h, w) lands at (c, 3h + i, 3w + j).
  Tensor x = engine::arange(0, 72).to(engine::DType::f32).reshape({1, 18, 2, 2});
  PixelShuffle ps(3);
  Tensor y = ps(x);
  ASSERT_EQ(y.shape(), (engine::Shape{1, 2, 6, 6}));
  std::vector<double> xv = x.to_vector(), yv = y.to_vector();
  for (int c = 0; c < 2; ++c)
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j)
        for (int h = 0; h < 2; ++h)
          for (int w = 0; w < 2; ++w)
            EXPECT_EQ(yv[(c * 6 + 3 * h + i) * 6 + 3 * w + j], xv[((c * 9 + i * 3 + j) * 2 + h) * 2 + w]);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return ps(in[0]); },
                   {dgpipe::testing::random_leaf({2, 18, 3, 2})}, {});
  EXPECT_THROW(ps(engine::randn({1, 10, 2, 2})), engine::Error);  // 10 channels are not a multiple of 9
}

// ---- precision rules (layers.h): GEMMs under autocast in half, norms in fp32, half models cast their input
// --

TEST(LayersPrecision, GemmLayersRunInHalfUnderAutocastWithFp32Gradients) {
  Linear l(6, 4);
  Conv2dOptions o;
  o.padding = 1;
  Conv2d c(3, 5, o);
  Tensor x = engine::randn({2, 6});
  Tensor img = engine::randn({2, 3, 6, 6});
  Tensor ref_l = l(x), ref_c = c(img);
  engine::amp::AutocastGuard ac(true, engine::DType::bf16);
  Tensor y = l(x), z = c(img);
  EXPECT_EQ(y.dtype(), engine::DType::bf16);
  EXPECT_EQ(z.dtype(), engine::DType::bf16);
  EXPECT_LT(dgpipe::testing::max_rel_diff(engine::cast(y, engine::DType::f32).detach(), ref_l.detach()),
            2e-2);
  EXPECT_LT(dgpipe::testing::max_rel_diff(engine::cast(z, engine::DType::f32).detach(), ref_c.detach()),
            2e-2);
  engine::sum(engine::cast(y, engine::DType::f32)).backward();
  engine::sum(engine::cast(z, engine::DType::f32)).backward();
  EXPECT_EQ(l.weight.grad().dtype(), engine::DType::f32) << "the fp32 parameter gets an fp32 gradient";
  EXPECT_EQ(c.bias.grad().dtype(), engine::DType::f32);
}

TEST(LayersPrecision, NormsComputeInFp32AndReturnTheirInputDtype) {
  BatchNorm2d bn(3);
  LayerNorm ln(5);
  Tensor img = engine::randn({4, 3, 2, 2}).to(engine::DType::f16);
  Tensor seq = engine::randn({2, 5}).to(engine::DType::f16);
  Tensor y = bn(img);
  EXPECT_EQ(y.dtype(), engine::DType::f16) << "batch norm keeps a CNN's half activations half";
  EXPECT_EQ(bn.running_mean.dtype(), engine::DType::f32);
  Tensor ref = engine::batch_norm2d(img.to(engine::DType::f32), engine::ones({3}), engine::zeros({3}),
                                    Tensor(), Tensor(), true, 0.1, 1e-5);
  EXPECT_EQ(y.to_vector(), ref.to(engine::DType::f16).to_vector()) << "fp32 statistics, output rounded once";
  EXPECT_EQ(ln(seq).dtype(), engine::DType::f16);
  engine::amp::AutocastGuard ac(true, engine::DType::f16);
  EXPECT_EQ(ln(seq).dtype(), engine::DType::f32) << "layer norm runs in fp32 under autocast, as PyTorch's";
  EXPECT_EQ(bn(img).dtype(), engine::DType::f16);
}

TEST(LayersPrecision, HalfModelKeepsNormsFp32AndCastsItsInput) {
  Sequential m({std::make_shared<Conv2d>(3, 4, Conv2dOptions{}), std::make_shared<BatchNorm2d>(4), ReLU()});
  m.to_half_precision(engine::DType::bf16);
  auto named = m.state_dict();
  for (auto& [name, t] : named) {
    if (name.rfind("1.", 0) == 0 && name != "1.num_batches_tracked") {
      EXPECT_EQ(t.dtype(), engine::DType::f32) << name << ": batch norm keeps fp32 parameters and statistics";
    }
    if (name.rfind("0.", 0) == 0) {
      EXPECT_EQ(t.dtype(), engine::DType::bf16) << name;
    }
  }
  Tensor y = m(engine::randn({2, 3, 5, 5}));
  EXPECT_EQ(y.dtype(), engine::DType::bf16) << "the f32 input was cast at the first layer";
  EXPECT_THROW(m.to_half_precision(engine::DType::f32), engine::Error);
}

// The CUDA twin of the precision rules: a conv-BN-ReLU-linear stack under autocast (f16 and bf16) and stored
// in bf16 gives the CPU twin's outputs and parameter gradients within half-precision rounding.
TEST(LayersPrecision, CudaFollowsTheCpuTwin) {
  DGP_SKIP_WITHOUT_CUDA();
  struct Case {
    const char* name;
    bool autocast;
    engine::DType dtype;
  };
  for (const Case& k :
       {Case{"mixed f16", true, engine::DType::f16}, Case{"mixed bf16", true, engine::DType::bf16},
        Case{"bf16 model", false, engine::DType::bf16}}) {
    SCOPED_TRACE(k.name);
    auto build = [&](engine::Device device) {
      engine::Generator gen(21);
      Conv2dOptions o;
      o.padding = 1;
      auto m = std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
          std::make_shared<Conv2d>(3, 6, o, &gen), std::make_shared<BatchNorm2d>(6), ReLU(),
          std::make_shared<Flatten>(), std::make_shared<Linear>(6 * 5 * 5, 4, true, &gen)});
      m->to(device);
      if (!k.autocast) m->to_half_precision(k.dtype);
      return m;
    };
    auto run = [&](engine::Device device) {
      auto m = build(device);
      engine::Generator gen(8);
      Tensor x = engine::randn({4, 3, 5, 5}, {}, &gen).to(device);
      engine::amp::AutocastGuard ac(k.autocast, k.dtype);
      Tensor y = engine::cast((*m)(x), engine::DType::f32);
      engine::sum(engine::mul(y, y)).backward();
      std::vector<Tensor> out = {y.detach().to(engine::Device::cpu())};
      for (auto& p : m->parameters())
        out.push_back(p.grad().to(engine::Device::cpu()).to(engine::DType::f32));
      return out;
    };
    const std::vector<Tensor> cpu = run(engine::Device::cpu()), cuda = run(engine::Device::cuda(0));
    ASSERT_EQ(cpu.size(), cuda.size());
    auto relative_l2 = [](const Tensor& a, const Tensor& b) {
      const double num = engine::sum(engine::mul(engine::sub(a, b), engine::sub(a, b))).item();
      return std::sqrt(num / std::max(engine::sum(engine::mul(b, b)).item(), 1e-30));
    };
    const double tol = k.dtype == engine::DType::f16 ? 1e-2 : 4e-2;
    for (size_t i = 0; i < cpu.size(); ++i)
      EXPECT_LT(relative_l2(cuda[i], cpu[i]), tol) << (i == 0 ? "output" : "gradient ") << i;
  }
}
