// conv2d throughput on the CPU (f32) for CIFAR-sized layers: forward, and forward + backward (input, weight
// and bias gradients). Reported as GFLOP/s with 2*N*O*Ho*Wo*(C/groups)*kh*kw flops per forward and three
// times that per forward+backward (the data and filter gradients each cost one forward).
//   build-<dir>/bench/bench_conv [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include "engine/ops.h"

using namespace dgpipe::engine;

namespace {

struct ConvShape {
  int64_t N, C, H, W, O, k, stride, pad, groups;
};

// Indexed by the benchmark argument.
const ConvShape kShapes[] = {
    {64, 32, 32, 32, 64, 3, 1, 1, 1},   // 0: ResNet-style 3x3
    {64, 64, 32, 32, 64, 3, 1, 1, 64},  // 1: depthwise 3x3 (MobileNetV2)
    {64, 64, 32, 32, 128, 1, 1, 0, 1},  // 2: pointwise 1x1
    {64, 64, 32, 32, 128, 3, 2, 1, 1},  // 3: 3x3 stride 2 (downsampling)
};

const char* kNames[] = {"3x3_32to64", "dw3x3_64", "1x1_64to128", "3x3s2_64to128"};

Conv2dParams params_of(const ConvShape& s) {
  Conv2dParams p;
  p.stride_h = p.stride_w = s.stride;
  p.pad_h = p.pad_w = s.pad;
  p.groups = s.groups;
  return p;
}

double forward_flops(const ConvShape& s) {
  const int64_t Ho = (s.H + 2 * s.pad - s.k) / s.stride + 1, Wo = (s.W + 2 * s.pad - s.k) / s.stride + 1;
  return 2.0 * s.N * s.O * Ho * Wo * (s.C / s.groups) * s.k * s.k;
}

void BM_Conv2dForward(benchmark::State& state) {
  const ConvShape& s = kShapes[state.range(0)];
  Generator gen(1);
  Tensor x = randn({s.N, s.C, s.H, s.W}, DType::f32, &gen);
  Tensor w = randn({s.O, s.C / s.groups, s.k, s.k}, DType::f32, &gen);
  Tensor b = randn({s.O}, DType::f32, &gen);
  const Conv2dParams p = params_of(s);
  NoGradGuard ng;
  for (auto _ : state) {
    Tensor y = conv2d(x, w, b, p);
    benchmark::DoNotOptimize(y.raw_data());
  }
  state.SetLabel(kNames[state.range(0)]);
  state.counters["GFLOP"] =
      benchmark::Counter(forward_flops(s) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Conv2dForwardBackward(benchmark::State& state) {
  const ConvShape& s = kShapes[state.range(0)];
  Generator gen(2);
  Tensor x = randn({s.N, s.C, s.H, s.W}, DType::f32, &gen).requires_grad_(true);
  Tensor w = randn({s.O, s.C / s.groups, s.k, s.k}, DType::f32, &gen).requires_grad_(true);
  Tensor b = randn({s.O}, DType::f32, &gen).requires_grad_(true);
  const Conv2dParams p = params_of(s);
  Tensor grad_out;
  {
    NoGradGuard ng;
    grad_out = randn(conv2d(x, w, b, p).shape(), DType::f32, &gen);
  }
  for (auto _ : state) {
    x.zero_grad();
    w.zero_grad();
    b.zero_grad();
    Tensor y = conv2d(x, w, b, p);
    backward({y}, {grad_out});
    benchmark::DoNotOptimize(w.grad().raw_data());
  }
  state.SetLabel(kNames[state.range(0)]);
  state.counters["GFLOP"] =
      benchmark::Counter(3 * forward_flops(s) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_Conv2dForward)->DenseRange(0, 3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Conv2dForwardBackward)->DenseRange(0, 3)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
