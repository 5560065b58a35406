// Autocast policy, precision parsing and fp32 master weights (engine/amp.h). Runs on the CPU (f16/bf16
// storage there is computed in f32); the CUDA variant of the autocast step runs when a device exists.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>

#include "engine/amp.h"
#include "engine/ops.h"
#include "engine/optim/sgd.h"
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

TEST(Amp, PromoteWidensToTheCommonFloatingType) {
  Tensor h = ones({2}, DType::f16), b = ones({2}, DType::bf16), f = ones({2}), d = ones({2}, DType::f64);
  EXPECT_EQ(amp::promote(h, f).first.dtype(), DType::f32);
  EXPECT_EQ(amp::promote(f, h).second.dtype(), DType::f32);
  EXPECT_EQ(amp::promote(h, b).first.dtype(), DType::f32) << "two half types meet in f32";
  EXPECT_EQ(amp::promote(f, d).first.dtype(), DType::f64);
  EXPECT_TRUE(amp::promote(h, h).first.same(h));
}

TEST(Amp, PrecisionTable) {
  using amp::Precision;
  EXPECT_EQ(amp::storage_dtype(Precision::fp16), DType::f16);
  EXPECT_EQ(amp::storage_dtype(Precision::bf16), DType::bf16);
  EXPECT_EQ(amp::storage_dtype(Precision::mixed), DType::f32);
  EXPECT_TRUE(amp::uses_master_weights(Precision::bf16));
  EXPECT_FALSE(amp::uses_master_weights(Precision::mixed));
  EXPECT_TRUE(amp::needs_loss_scaling(Precision::fp16));
  EXPECT_FALSE(amp::needs_loss_scaling(Precision::bf16));
  for (Precision p :
       {Precision::fp32, Precision::fp16, Precision::bf16, Precision::mixed, Precision::mixed_bf16})
    EXPECT_EQ(amp::parse_precision(amp::precision_name(p)), p);
  amp::AutocastGuard ac(Precision::mixed_bf16);
  EXPECT_TRUE(amp::autocast_enabled());
  EXPECT_EQ(amp::autocast_dtype(), DType::bf16);
  {
    amp::AutocastGuard off(Precision::fp16);
    EXPECT_FALSE(amp::autocast_enabled()) << "pure half precision runs without autocast";
  }
  EXPECT_TRUE(amp::autocast_enabled());
}

TEST(Amp, MasterWeightsAliasFp32Parameters) {
  Tensor h = full({2}, 1.5, DType::f16).requires_grad_(true);
  Tensor f = full({2}, 2.0).requires_grad_(true);  // a normalisation layer's parameter stays fp32
  amp::MasterWeights mw({h, f});
  EXPECT_TRUE(mw.has_copy(0));
  EXPECT_FALSE(mw.has_copy(1));
  EXPECT_TRUE(mw.master()[1].same(f)) << "an f32 parameter is its own master";
}

namespace {

// Two half parameters and one f32 parameter (a norm scale) updated by SGD(lr 1) through a PrecisionStep.
struct HalfStage {
  Tensor w = full({3}, 1.0, DType::f16).requires_grad_(true);
  Tensor v = full({2}, -2.0, DType::f16).requires_grad_(true);
  Tensor s = full({2}, 0.5).requires_grad_(true);
  std::unique_ptr<amp::PrecisionStep> ps;
  std::unique_ptr<SGD> opt;
  explicit HalfStage(amp::Precision p, LossScalerOptions so = {}, Device device = Device::cpu()) {
    for (Tensor* t : {&w, &v, &s}) *t = t->detach().to(device).requires_grad_(true);
    ps = std::make_unique<amp::PrecisionStep>(p, std::vector<Tensor>{w, v, s}, so);
    SGDOptions o;
    o.lr = 1.0;
    opt = std::make_unique<SGD>(ps->optimizer_params(), o);
  }
  // Backward of scale * (g . params) with per-parameter coefficients, as if a loss produced them.
  void backward(double gw, double gv, double gs) {
    Tensor loss =
        add(add(sum(mul(cast(w, DType::f32), gw)), sum(mul(cast(v, DType::f32), gv))), sum(mul(s, gs)));
    ps->scale_loss(loss).backward();
  }
  std::vector<double> values() const {
    std::vector<double> out;
    for (const Tensor& t : {w, v, s})
      for (double x : t.to_vector()) out.push_back(x);
    return out;
  }
};

}  // namespace

TEST(Amp, PrecisionStepUpdatesMastersAndRoundsIntoTheModel) {
  HalfStage st(amp::Precision::fp16);
  ASSERT_EQ(st.ps->optimizer_params()[0].dtype(), DType::f32);
  EXPECT_TRUE(st.ps->optimizer_params()[2].same(st.s));
  st.backward(1e-4, 0.25, 1.0);
  EXPECT_EQ(st.w.grad().dtype(), DType::f16);
  EXPECT_DOUBLE_EQ(st.w.grad().to_vector()[0],
                   static_cast<double>(half_bits_to_float(float_to_half_bits(1e-4f * 65536.0f))));
  EXPECT_TRUE(st.ps->unscale(st.opt.get()));
  EXPECT_TRUE(st.ps->step(st.opt.get(), true));
  // The master moved by the unscaled gradient in f32; the model holds it rounded to f16.
  const float master_w = st.ps->optimizer_params()[0].to_vector()[0];
  EXPECT_NEAR(master_w, 1.0 - 1e-4, 1e-7);
  EXPECT_EQ(st.w.to_vector()[0], half_bits_to_float(float_to_half_bits(master_w)));
  EXPECT_EQ(st.v.to_vector()[0], -2.25);
  EXPECT_EQ(st.s.to_vector()[0], -0.5);
  EXPECT_FALSE(st.w.grad().defined()) << "the step drops the model's half gradients";
  EXPECT_FALSE(st.ps->optimizer_params()[0].grad().defined());
}

// The acceptance test of dynamic loss scaling: an inf in one gradient skips exactly that step (no parameter,
// master or optimizer state changes) and halves the scale; the scale doubles after growth_interval good
// steps.
TEST(Amp, InjectedInfSkipsExactlyThatStepAndHalvesTheScale) {
  LossScalerOptions so;
  so.init_scale = 1024.0;
  so.growth_interval = 3;
  HalfStage st(amp::Precision::fp16, so);
  auto iteration = [&](bool inject_inf) {
    st.backward(0.5, 0.25, 1.0);
    if (inject_inf) {
      NoGradGuard ng;
      Tensor g = st.v.grad();
      g.select(0, 1).fill_(std::numeric_limits<double>::infinity());
    }
    const bool finite = st.ps->unscale(st.opt.get());
    EXPECT_EQ(finite, !inject_inf);
    return st.ps->step(st.opt.get(), finite);
  };
  EXPECT_TRUE(iteration(false));
  EXPECT_TRUE(iteration(false));
  const std::vector<double> before = st.values();
  const Tensor master_before = st.ps->optimizer_params()[0].detach().clone();
  const int64_t steps_before = st.opt->step_count();
  EXPECT_FALSE(iteration(true));
  EXPECT_EQ(st.values(), before) << "a skipped step changes no parameter";
  EXPECT_EQ(st.ps->optimizer_params()[0].to_vector(), master_before.to_vector());
  EXPECT_EQ(st.opt->step_count(), steps_before);
  EXPECT_EQ(st.ps->loss_scale(), 512.0);
  EXPECT_EQ(st.ps->scaler().skipped_steps(), 1);
  EXPECT_FALSE(st.v.grad().defined()) << "the skipped step's gradients are dropped";
  EXPECT_TRUE(iteration(false));
  EXPECT_TRUE(iteration(false));
  EXPECT_EQ(st.ps->loss_scale(), 512.0);
  EXPECT_TRUE(iteration(false));
  EXPECT_EQ(st.ps->loss_scale(), 1024.0) << "grows after growth_interval good steps";
  EXPECT_NE(st.values(), before);
}

// A pipeline stage whose gradients are finite must not step when another stage's are not.
TEST(Amp, AStageSkipsWhenAnotherStageFoundInf) {
  for (amp::Precision p : {amp::Precision::fp16, amp::Precision::mixed}) {
    LossScalerOptions so;
    so.init_scale = 256.0;
    HalfStage st(p, so);
    st.backward(0.5, 0.25, 1.0);
    EXPECT_TRUE(st.ps->unscale(st.opt.get()));
    const std::vector<double> before = st.values();
    EXPECT_FALSE(st.ps->step(st.opt.get(), /*all_finite=*/false));
    EXPECT_EQ(st.values(), before);
    EXPECT_EQ(st.ps->loss_scale(), 128.0);
  }
}

TEST(Amp, Bf16RunsWithoutLossScaling) {
  HalfStage st(amp::Precision::bf16);
  EXPECT_EQ(st.w.dtype(), DType::f16) << "(the test stage is f16; bf16 only changes the scaler here)";
  EXPECT_FALSE(st.ps->scaler().enabled());
  st.backward(0.5, 0.25, 1.0);
  EXPECT_EQ(st.w.grad().to_vector()[0], 0.5) << "no scale applied";
  EXPECT_TRUE(st.ps->unscale(st.opt.get()));
  EXPECT_TRUE(st.ps->step(st.opt.get(), true));
  EXPECT_EQ(st.w.to_vector()[0], 0.5);
}

// Resuming from state_dict() continues bit for bit: the scale, the growth count and the fp32 masters (which
// the half model alone cannot restore) come back.
TEST(Amp, PrecisionStateRoundTripResumesExactly) {
  LossScalerOptions so;
  so.init_scale = 64.0;
  so.growth_interval = 2;
  HalfStage a(amp::Precision::fp16, so);
  auto iterate = [](HalfStage& st, int n) {
    for (int i = 0; i < n; ++i) {
      st.backward(1e-3 * (i + 1), 0.37, 0.011);
      st.ps->step(st.opt.get(), st.ps->unscale(st.opt.get()));
    }
  };
  iterate(a, 3);
  std::map<std::string, Tensor> saved;
  for (auto& [k, t] : a.ps->state_dict()) saved[k] = t.clone();
  EXPECT_TRUE(saved.count("master.0") && saved.count("master.1") && !saved.count("master.2"));
  std::map<std::string, Tensor> opt_saved;
  for (auto& [k, t] : a.opt->state_dict()) opt_saved[k] = t.clone();
  HalfStage b(amp::Precision::fp16, so);
  b.ps->load_state_dict(saved);
  b.opt->load_state_dict(opt_saved);
  {
    NoGradGuard ng;
    b.s.copy_(a.s);  // the f32 parameter lives in the model's own state
  }
  EXPECT_EQ(b.ps->loss_scale(), a.ps->loss_scale());
  iterate(a, 3);
  iterate(b, 3);
  EXPECT_EQ(a.values(), b.values());
  EXPECT_EQ(a.ps->optimizer_params()[0].to_vector(), b.ps->optimizer_params()[0].to_vector());
  EXPECT_EQ(a.ps->loss_scale(), b.ps->loss_scale());
  EXPECT_THROW(b.ps->load_state_dict({{"scale", full({}, 1.0, DType::f64)}}), Error);
}

// A pipeline stage without parameters still scales its loss and follows the scale of the others.
TEST(Amp, AStageWithoutParametersFollowsTheScale) {
  LossScalerOptions so;
  so.init_scale = 32.0;
  so.growth_interval = 1;
  amp::PrecisionStep ps(amp::Precision::mixed, {}, so);
  EXPECT_TRUE(ps.unscale(nullptr));
  EXPECT_TRUE(ps.step(nullptr, true));
  EXPECT_EQ(ps.loss_scale(), 64.0);
  EXPECT_TRUE(ps.unscale(nullptr));
  EXPECT_FALSE(ps.step(nullptr, false));
  EXPECT_EQ(ps.loss_scale(), 32.0);
  EXPECT_EQ(ps.scale_loss(full({}, 2.0, DType::f16)).item(), 64.0);
  EXPECT_EQ(ps.scale_loss(full({}, 2.0, DType::f16)).dtype(), DType::f32);
}

// The CUDA twin of the precision step: the same iterations on a device (masters, scaled half gradients, an
// injected inf, the skip and the scale) end where the CPU's do.
TEST(Amp, PrecisionStepOnCudaFollowsTheCpuTwin) {
  DGP_SKIP_WITHOUT_CUDA();
  LossScalerOptions so;
  so.init_scale = 1024.0;
  so.growth_interval = 2;
  for (amp::Precision p : {amp::Precision::fp16, amp::Precision::bf16}) {
    SCOPED_TRACE(amp::precision_name(p));
    HalfStage cpu(p, so), cuda(p, so, Device::cuda(0));
    for (HalfStage* st : {&cpu, &cuda})
      for (int i = 0; i < 5; ++i) {
        st->backward(1e-3 * (i + 1), 0.37, 0.011);
        if (i == 2) {
          NoGradGuard ng;
          Tensor g = st->v.grad();
          g.fill_(std::numeric_limits<double>::infinity());
        }
        st->ps->step(st->opt.get(), st->ps->unscale(st->opt.get()));
      }
    const std::vector<double> a = cpu.values(), b = cuda.values();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-6 * std::fabs(a[i]) + 1e-9) << i;
    EXPECT_EQ(cuda.ps->loss_scale(), cpu.ps->loss_scale());
    EXPECT_EQ(cuda.ps->scaler().skipped_steps(), cpu.ps->scaler().skipped_steps());
  }
}
