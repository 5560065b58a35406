// Autocast policy, precision parsing and fp32 master weights (engine/amp.h). Runs on the CPU (f16/bf16
// storage there is computed in f32); the CUDA variant of the autocast step runs when a device exists.
#include <gtest/gtest.h>

#include "engine/amp.h"
#include "engine/ops.h"
#include "support/gradcheck.h"

using namespace dgpipe::engine;

TEST(Amp, ParsesPrecisions) {
  EXPECT_EQ(amp::parse_precision("mixed"), amp::Precision::mixed);
  EXPECT_EQ(amp::compute_dtype(amp::parse_precision("mixed-bf16")), DType::bf16);
  EXPECT_TRUE(amp::needs_loss_scaling(amp::Precision::mixed));
  EXPECT_FALSE(amp::needs_loss_scaling(amp::Precision::mixed_bf16));
  EXPECT_THROW(amp::parse_precision("fp8"), Error);
}

TEST(Amp, PolicyCastsGemmsDownAndReductionsUp) {
  Tensor x = ones({2, 3});
  EXPECT_EQ(amp::autocast(x, "matmul").dtype(), DType::f32) << "autocast is off by default";
  {
    amp::AutocastGuard ac(true, DType::bf16);
    EXPECT_TRUE(amp::autocast_enabled());
    EXPECT_EQ(amp::autocast(x, "matmul").dtype(), DType::bf16);
    EXPECT_EQ(amp::autocast(x, "conv2d").dtype(), DType::bf16);
    Tensor h = x.to(DType::bf16);
    EXPECT_EQ(amp::autocast(h, "softmax").dtype(), DType::f32);
    EXPECT_EQ(amp::autocast(h, "relu").dtype(), DType::bf16) << "keep-policy ops leave the dtype alone";
    EXPECT_EQ(amp::autocast(x.to(DType::f64), "matmul").dtype(), DType::f64)
        << "the f64 oracle is never lowered";
    EXPECT_EQ(amp::autocast(arange(0, 3), "matmul").dtype(), DType::i64);
  }
  EXPECT_FALSE(amp::autocast_enabled());
  EXPECT_THROW(amp::AutocastGuard(true, DType::f32), Error);
}

// A linear layer under autocast: the output is low precision, the weight's gradient is fp32 (master weights).
void check_autocast_linear(Device device) {
  Generator g(4);
  Tensor w = randn({3, 5}, TensorOptions(DType::f32, device), &g).requires_grad_(true);
  Tensor x = randn({4, 5}, TensorOptions(DType::f32, device), &g);
  Tensor ref = linear(x, w);
  amp::AutocastGuard ac(true, DType::f16);
  Tensor y = linear(amp::autocast(x, "linear"), amp::autocast(w, "linear"));
  EXPECT_EQ(y.dtype(), DType::f16);
  EXPECT_LE(dgpipe::testing::max_rel_diff(y.to(DType::f32).to(Device::cpu()), ref.detach().to(Device::cpu())),
            1e-2);
  Tensor loss = sum(amp::autocast(y, "sum"));
  EXPECT_EQ(loss.dtype(), DType::f32);
  loss.backward();
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().dtype(), DType::f32);
}

TEST(Amp, AutocastLinearCpu) {
  check_autocast_linear(Device::cpu());
}

TEST(Amp, AutocastLinearCuda) {
  DGP_SKIP_WITHOUT_CUDA();
  check_autocast_linear(Device::cuda(0));
}

TEST(Amp, MasterWeightsRoundTrip) {
  Tensor p = full({4}, 1.0, DType::f16).requires_grad_(true);
  amp::MasterWeights mw({p});
  ASSERT_EQ(mw.master()[0].dtype(), DType::f32);
  sum(mul(p, 2.0)).backward();
  mw.copy_grads_to_master();
  EXPECT_EQ(mw.master()[0].grad().dtype(), DType::f32);
  EXPECT_EQ(mw.master()[0].grad().to_vector()[0], 2.0);
  {
    NoGradGuard ng;
    Tensor m = mw.master()[0].detach();
    m.fill_(0.25);
  }
  mw.copy_master_to_model();
  EXPECT_EQ(p.to_vector()[3], 0.25);
}
