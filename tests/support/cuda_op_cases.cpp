// The engine's CUDA twin cases, one row per comparison: odd sizes, broadcasts and non-contiguous views (made
// inside the op), every floating op's gradients, f16/bf16 against the f32 oracle with half tolerances, and
// the benchmark sizes of the ops bench/bench_cuda_ops.cpp times.
#include "support/cuda_op_cases.h"

#include <cmath>
#include <memory>

#include "engine/optim/adamw.h"
#include "engine/optim/sgd.h"

namespace dgpipe::testing {

using namespace dgpipe::engine;

namespace {

// Benchmark tensors: 64M elements (256 MiB of f32), far beyond L2. Keep in sync with ELEMENTS in
// bench/engine_vs_pytorch.py.
constexpr int64_t kElements = int64_t(64) << 20;

CudaTwinCase twin(std::string name, std::vector<std::string> launchers, OpFn op, Inputs inputs,
                  double tol = 1e-4) {
  CudaTwinCase c;
  c.name = std::move(name);
  c.launchers = std::move(launchers);
  c.op = std::move(op);
  c.inputs = std::move(inputs);
  c.tol = tol;
  return c;
}

// Exact comparisons of outputs that have no gradient (comparisons, indices, casts, draws).
CudaTwinCase exact(std::string name, std::vector<std::string> launchers, OpFn op, Inputs inputs) {
  CudaTwinCase c = twin(std::move(name), std::move(launchers), std::move(op), std::move(inputs), 0.0);
  c.backward = false;
  return c;
}

std::string shape_name(const std::string& op, const Shape& s) {
  return op + " " + shape_str(s);
}

Tensor rnd(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  return uniform_input(s, seed, lo, hi);
}

double elements_bytes(int64_t n, DType t) {
  return static_cast<double>(n) * static_cast<double>(dtype_size(t));
}

// One memory-bound benchmark of `n`-element f32-or-half tensors made by `make`.
CudaBench memory_bench(std::string name, std::function<Inputs(TensorOptions)> make, double bytes) {
  return CudaBench{std::move(name), std::move(make), bytes, 0.0};
}

Inputs zeros_inputs(const std::vector<Shape>& shapes, TensorOptions o) {
  Inputs xs;
  for (const Shape& s : shapes) xs.push_back(zeros(s, o));
  return xs;
}

// Tolerances of the half-precision variants against the f32 oracle.
double half_tol(DType t) {
  return t == DType::f16 ? 2e-2 : 8e-2;
}

void elementwise_cases(std::vector<CudaTwinCase>& t) {
  for (Shape s : {Shape{7}, Shape{3, 5}, Shape{2, 3, 33}, Shape{1025}}) {
    Shape row = {s.back()};
    CudaTwinCase add_case = twin(shape_name("add", s), {"binary"},
                                 [](const Inputs& x) { return add(x[0], x[1]); }, {rnd(s, 1), rnd(s, 2)});
    if (s == Shape{1025})
      add_case.bench.push_back(memory_bench(
          "BM_Add/0",
          [](TensorOptions o) {
            return zeros_inputs({{kElements}, {kElements}}, o);
          },
          3 * elements_bytes(kElements, DType::f32)));
    t.push_back(add_case);
    t.push_back(twin(shape_name("sub broadcast", s), {"binary"},
                     [](const Inputs& x) { return sub(x[0], x[1]); }, {rnd(s, 3), rnd(row, 4)}));
    t.push_back(twin(shape_name("mul broadcast", s), {"binary"},
                     [](const Inputs& x) { return mul(x[1], x[0]); }, {rnd(s, 5), rnd(row, 6)}));
    t.push_back(twin(shape_name("div", s), {"binary"}, [](const Inputs& x) { return div(x[0], x[1]); },
                     {rnd(s, 7), rnd(s, 8, 0.5, 2.0)}));
  }
  // Broadcast vectors (the bias-add fast path): a channel of NCHW, a column, a scalar, the vector first in a
  // non-commutative op, and a full operand that is a contiguous slice at an offset.
  t.push_back(twin("mul channel [2,3,4,5]*[1,3,1,1]", {"binary"},
                   [](const Inputs& x) { return mul(x[0], x[1]); },
                   {rnd({2, 3, 4, 5}, 13), rnd({1, 3, 1, 1}, 14)}));
  t.push_back(twin("div column [7,5]/[7,1]", {"binary"}, [](const Inputs& x) { return div(x[0], x[1]); },
                   {rnd({7, 5}, 15), rnd({7, 1}, 16, 0.5, 2.0)}));
  t.push_back(twin("div vector first [5]/[4,5]", {"binary"}, [](const Inputs& x) { return div(x[0], x[1]); },
                   {rnd({5}, 17), rnd({4, 5}, 18, 0.5, 2.0)}));
  t.push_back(twin("add scalar tensor", {"binary"}, [](const Inputs& x) { return add(x[0], x[1]); },
                   {rnd({5, 9}, 19), rnd({}, 22)}));
  t.push_back(twin("add bias on an offset slice", {"binary"},
                   [](const Inputs& x) { return add(x[0].slice(0, 1, 4), x[1]); },
                   {rnd({5, 32}, 23), rnd({32}, 24)}));
  // Non-contiguous operands: transposed and sliced.
  t.push_back(twin("add transposed", {"binary"}, [](const Inputs& x) { return add(x[0].t(), x[1]); },
                   {rnd({5, 3}, 9), rnd({3, 5}, 10)}));
  t.push_back(twin("mul sliced", {"binary"},
                   [](const Inputs& x) { return mul(x[0].slice(1, 1, 8, 2), x[1]); },
                   {rnd({4, 9}, 11), rnd({4, 4}, 12)}));

  const Tensor x = rnd({3, 17}, 20, -3, 3), pos = rnd({3, 17}, 21, 0.1, 4.0);
  struct Unary {
    const char* name;
    OpFn op;
    const Tensor& input;
  };
  for (const Unary& u : std::vector<Unary>{
           {"neg", [](const Inputs& v) { return neg(v[0]); }, x},
           {"exp", [](const Inputs& v) { return exp(v[0]); }, x},
           {"log", [](const Inputs& v) { return log(v[0]); }, pos},
           {"sqrt", [](const Inputs& v) { return sqrt(v[0]); }, pos},
           {"rsqrt", [](const Inputs& v) { return rsqrt(v[0]); }, pos},
           {"abs", [](const Inputs& v) { return abs(v[0]); }, x},
           {"relu", [](const Inputs& v) { return relu(v[0]); }, x},
           {"relu6", [](const Inputs& v) { return relu6(mul(v[0], 3.0)); }, x},
           {"gelu", [](const Inputs& v) { return gelu(v[0]); }, x},
           {"tanh", [](const Inputs& v) { return tanh(v[0]); }, x},
           {"sigmoid", [](const Inputs& v) { return sigmoid(v[0]); }, x},
           {"pow", [](const Inputs& v) { return pow(v[0], 2.5); }, pos},
           {"clamp", [](const Inputs& v) { return clamp(v[0], -1.0, 0.5); }, x},
           {"scalars", [](const Inputs& v) { return rdiv(2.0, add(mul(v[0], 0.5), 4.0)); }, x},
           {"gelu on a view", [](const Inputs& v) { return gelu(v[0].t()); }, x},
       }) {
    CudaTwinCase c = twin(u.name, {"unary"}, u.op, {u.input});
    if (std::string(u.name) == "gelu")
      c.bench.push_back(memory_bench(
          "BM_Gelu/0", [](TensorOptions o) { return zeros_inputs({{kElements}}, o); },
          2 * elements_bytes(kElements, DType::f32)));
    t.push_back(c);
  }

  const Tensor a = rnd({4, 6}, 30), b = rnd({4, 6}, 31);
  t.push_back(
      exact("gt", {"compare"}, [](const Inputs& v) { return cast(gt(v[0], v[1]), DType::f32); }, {a, b}));
  t.push_back(twin("where", {"compare", "where"},
                   [](const Inputs& v) { return where(gt(v[0], 0.0), v[0], v[1]); }, {a, b}));
  auto finite = [](const Inputs& v) { return scalar_tensor(isfinite_all(v[0]) ? 1.0 : 0.0); };
  t.push_back(exact("isfinite_all finite", {"isfinite_all"}, finite, {a}));
  t.push_back(exact("isfinite_all nan", {"isfinite_all"}, finite,
                    {from_vector(std::vector<double>{1.0, NAN, 2.0}, {3})}));
}

void reduce_cases(std::vector<CudaTwinCase>& t) {
  for (Shape s : {Shape{5, 7}, Shape{3, 1500}, Shape{2, 70000}, Shape{4, 5, 6}}) {
    CudaTwinCase all = twin(shape_name("sum all", s), {"sum_lastdim"},
                            [](const Inputs& v) { return sum(v[0]); }, {rnd(s, 40)});
    if (s == Shape{5, 7})
      all.bench.push_back(memory_bench(
          "BM_SumAll", [](TensorOptions o) { return zeros_inputs({{kElements}}, o); },
          elements_bytes(kElements, DType::f32)));
    t.push_back(all);
    t.push_back(twin(shape_name("sum dim0", s), {"sum_middle"},
                     [](const Inputs& v) { return sum(v[0], {0}); }, {rnd(s, 41)}));
    t.push_back(twin(shape_name("mean last", s), {"sum_lastdim"},
                     [](const Inputs& v) { return mean(v[0], {-1}, true); }, {rnd(s, 42)}));
    t.push_back(twin(
        shape_name("var", s), {"sum_lastdim"}, [](const Inputs& v) { return var(v[0], {-1}); }, {rnd(s, 43)},
        1e-3));
    t.push_back(twin(shape_name("max", s), {"maxmin_lastdim"},
                     [](const Inputs& v) { return max(v[0], -1).values; }, {rnd(s, 44)}));
    t.push_back(twin(shape_name("min dim0", s), {"maxmin_lastdim"},
                     [](const Inputs& v) { return min(v[0], 0).values; }, {rnd(s, 45)}));
    t.push_back(exact(shape_name("argmax", s), {"maxmin_lastdim"},
                      [](const Inputs& v) { return cast(argmax(v[0], -1), DType::f32); }, {rnd(s, 46)}));
  }
  // Sums over dims that are not last, read in place: a bias gradient, a middle dim, batch-norm-style
  // statistics (a row sum, then a middle sum), and a tall input whose rows are split over blocks.
  t.push_back(twin("sum bias gradient [4,6,33] dims 0,1", {"sum_middle"},
                   [](const Inputs& v) {
                     return sum(v[0], {0, 1});
                   },
                   {rnd({4, 6, 33}, 47)}));
  t.push_back(twin("sum middle [3,40,5] dim1", {"sum_middle"}, [](const Inputs& v) { return sum(v[0], {1}); },
                   {rnd({3, 40, 5}, 48)}));
  t.push_back(twin("sum NCHW dims 0,2,3", {"sum_lastdim", "sum_middle"},
                   [](const Inputs& v) {
                     return sum(v[0], {0, 2, 3}, true);
                   },
                   {rnd({4, 3, 5, 6}, 49)}));
  t.push_back(twin(
      "sum tall [5000,3] dim0", {"sum_middle"}, [](const Inputs& v) { return sum(v[0], {0}); },
      {rnd({5000, 3}, 140)}, 1e-3));
  // The row sums the benchmark times, over the last dim.
  CudaTwinCase rows = twin("sum dim1 [3,4100]", {"sum_lastdim"},
                           [](const Inputs& v) { return sum(v[0], {1}); }, {rnd({3, 4100}, 143)});
  for (int64_t inner : {64, 1024, 65536})
    rows.bench.push_back(memory_bench(
        "BM_SumRows/" + std::to_string(inner),
        [inner](TensorOptions o) {
          return zeros_inputs({{kElements / inner, inner}}, o);
        },
        elements_bytes(kElements, DType::f32)));
  t.push_back(rows);
}

void shape_cases(std::vector<CudaTwinCase>& t) {
  const Tensor idx = from_vector(std::vector<int64_t>{2, 0, 2, 1}, {4});
  // The backward pass scatters the gradient back with index_add.
  t.push_back(twin("index_select", {"index_select", "index_add"},
                   [idx](const Inputs& v) { return index_select(v[0], 1, idx.to(v[0].device())); },
                   {rnd({3, 4, 5}, 50)}));
  t.push_back(twin("concat", {"copy_strided"},
                   [](const Inputs& v) {
                     return concat({v[0], v[1].t()}, 0);
                   },
                   {rnd({2, 3}, 51), rnd({3, 4}, 52)}));
  t.push_back(twin("stack/chunk", {"copy_strided"},
                   [](const Inputs& v) { return stack(chunk(v[0], 3, 1), 0); }, {rnd({2, 9}, 53)}));
}

CudaBench gemm_bench(int64_t n, int dtype_code) {
  return CudaBench{"BM_Gemm/" + std::to_string(n) + "/" + std::to_string(dtype_code),
                   [n](TensorOptions o) {
                     Generator g(1);
                     return Inputs{randn({n, n}, o, &g), randn({n, n}, o, &g)};
                   },
                   0.0, 2.0 * n * n * n};
}

// ResNet-style 3x3 convolution of a batch of 64, forward.
CudaBench conv_bench(int64_t c, int64_t hw, int dtype_code) {
  return CudaBench{
      "BM_Conv3x3/" + std::to_string(c) + "/" + std::to_string(hw) + "/" + std::to_string(dtype_code),
      [c, hw](TensorOptions o) {
        Generator g(2);
        return Inputs{randn({64, c, hw, hw}, o, &g), randn({c, c, 3, 3}, o, &g)};
      },
      0.0, 2.0 * 64 * c * hw * hw * c * 9};
}

void matmul_cases(std::vector<CudaTwinCase>& t) {
  auto matmul_op = [](const Inputs& v) { return matmul(v[0], v[1]); };
  CudaTwinCase plain = twin("matmul 2d", {"bmm"}, matmul_op, {rnd({7, 13}, 60), rnd({13, 5}, 61)});
  plain.bench = {gemm_bench(1024, 0), gemm_bench(4096, 0)};
  t.push_back(plain);
  t.push_back(twin("matmul A^T", {"bmm"}, [](const Inputs& v) { return matmul(v[0].t(), v[1]); },
                   {rnd({13, 7}, 62), rnd({13, 5}, 63)}));
  t.push_back(twin("matmul B^T", {"bmm"}, [](const Inputs& v) { return matmul(v[0], v[1].t()); },
                   {rnd({7, 13}, 64), rnd({5, 13}, 65)}));
  t.push_back(twin("bmm", {"bmm"}, [](const Inputs& v) { return bmm(v[0], v[1]); },
                   {rnd({3, 4, 9}, 66), rnd({3, 9, 2}, 67)}));
  t.push_back(twin("matmul batched broadcast", {"bmm"}, matmul_op, {rnd({2, 3, 4, 5}, 68), rnd({5, 6}, 69)}));
  t.push_back(twin("matmul vector", {"bmm"}, matmul_op, {rnd({5}, 70), rnd({5, 3}, 71)}));
  t.push_back(twin("linear", {"bmm", "binary", "sum_middle"},
                   [](const Inputs& v) { return linear(v[0], v[1], v[2]); },
                   {rnd({6, 10}, 72), rnd({4, 10}, 73), rnd({4}, 74)}));
}

const std::vector<std::string> kConvLaunchers = {"conv2d_forward", "conv2d_backward_data",
                                                 "conv2d_backward_filter", "conv2d_backward_bias"};

void conv_cases(std::vector<CudaTwinCase>& t) {
  struct Case {
    const char* name;
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
  for (const Case& c : {Case{"conv2d", {2, 3, 9, 7}, {5, 3, 3, 3}, Conv2dParams{}},
                        Case{"conv2d strided", {2, 3, 10, 10}, {4, 3, 3, 3}, strided},
                        Case{"conv2d dilated", {1, 2, 9, 9}, {3, 2, 3, 3}, dilated},
                        Case{"conv2d depthwise", {2, 4, 8, 8}, {4, 1, 3, 3}, depthwise},
                        Case{"conv2d 1x1", {3, 8, 5, 5}, {6, 8, 1, 1}, Conv2dParams{}}}) {
    Conv2dParams p = c.p;
    t.push_back(twin(c.name, kConvLaunchers, [p](const Inputs& v) { return conv2d(v[0], v[1], v[2], p); },
                     {rnd(c.x, 80), rnd(c.w, 81), rnd({c.w[0]}, 82)}));
  }
}

void pool_norm_cases(std::vector<CudaTwinCase>& t) {
  const Tensor x = rnd({2, 3, 9, 11}, 90);
  t.push_back(twin("max_pool2d", {"max_pool2d_forward", "max_pool2d_backward"},
                   [](const Inputs& v) { return max_pool2d(v[0], 3, 2, 1); }, {x}));
  t.push_back(twin("avg_pool2d", {"avg_pool2d_forward", "avg_pool2d_backward"},
                   [](const Inputs& v) { return avg_pool2d(v[0], 3, 2, 1); }, {x}));
  const std::vector<std::string> adaptive = {"adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward"};
  t.push_back(twin("adaptive_avg_pool2d", adaptive,
                   [](const Inputs& v) { return adaptive_avg_pool2d(v[0], 4, 3); }, {x}));
  t.push_back(twin("adaptive_avg_pool2d 1x1", adaptive,
                   [](const Inputs& v) { return adaptive_avg_pool2d(v[0], 1, 1); }, {x}));
  t.push_back(twin(
      "batch_norm2d train", {"batch_norm_forward_training", "batch_norm_backward"},
      [](const Inputs& v) { return batch_norm2d(v[0], v[1], v[2], Tensor(), Tensor(), true, 0.1, 1e-5); },
      {x, rnd({3}, 91, 0.5, 1.5), rnd({3}, 92)}, 2e-4));
  // Enough values per channel for several chunks per channel; a mean far from 0 (Welford has no
  // cancellation); batch norm over [N, C] and [N, C, L].
  const auto bn_train = [](const Inputs& v) {
    return batch_norm2d(v[0], v[1], v[2], Tensor(), Tensor(), true, 0.1, 1e-5);
  };
  t.push_back(twin("batch_norm2d train chunked [8,3,32,32]",
                   {"batch_norm_forward_training", "batch_norm_backward"}, bn_train,
                   {rnd({8, 3, 32, 32}, 95), rnd({3}, 91, 0.5, 1.5), rnd({3}, 92)}, 5e-4));
  t.push_back(twin("batch_norm2d train mean 100", {"batch_norm_forward_training", "batch_norm_backward"},
                   bn_train, {rnd({4, 2, 16, 16}, 96, 99.0, 101.0), rnd({2}, 97, 0.5, 1.5), rnd({2}, 98)},
                   1e-3));
  t.push_back(twin("batch_norm [N,C]", {"batch_norm_forward_training", "batch_norm_backward"}, bn_train,
                   {rnd({64, 5}, 99), rnd({5}, 100, 0.5, 1.5), rnd({5}, 101)}, 2e-4));
  t.push_back(twin("batch_norm [N,C,L]", {"batch_norm_forward_training", "batch_norm_backward"}, bn_train,
                   {rnd({3, 4, 7}, 102), rnd({4}, 103, 0.5, 1.5), rnd({4}, 104)}, 2e-4));
  // The running statistics are updated the same way on both devices.
  CudaTwinCase running = twin(
      "batch_norm2d running statistics", {"batch_norm_forward_training"},
      [](const Inputs& v) {
        NoGradGuard ng;
        TensorOptions o(DType::f32, v[0].device());
        Tensor rm = zeros({3}, o), rv = ones({3}, o);
        batch_norm2d(v[0], Tensor(), Tensor(), rm, rv, true, 0.1, 1e-5);
        return concat({rm, rv}, 0);
      },
      {x}, 1e-5);
  running.backward = false;
  t.push_back(running);
  t.push_back(twin("batch_norm2d eval", {"batch_norm_forward_inference", "batch_norm_backward"},
                   [](const Inputs& v) {
                     Tensor rm = full({3}, 0.1, TensorOptions(DType::f32, v[0].device()));
                     Tensor rv = full({3}, 2.0, TensorOptions(DType::f32, v[0].device()));
                     return batch_norm2d(v[0], v[1], v[2], rm, rv, false, 0.1, 1e-5);
                   },
                   {x, rnd({3}, 93), rnd({3}, 94)}));
}

// layer_norm over the last dims, as many as the weight has.
Tensor layer_norm_op(const Inputs& v) {
  return layer_norm(v[0], v[1].shape(), v[1], v[2], 1e-5);
}

void softmax_norm_cases(std::vector<CudaTwinCase>& t) {
  for (Shape s : {Shape{4, 7}, Shape{3, 1100}, Shape{2, 3, 5}}) {
    Shape norm{s.back()};
    CudaTwinCase ln = twin(shape_name("layer_norm", s), {"layer_norm_forward", "layer_norm_backward"},
                           layer_norm_op, {rnd(s, 100), rnd(norm, 101), rnd(norm, 102)}, 2e-4);
    CudaTwinCase sm = twin(shape_name("softmax last", s), {"softmax_forward", "softmax_backward"},
                           [](const Inputs& v) { return softmax(v[0], -1); }, {rnd(s, 103, -4, 4)});
    if (s == Shape{4, 7}) {
      for (int64_t cols : {768, 4096})
        ln.bench.push_back(memory_bench(
            "BM_LayerNorm/" + std::to_string(cols),
            [cols](TensorOptions o) {
              return Inputs{zeros({kElements / 4 / cols, cols}, o), ones({cols}, o), zeros({cols}, o)};
            },
            2 * elements_bytes(kElements / 4, DType::f32)));
      for (int64_t cols : {128, 4096})
        sm.bench.push_back(memory_bench(
            "BM_Softmax/" + std::to_string(cols),
            [cols](TensorOptions o) {
              return zeros_inputs({{kElements / 4 / cols, cols}}, o);
            },
            2 * elements_bytes(kElements / 4, DType::f32)));
    }
    t.push_back(ln);
    t.push_back(sm);
    t.push_back(twin(shape_name("log_softmax dim0", s), {"softmax_forward", "softmax_backward"},
                     [](const Inputs& v) { return log_softmax(v[0], 0); }, {rnd(s, 104, -4, 4)}));
  }
  const Tensor target = from_vector(std::vector<int64_t>{0, 3, -100, 6, 2}, {5});
  for (double smoothing : {0.0, 0.1})  // the names below follow these values
    t.push_back(twin(smoothing > 0 ? "cross_entropy smoothing 0.1" : "cross_entropy",
                     {"cross_entropy_forward", "cross_entropy_backward"},
                     [target, smoothing](const Inputs& v) {
                       return cross_entropy(v[0], target.to(v[0].device()), smoothing);
                     },
                     {rnd({5, 7}, 105, -3, 3)}));
}

void embedding_random_cases(std::vector<CudaTwinCase>& t) {
  const Tensor ids = from_vector(std::vector<int64_t>{1, 4, 1, 0, 3, 4}, {2, 3});
  t.push_back(twin("embedding", {"embedding_forward", "embedding_backward"},
                   [ids](const Inputs& v) { return embedding(v[0], ids.to(v[0].device()), 0); },
                   {rnd({5, 6}, 110)}));
  // The same generator state gives the same mask on both devices, so outputs and gradients agree exactly.
  CudaTwinCase drop = twin(
      "dropout", {"dropout_apply"},
      [](const Inputs& v) {
        Generator g(5);
        return dropout(v[0], 0.3, true, &g);
      },
      {rnd({3, 1001}, 111)}, 0.0);
  drop.grad_tol = 0.0;
  t.push_back(drop);
  // The same generator state draws the same numbers on both devices (normals to float rounding of the math).
  CudaTwinCase uniform = exact("rand", {"philox_fill"}, nullptr, {});
  uniform.prepare = [](const Inputs&, Device d) -> Step {
    return [d] {
      Generator g(9);
      return rand({1003}, TensorOptions(DType::f32, d), &g);
    };
  };
  t.push_back(uniform);
  CudaTwinCase normal = exact("randn", {"philox_fill"}, nullptr, {});
  normal.tol = 1e-5;
  normal.prepare = [](const Inputs&, Device d) -> Step {
    return [d] {
      Generator g(9);
      return randn({1003}, TensorOptions(DType::f32, d), &g);
    };
  };
  t.push_back(normal);
}

void copy_cases(std::vector<CudaTwinCase>& t) {
  const Tensor x = rnd({5, 6}, 120, -100, 100);
  for (DType dt : {DType::f16, DType::bf16, DType::f64, DType::i32, DType::i64, DType::u8, DType::boolean}) {
    const Tensor src = dt == DType::u8 ? abs(x) : x;  // negative values have no u8 conversion
    t.push_back(exact(std::string("cast to ") + dtype_name(dt), {"copy_strided"},
                      [dt](const Inputs& v) { return v[0].to(dt).to(DType::f32); }, {src}));
  }
  t.push_back(
      exact("transposed copy", {"copy_strided"}, [](const Inputs& v) { return v[0].t().contiguous(); }, {x}));
  CudaTwinCase copy = twin(
      "clone", {"copy_strided"}, [](const Inputs& v) { return v[0].clone(); }, {x}, 0.0);
  copy.bench.push_back(memory_bench(
      "BM_Copy", [](TensorOptions o) { return zeros_inputs({{kElements}}, o); },
      2 * elements_bytes(kElements, DType::f32)));
  t.push_back(copy);
  CudaTwinCase fill_case = exact("fill_ strided bf16", {"fill"}, nullptr, {});
  fill_case.prepare = [](const Inputs&, Device d) -> Step {
    return [d] {
      Tensor f = empty({4, 5}, TensorOptions(DType::bf16, d));
      f.slice(1, 1, 3).fill_(2.5);
      f.slice(1, 0, 1).fill_(0.0);
      return f.slice(1, 0, 3).to(DType::f32);
    };
  };
  t.push_back(fill_case);
}

// Three steps of an optimizer on one parameter with a fixed gradient: v = {parameter, gradient}.
template <class Opt, class Options>
Prepare optimizer_steps(Options options) {
  return [options](const Inputs& v, Device) -> Step {
    Tensor p = v[0];
    p.requires_grad_(true);
    Tensor g = v[1];
    auto opt = std::make_shared<Opt>(std::vector<Tensor>{p}, options);
    return [p, g, opt] {
      Tensor param = p;
      param.set_grad(g);
      opt->step();
      return p.detach();
    };
  };
}

void optimizer_cases(std::vector<CudaTwinCase>& t) {
  SGDOptions so;
  so.lr = 0.05;
  so.momentum = 0.9;
  so.nesterov = true;
  so.weight_decay = 1e-3;
  CudaTwinCase sgd = exact("SGD nesterov", {"sgd_step"}, nullptr, {rnd({37, 5}, 130), rnd({37, 5}, 131)});
  sgd.prepare = optimizer_steps<SGD>(so);
  sgd.steps = 3;
  sgd.tol = 1e-6;
  // read p, g, buf; write p, buf
  sgd.bench.push_back(memory_bench(
      "BM_SgdStep",
      [](TensorOptions o) {
        return zeros_inputs({{kElements / 4}, {kElements / 4}}, o);
      },
      5 * elements_bytes(kElements / 4, DType::f32)));
  t.push_back(sgd);
  CudaTwinCase adamw = exact("AdamW", {"adamw_step"}, nullptr, {rnd({37, 5}, 130), rnd({37, 5}, 131)});
  adamw.prepare = optimizer_steps<AdamW>(AdamWOptions{});
  adamw.steps = 3;
  adamw.tol = 1e-6;
  t.push_back(adamw);
}

// Half precision on CUDA against the f32 CPU oracle, with half tolerances.
void half_cases(std::vector<CudaTwinCase>& t) {
  for (DType dt : {DType::f16, DType::bf16}) {
    const double tol = half_tol(dt);
    const std::string suffix = std::string(" ") + dtype_name(dt);
    const int code = dt == DType::f16 ? 1 : 2;
    std::vector<CudaTwinCase> rows;
    CudaTwinCase a = twin(
        "add" + suffix, {"binary"}, [](const Inputs& v) { return add(v[0], v[1]); },
        {rnd({3, 41}, 140), rnd({41}, 141)}, tol);
    a.bench.push_back(memory_bench(
        "BM_Add/" + std::to_string(code),
        [](TensorOptions o) {
          return zeros_inputs({{kElements}, {kElements}}, o);
        },
        3 * elements_bytes(kElements, dt)));
    rows.push_back(a);
    CudaTwinCase g = twin(
        "gelu" + suffix, {"unary", "binary"}, [](const Inputs& v) { return gelu(v[0]); }, {rnd({3, 41}, 142)},
        tol);
    if (dt == DType::f16)
      g.bench.push_back(memory_bench(
          "BM_Gelu/1", [](TensorOptions o) { return zeros_inputs({{kElements}}, o); },
          2 * elements_bytes(kElements, dt)));
    rows.push_back(g);
    rows.push_back(twin(
        "sum" + suffix, {"sum_lastdim"}, [](const Inputs& v) { return sum(v[0], {1}); },
        {rnd({3, 4100}, 143)}, tol * 4));
    rows.push_back(twin(
        "sum dim0" + suffix, {"sum_middle"}, [](const Inputs& v) { return sum(v[0], {0}); },
        {rnd({300, 20}, 153)}, tol * 4));
    // Statistics in f32 for half inputs (the eval case reads them back from the running statistics).
    rows.push_back(twin(
        "batch_norm2d train" + suffix, {"batch_norm_forward_training", "batch_norm_backward"},
        [](const Inputs& v) { return batch_norm2d(v[0], v[1], v[2], Tensor(), Tensor(), true, 0.1, 1e-5); },
        {rnd({4, 3, 6, 6}, 154), rnd({3}, 155, 0.5, 1.5), rnd({3}, 156)}, tol * 2));
    rows.push_back(twin(
        "batch_norm2d eval" + suffix, {"batch_norm_forward_inference", "batch_norm_backward"},
        [](const Inputs& v) {
          Tensor rm = full({3}, 0.1, TensorOptions(DType::f32, v[0].device()));
          Tensor rv = full({3}, 2.0, TensorOptions(DType::f32, v[0].device()));
          return batch_norm2d(v[0], v[1], v[2], rm, rv, false, 0.1, 1e-5);
        },
        {rnd({4, 3, 6, 6}, 157), rnd({3}, 158), rnd({3}, 159)}, tol * 2));
    CudaTwinCase mm = twin(
        "matmul" + suffix, {"bmm"}, [](const Inputs& v) { return matmul(v[0], v[1]); },
        {rnd({17, 64}, 144), rnd({64, 9}, 145)}, tol * 2);
    if (dt == DType::f16)
      mm.bench = {gemm_bench(4096, code), gemm_bench(8192, code)};
    else
      mm.bench = {gemm_bench(4096, code)};
    rows.push_back(mm);
    rows.push_back(twin(
        "softmax" + suffix, {"softmax_forward", "softmax_backward"},
        [](const Inputs& v) { return softmax(v[0], -1); }, {rnd({4, 33}, 148)}, tol));
    rows.push_back(twin("layer_norm" + suffix, {"layer_norm_forward", "layer_norm_backward"}, layer_norm_op,
                        {rnd({4, 33}, 149), rnd({33}, 150), rnd({33}, 151)}, tol * 2));
    const Tensor target = from_vector(std::vector<int64_t>{1, 0, 4}, {3});
    rows.push_back(twin(
        "cross_entropy" + suffix, {"cross_entropy_forward", "cross_entropy_backward"},
        [target](const Inputs& v) { return cross_entropy(v[0], target.to(v[0].device())); },
        {rnd({3, 5}, 152)}, tol));
    for (CudaTwinCase& r : rows) r.dtype = dt;
    t.insert(t.end(), rows.begin(), rows.end());
  }
  // The 3x3 convolution the benchmark times, in f32 and in both halves.
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    Conv2dParams p;
    p.pad_h = p.pad_w = 1;
    const double tol = dt == DType::f32 ? 1e-4 : half_tol(dt) * 4;
    CudaTwinCase c = twin(
        std::string("conv2d 3x3 no bias ") + dtype_name(dt),
        {"conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter"},
        [p](const Inputs& v) { return conv2d(v[0], v[1], Tensor(), p); },
        {rnd({2, 8, 6, 6}, 146), rnd({8, 8, 3, 3}, 147)}, tol);
    c.dtype = dt;
    if (dt == DType::f32) c.bench = {conv_bench(64, 32, 0)};
    if (dt == DType::f16) c.bench = {conv_bench(64, 32, 1), conv_bench(256, 16, 1)};
    t.push_back(c);
  }
  // The default for fp32 convolutions: TF32 tensor cores (10-bit mantissas, fp32 accumulation).
  Conv2dParams p;
  p.pad_h = p.pad_w = 1;
  CudaTwinCase tf32 = twin(
      "conv2d 3x3 tf32", {"conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter"},
      [p](const Inputs& v) { return conv2d(v[0], v[1], Tensor(), p); },
      {rnd({2, 16, 8, 8}, 160), rnd({16, 16, 3, 3}, 161)}, 1e-2);
  tf32.tf32 = true;
  t.push_back(tf32);
}

}  // namespace

const std::vector<CudaTwinCase>& engine_cuda_cases() {
  static const std::vector<CudaTwinCase> cases = [] {
    std::vector<CudaTwinCase> t;
    elementwise_cases(t);
    reduce_cases(t);
    shape_cases(t);
    matmul_cases(t);
    conv_cases(t);
    pool_norm_cases(t);
    softmax_norm_cases(t);
    embedding_random_cases(t);
    copy_cases(t);
    optimizer_cases(t);
    half_cases(t);
    return t;
  }();
  return cases;
}

}  // namespace dgpipe::testing
