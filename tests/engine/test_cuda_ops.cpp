// Every CUDA op against its CPU twin on random inputs: forward values and the gradients of every input, for
// several shapes (odd sizes, non-contiguous views made inside the op lambda), and f16/bf16 variants against
// fp32 with tolerances. Skipped, with a message, when no CUDA device is present.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <memory>

#include "engine/cuda.h"
#include "engine/ops.h"
#include "engine/optim/adamw.h"
#include "engine/optim/sgd.h"
#include "support/gradcheck.h"

using namespace dgpipe::engine;
using dgpipe::testing::max_rel_diff;
using Inputs = std::vector<Tensor>;
using OpFn = std::function<Tensor(const Inputs&)>;

namespace {

Tensor rnd(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Generator g(seed);
  return add(mul(rand(s, DType::f32, &g), hi - lo), lo);
}

struct Run {
  Tensor out;
  std::vector<Tensor> grads;
};

// Runs f on copies of inputs placed on `device` in `dtype` (floating inputs only; others keep their dtype),
// and back-propagates sum(out * direction). Gradients come back as f32 CPU tensors.
Run run_on(const OpFn& f, const Inputs& inputs, Device device, DType dtype, const Tensor& direction,
           bool backward) {
  Inputs xs;
  for (const Tensor& x : inputs) {
    Tensor t = x.detach();
    if (is_floating(t.dtype())) t = t.to(dtype);
    t = t.to(device).detach();
    if (backward && is_floating(t.dtype())) t.requires_grad_(true);
    xs.push_back(t);
  }
  Run r;
  r.out = f(xs);
  if (backward) {
    Tensor w = direction.to(r.out.dtype()).to(device);
    sum(mul(r.out, w)).backward();
    for (const Tensor& x : xs)
      r.grads.push_back(x.requires_grad() && x.grad().defined() ? x.grad().to(Device::cpu()).to(DType::f32)
                                                                : Tensor());
  }
  r.out = r.out.detach().to(Device::cpu());
  if (is_floating(r.out.dtype())) r.out = r.out.to(DType::f32);
  return r;
}

// CPU f32 (the oracle) against CUDA in `dtype`.
void expect_twin(const std::string& name, const OpFn& f, const Inputs& inputs, double tol = 1e-4,
                 DType dtype = DType::f32, bool backward = true) {
  SCOPED_TRACE(name + " (" + dtype_name(dtype) + ")");
  Run cpu = run_on(f, inputs, Device::cpu(), DType::f32, Tensor(), false);
  Tensor direction = rnd(cpu.out.shape(), 99);
  if (backward && is_floating(cpu.out.dtype()))
    cpu = run_on(f, inputs, Device::cpu(), DType::f32, direction, true);
  bool bw = backward && is_floating(cpu.out.dtype());
  Run gpu = run_on(f, inputs, Device::cuda(0), dtype, direction, bw);
  ASSERT_EQ(gpu.out.shape(), cpu.out.shape());
  EXPECT_LE(max_rel_diff(gpu.out, cpu.out), tol) << "forward mismatch";
  for (size_t i = 0; i < gpu.grads.size(); ++i) {
    if (!cpu.grads[i].defined()) continue;
    ASSERT_TRUE(gpu.grads[i].defined()) << "input " << i << " got no gradient on cuda";
    EXPECT_LE(max_rel_diff(gpu.grads[i], cpu.grads[i]), tol * 4) << "gradient of input " << i;
  }
}

double tol_for(DType t) {
  return t == DType::f16 ? 2e-2 : (t == DType::bf16 ? 8e-2 : 1e-4);
}

}  // namespace

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override { DGP_SKIP_WITHOUT_CUDA(); }
};

TEST_F(CudaOps, ElementwiseBinaryWithBroadcastAndViews) {
  for (Shape s : {Shape{7}, Shape{3, 5}, Shape{2, 3, 33}, Shape{1025}}) {
    Shape row = {s.back()};
    expect_twin("add", [](const Inputs& x) { return add(x[0], x[1]); }, {rnd(s, 1), rnd(s, 2)});
    expect_twin("sub bcast", [](const Inputs& x) { return sub(x[0], x[1]); }, {rnd(s, 3), rnd(row, 4)});
    expect_twin("mul bcast", [](const Inputs& x) { return mul(x[1], x[0]); }, {rnd(s, 5), rnd(row, 6)});
    expect_twin("div", [](const Inputs& x) { return div(x[0], x[1]); }, {rnd(s, 7), rnd(s, 8, 0.5, 2.0)});
  }
  // Non-contiguous: transposed and sliced operands.
  expect_twin("add transposed", [](const Inputs& x) { return add(x[0].t(), x[1]); },
              {rnd({5, 3}, 9), rnd({3, 5}, 10)});
  expect_twin("mul sliced", [](const Inputs& x) { return mul(x[0].slice(1, 1, 8, 2), x[1]); },
              {rnd({4, 9}, 11), rnd({4, 4}, 12)});
}

TEST_F(CudaOps, ElementwiseUnary) {
  Tensor x = rnd({3, 17}, 20, -3, 3), pos = rnd({3, 17}, 21, 0.1, 4.0);
  expect_twin("neg", [](const Inputs& v) { return neg(v[0]); }, {x});
  expect_twin("exp", [](const Inputs& v) { return exp(v[0]); }, {x});
  expect_twin("log", [](const Inputs& v) { return log(v[0]); }, {pos});
  expect_twin("sqrt", [](const Inputs& v) { return sqrt(v[0]); }, {pos});
  expect_twin("rsqrt", [](const Inputs& v) { return rsqrt(v[0]); }, {pos});
  expect_twin("abs", [](const Inputs& v) { return abs(v[0]); }, {x});
  expect_twin("relu", [](const Inputs& v) { return relu(v[0]); }, {x});
  expect_twin("relu6", [](const Inputs& v) { return relu6(mul(v[0], 3.0)); }, {x});
  expect_twin("gelu", [](const Inputs& v) { return gelu(v[0]); }, {x});
  expect_twin("tanh", [](const Inputs& v) { return tanh(v[0]); }, {x});
  expect_twin("sigmoid", [](const Inputs& v) { return sigmoid(v[0]); }, {x});
  expect_twin("pow", [](const Inputs& v) { return pow(v[0], 2.5); }, {pos});
  expect_twin("clamp", [](const Inputs& v) { return clamp(v[0], -1.0, 0.5); }, {x});
  expect_twin("scalars", [](const Inputs& v) { return rdiv(2.0, add(mul(v[0], 0.5), 4.0)); }, {x});
  expect_twin("gelu on a view", [](const Inputs& v) { return gelu(v[0].t()); }, {x});
}

TEST_F(CudaOps, CompareWhereAndFinite) {
  Tensor a = rnd({4, 6}, 30), b = rnd({4, 6}, 31);
  expect_twin(
      "gt", [](const Inputs& v) { return cast(gt(v[0], v[1]), DType::f32); }, {a, b}, 0, DType::f32, false);
  expect_twin("where", [](const Inputs& v) { return where(gt(v[0], 0.0), v[0], v[1]); }, {a, b});
  Tensor g = a.to(Device::cuda(0));
  EXPECT_TRUE(isfinite_all(g));
  Tensor bad = from_vector(std::vector<double>{1.0, NAN, 2.0}, {3}).to(Device::cuda(0));
  EXPECT_FALSE(isfinite_all(bad));
}

TEST_F(CudaOps, Reductions) {
  for (Shape s : {Shape{5, 7}, Shape{3, 1500}, Shape{2, 70000}, Shape{4, 5, 6}}) {
    expect_twin(
        "sum all", [](const Inputs& v) { return sum(v[0]); }, {rnd(s, 40)}, 1e-4);
    expect_twin(
        "sum dim0", [](const Inputs& v) { return sum(v[0], {0}); }, {rnd(s, 41)}, 1e-4);
    expect_twin(
        "mean last", [](const Inputs& v) { return mean(v[0], {-1}, true); }, {rnd(s, 42)}, 1e-4);
    expect_twin(
        "var", [](const Inputs& v) { return var(v[0], {-1}); }, {rnd(s, 43)}, 1e-3);
    expect_twin("max", [](const Inputs& v) { return max(v[0], -1).values; }, {rnd(s, 44)});
    expect_twin("min dim0", [](const Inputs& v) { return min(v[0], 0).values; }, {rnd(s, 45)});
    expect_twin(
        "argmax", [](const Inputs& v) { return cast(argmax(v[0], -1), DType::f32); }, {rnd(s, 46)}, 0,
        DType::f32, false);
  }
}

TEST_F(CudaOps, ShapeOps) {
  Tensor idx = from_vector(std::vector<int64_t>{2, 0, 2, 1}, {4});
  expect_twin("index_select", [idx](const Inputs& v) { return index_select(v[0], 1, idx.to(v[0].device())); },
              {rnd({3, 4, 5}, 50)});
  expect_twin("concat",
              [](const Inputs& v) {
                return concat({v[0], v[1].t()}, 0);
              },
              {rnd({2, 3}, 51), rnd({3, 4}, 52)});
  expect_twin("stack/chunk", [](const Inputs& v) { return stack(chunk(v[0], 3, 1), 0); }, {rnd({2, 9}, 53)});
}

TEST_F(CudaOps, MatmulShapes) {
  expect_twin("matmul 2d", [](const Inputs& v) { return matmul(v[0], v[1]); },
              {rnd({7, 13}, 60), rnd({13, 5}, 61)});
  expect_twin("matmul A^T", [](const Inputs& v) { return matmul(v[0].t(), v[1]); },
              {rnd({13, 7}, 62), rnd({13, 5}, 63)});
  expect_twin("matmul B^T", [](const Inputs& v) { return matmul(v[0], v[1].t()); },
              {rnd({7, 13}, 64), rnd({5, 13}, 65)});
  expect_twin("bmm", [](const Inputs& v) { return bmm(v[0], v[1]); },
              {rnd({3, 4, 9}, 66), rnd({3, 9, 2}, 67)});
  expect_twin("batched bcast", [](const Inputs& v) { return matmul(v[0], v[1]); },
              {rnd({2, 3, 4, 5}, 68), rnd({5, 6}, 69)});
  expect_twin("vector", [](const Inputs& v) { return matmul(v[0], v[1]); }, {rnd({5}, 70), rnd({5, 3}, 71)});
  expect_twin("linear", [](const Inputs& v) { return linear(v[0], v[1], v[2]); },
              {rnd({6, 10}, 72), rnd({4, 10}, 73), rnd({4}, 74)});
}

TEST_F(CudaOps, Convolution) {
  struct Case {
    Shape x, w;
    Conv2dParams p;
  };
  Conv2dParams strided;
  strided.stride_h = strided.stride_w = 2;
  strided.pad_h = strided.pad_w = 1;
  Conv2dParams dilated;
  dilated.dilation_h = dilated.dilation_w = 2;
  dilated.pad_h = 2;
  Conv2dParams depthwise;
  depthwise.groups = 4;
  depthwise.pad_h = depthwise.pad_w = 1;
  for (const Case& c :
       {Case{{2, 3, 9, 7}, {5, 3, 3, 3}, Conv2dParams{}}, Case{{2, 3, 10, 10}, {4, 3, 3, 3}, strided},
        Case{{1, 2, 9, 9}, {3, 2, 3, 3}, dilated}, Case{{2, 4, 8, 8}, {4, 1, 3, 3}, depthwise},
        Case{{3, 8, 5, 5}, {6, 8, 1, 1}, Conv2dParams{}}}) {
    Conv2dParams p = c.p;
    expect_twin(
        "conv2d", [p](const Inputs& v) { return conv2d(v[0], v[1], v[2], p); },
        {rnd(c.x, 80), rnd(c.w, 81), rnd({c.w[0]}, 82)}, 1e-4);
  }
}

TEST_F(CudaOps, PoolingAndBatchNorm) {
  Tensor x = rnd({2, 3, 9, 11}, 90);
  expect_twin("max_pool", [](const Inputs& v) { return max_pool2d(v[0], 3, 2, 1); }, {x});
  expect_twin("avg_pool", [](const Inputs& v) { return avg_pool2d(v[0], 3, 2, 1); }, {x});
  expect_twin("adaptive", [](const Inputs& v) { return adaptive_avg_pool2d(v[0], 4, 3); }, {x});
  expect_twin("adaptive 1x1", [](const Inputs& v) { return adaptive_avg_pool2d(v[0], 1, 1); }, {x});
  expect_twin(
      "bn train",
      [](const Inputs& v) { return batch_norm2d(v[0], v[1], v[2], Tensor(), Tensor(), true, 0.1, 1e-5); },
      {x, rnd({3}, 91, 0.5, 1.5), rnd({3}, 92)}, 2e-4);
  // Running statistics are updated the same way on both devices.
  Tensor rm_c = zeros({3}), rv_c = ones({3});
  Tensor rm_g = rm_c.to(Device::cuda(0)), rv_g = rv_c.to(Device::cuda(0));
  {
    NoGradGuard ng;
    batch_norm2d(x, Tensor(), Tensor(), rm_c, rv_c, true, 0.1, 1e-5);
    batch_norm2d(x.to(Device::cuda(0)), Tensor(), Tensor(), rm_g, rv_g, true, 0.1, 1e-5);
  }
  EXPECT_LE(max_rel_diff(rm_g.to(Device::cpu()), rm_c), 1e-5);
  EXPECT_LE(max_rel_diff(rv_g.to(Device::cpu()), rv_c), 1e-5);
  expect_twin("bn eval",
              [](const Inputs& v) {
                Tensor rm = full({3}, 0.1, TensorOptions(DType::f32, v[0].device()));
                Tensor rv = full({3}, 2.0, TensorOptions(DType::f32, v[0].device()));
                return batch_norm2d(v[0], v[1], v[2], rm, rv, false, 0.1, 1e-5);
              },
              {x, rnd({3}, 93), rnd({3}, 94)});
}

TEST_F(CudaOps, NormsSoftmaxLosses) {
  for (Shape s : {Shape{4, 7}, Shape{3, 1100}, Shape{2, 3, 5}}) {
    Shape norm{s.back()};
    expect_twin(
        "layer_norm", [norm](const Inputs& v) { return layer_norm(v[0], norm, v[1], v[2], 1e-5); },
        {rnd(s, 100), rnd(norm, 101), rnd(norm, 102)}, 2e-4);
    expect_twin("softmax last", [](const Inputs& v) { return softmax(v[0], -1); }, {rnd(s, 103, -4, 4)});
    expect_twin("log_softmax dim0", [](const Inputs& v) { return log_softmax(v[0], 0); },
                {rnd(s, 104, -4, 4)});
  }
  Tensor target = from_vector(std::vector<int64_t>{0, 3, -100, 6, 2}, {5});
  for (double smoothing : {0.0, 0.1}) {
    expect_twin("cross_entropy",
                [target, smoothing](const Inputs& v) {
                  return cross_entropy(v[0], target.to(v[0].device()), smoothing);
                },
                {rnd({5, 7}, 105, -3, 3)});
  }
}

TEST_F(CudaOps, EmbeddingDropoutAndRandom) {
  Tensor ids = from_vector(std::vector<int64_t>{1, 4, 1, 0, 3, 4}, {2, 3});
  expect_twin("embedding", [ids](const Inputs& v) { return embedding(v[0], ids.to(v[0].device()), 0); },
              {rnd({5, 6}, 110)});
  // Same generator state -> the same mask and the same random numbers on both devices.
  Tensor x = rnd({3, 1001}, 111);
  Generator gc(5), gg(5);
  Tensor yc = dropout(x, 0.3, true, &gc);
  Tensor yg = dropout(x.to(Device::cuda(0)), 0.3, true, &gg).to(Device::cpu());
  EXPECT_EQ(max_rel_diff(yg, yc), 0.0);
  Generator rc(9), rg(9);
  EXPECT_EQ(max_rel_diff(rand({1003}, DType::f32, &rg).to(Device::cpu()), rand({1003}, DType::f32, &rc)),
            0.0);
  EXPECT_LE(max_rel_diff(randn({1003}, TensorOptions(DType::f32, Device::cuda(0)), &rg).to(Device::cpu()),
                         randn({1003}, DType::f32, &rc)),
            1e-5);
}

TEST_F(CudaOps, CopiesCastsAndFill) {
  Tensor x = rnd({5, 6}, 120, -100, 100);
  for (DType t : {DType::f16, DType::bf16, DType::f64, DType::i32, DType::i64, DType::u8, DType::boolean}) {
    SCOPED_TRACE(dtype_name(t));
    Tensor src = t == DType::u8 ? abs(x) : x;  // negative values have no u8 conversion
    Tensor cpu = src.to(t).to(DType::f32);
    Tensor gpu = src.to(Device::cuda(0)).to(t).to(DType::f32).to(Device::cpu());
    EXPECT_EQ(max_rel_diff(gpu, cpu), 0.0);
  }
  Tensor g = x.to(Device::cuda(0));
  Tensor view = g.t().contiguous().to(Device::cpu());
  EXPECT_EQ(max_rel_diff(view, x.t().contiguous()), 0.0);
  Tensor f = empty({4, 5}, TensorOptions(DType::bf16, Device::cuda(0)));
  f.slice(1, 1, 3).fill_(2.5);
  f.slice(1, 0, 1).fill_(0.0);
  std::vector<double> v = f.slice(1, 0, 3).to(Device::cpu()).to_vector();
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i], i % 3 == 0 ? 0.0 : 2.5);
}

TEST_F(CudaOps, OptimizersMatchCpu) {
  for (int which = 0; which < 2; ++which) {
    Tensor p0 = rnd({37, 5}, 130), g0 = rnd({37, 5}, 131);
    Tensor pc = p0.clone().detach().requires_grad_(true);
    Tensor pg = p0.to(Device::cuda(0)).detach().requires_grad_(true);
    std::unique_ptr<Optimizer> oc, og;
    if (which == 0) {
      SGDOptions o;
      o.lr = 0.05;
      o.momentum = 0.9;
      o.nesterov = true;
      o.weight_decay = 1e-3;
      oc = std::make_unique<SGD>(std::vector<Tensor>{pc}, o);
      og = std::make_unique<SGD>(std::vector<Tensor>{pg}, o);
    } else {
      AdamWOptions o;
      oc = std::make_unique<AdamW>(std::vector<Tensor>{pc}, o);
      og = std::make_unique<AdamW>(std::vector<Tensor>{pg}, o);
    }
    for (int step = 0; step < 3; ++step) {
      pc.set_grad(g0);
      pg.set_grad(g0.to(Device::cuda(0)));
      oc->step();
      og->step();
    }
    EXPECT_LE(max_rel_diff(pg.detach().to(Device::cpu()), pc.detach()), 1e-6) << (which ? "AdamW" : "SGD");
  }
}

// Half precision against the fp32 CPU oracle, with half tolerances.
TEST_F(CudaOps, HalfPrecisionVariants) {
  for (DType t : {DType::f16, DType::bf16}) {
    double tol = tol_for(t);
    expect_twin(
        "add", [](const Inputs& v) { return add(v[0], v[1]); }, {rnd({3, 41}, 140), rnd({41}, 141)}, tol, t);
    expect_twin(
        "gelu", [](const Inputs& v) { return gelu(v[0]); }, {rnd({3, 41}, 142)}, tol, t);
    expect_twin(
        "sum", [](const Inputs& v) { return sum(v[0], {1}); }, {rnd({3, 4100}, 143)}, tol * 4, t);
    expect_twin(
        "matmul", [](const Inputs& v) { return matmul(v[0], v[1]); }, {rnd({17, 64}, 144), rnd({64, 9}, 145)},
        tol * 2, t);
    Conv2dParams p;
    p.pad_h = p.pad_w = 1;
    expect_twin(
        "conv2d", [p](const Inputs& v) { return conv2d(v[0], v[1], Tensor(), p); },
        {rnd({2, 8, 6, 6}, 146), rnd({8, 8, 3, 3}, 147)}, tol * 4, t);
    expect_twin(
        "softmax", [](const Inputs& v) { return softmax(v[0], -1); }, {rnd({4, 33}, 148)}, tol, t);
    expect_twin(
        "layer_norm", [](const Inputs& v) { return layer_norm(v[0], {33}, v[1], v[2], 1e-5); },
        {rnd({4, 33}, 149), rnd({33}, 150), rnd({33}, 151)}, tol * 2, t);
    Tensor target = from_vector(std::vector<int64_t>{1, 0, 4}, {3});
    expect_twin(
        "cross_entropy", [target](const Inputs& v) { return cross_entropy(v[0], target.to(v[0].device())); },
        {rnd({3, 5}, 152)}, tol, t);
  }
}
