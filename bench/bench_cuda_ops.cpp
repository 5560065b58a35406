// CUDA kernel throughput, timed with CUDA events (manual time, so host overhead between launches is
// excluded):
//  - memory-bound ops report GB/s (bytes each op must move) and `of_copy`, the fraction of the
//  device-to-device copy
//    bandwidth measured in the same process (the practical ceiling);
//  - GEMM and convolution report TFLOP/s (2*M*N*K per GEMM; 2*N*O*Ho*Wo*C/groups*kh*kw per conv forward).
// The shapes match bench/engine_vs_pytorch.py, which runs PyTorch on the same GPU for comparison.
//   build-cuda/bench/bench_cuda_ops [--benchmark_format=json]
#include <benchmark/benchmark.h>

#include <functional>
#include <string>

#include "engine/cuda.h"
#include "engine/ops.h"
#include "engine/optim/sgd.h"

using namespace dgpipe::engine;

namespace {

constexpr int64_t kElements = int64_t(64) << 20;  // 64M elements: 256 MiB of f32, far beyond L2

bool skip_without_cuda(benchmark::State& state) {
  if (cuda_device_count() > 0) return false;
  state.SkipWithError("no CUDA device");
  return true;
}

// Times fn with events on the current stream, once per benchmark iteration.
void time_loop(benchmark::State& state, const std::function<void()>& fn) {
  fn();  // warm-up: allocator, handles, algorithm choice
  cuda::device_synchronize();
  cuda::Event start(true), end(true);
  for (auto _ : state) {
    start.record();
    fn();
    end.record();
    end.synchronize();
    state.SetIterationTime(start.elapsed_ms(end) * 1e-3);
  }
}

// Device-to-device copy bandwidth (read + write bytes per second), measured once.
double copy_bandwidth() {
  static double bw = [] {
    Tensor a = empty({kElements}, TensorOptions(DType::f32, Device::cuda(0)));
    Tensor b = empty_like(a);
    a.zero_();
    b.copy_(a);
    cuda::device_synchronize();
    cuda::Event s(true), e(true);
    const int reps = 20;
    s.record();
    for (int i = 0; i < reps; ++i) b.copy_(a);
    e.record();
    e.synchronize();
    return 2.0 * a.nbytes() * reps / (s.elapsed_ms(e) * 1e-3);
  }();
  return bw;
}

void report_bytes(benchmark::State& state, double bytes) {
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["copy_GB/s"] = copy_bandwidth() * 1e-9;
  // (bytes / copy_bw) per iteration, as a rate: achieved bandwidth / copy bandwidth.
  state.counters["of_copy"] =
      benchmark::Counter(bytes / copy_bandwidth(), benchmark::Counter::kIsIterationInvariantRate);
}

void report_flops(benchmark::State& state, double flops) {
  state.counters["TFLOP/s"] =
      benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
}

DType dtype_arg(int64_t v) {
  return v == 0 ? DType::f32 : (v == 1 ? DType::f16 : DType::bf16);
}

void BM_Copy(benchmark::State& state) {
  if (skip_without_cuda(state)) return;
  Tensor a = zeros({kElements}, TensorOptions(DType::f32, Device::cuda(0))), b = empty_like(a);
  time_loop(state, [&] { b.copy_(a); });
  report_bytes(state, 2.0 * a.nbytes());
}

void BM_Add(benchmark::State& state) {
  if (skip_without_cuda(state)) return;
  DType t = dtype_arg(state.range(0));
  TensorOptions o(t, Device::cuda(0));
  Tensor a = zeros({kElements}, o), b = zeros({kElements}, o);
  NoGradGuard ng;
  time_loop(state, [&] { benchmark::DoNotOptimize(add(a, b).raw_data()); });
  report_bytes(state, 3.0 * a.nbytes());
}

void BM_Gelu(benchmark::State& state) {
  if (skip_without_cuda(state)) return;
  DType t = dtype_arg(state.range(0));
  Tensor a = zeros({kElements}, TensorOptions(t, Device::cuda(0)));
  NoGradGuard ng;
  time_loop(state, [&] { benchmark::DoNotOptimize(gelu(a).raw_data()); });
  report_bytes(state, 2.0 * a.nbytes());
}

void BM_SumRows(benchmark::State& state) {
  if (skip_without_cuda(state)) return;
  int64_t inner = state.range(0);
  Tensor a = zeros({kElements / inner, inner}, TensorOptions(DType::f32, Device::cuda(0)));
  NoGradGuard ng;
  time_loop(state, [&] { benchmark::DoNotOptimize(sum(a, {1}).raw_data()); });
  report_bytes(state, static_cast<double>(a.nbytes()));
}

void BM_SumAll(benchmark::State& state) {
  if (skip_without_cuda(state)) return;
  Tensor a = zeros({kElements}, TensorOptions(DType::f32, Device::cuda(0)));
  NoGradGuard ng;
  time_loop(state, [&] { benchmark::DoNotOptimize(sum(a).raw_data()); });
  report_bytes(state, static_cast<double>(a.nbytes()));
}

void BM_Softmax(benchmark::State& state) {
  if (skip_without_cuda(state)) return;
  int64_t cols = state.range(0);
  Tensor a = zeros({kElements / 4 / cols, cols}, TensorOptions(DType::f32, Device::cuda(0)));
  NoGradGuard ng;
  time_loop(state, [&] { benchmark::DoNotOptimize(softmax(a, -1).raw_data()); });
  report_bytes(state, 2.0 * a.nbytes());
}

void BM_LayerNorm(benchmark::State& state) {
  if (skip_without_cuda(state)) return;
  int64_t cols = state.range(0);
  TensorOptions o(DType::f32, Device::cuda(0));
  Tensor a = zeros({kElements / 4 / cols, cols}, o), w = ones({cols}, o), b = zeros({cols}, o);
  NoGradGuard ng;
  time_loop(state, [&] { benchmark::DoNotOptimize(layer_norm(a, {cols}, w, b, 1e-5).raw_data()); });
  report_bytes(state, 2.0 * a.nbytes());
}

void BM_SgdStep(benchmark::State& state) {
  if (skip_without_cuda(state)) return;
  TensorOptions o(DType::f32, Device::cuda(0));
  Tensor p = zeros({kElements / 4}, o);
  p.requires_grad_(true);
  p.set_grad(zeros({kElements / 4}, o));
  SGDOptions so;
  so.momentum = 0.9;
  SGD opt({p}, so);
  time_loop(state, [&] { opt.step(); });
  report_bytes(state, 5.0 * p.nbytes());  // read p, g, buf; write p, buf
}

void BM_Gemm(benchmark::State& state) {
  if (skip_without_cuda(state)) return;
  int64_t n = state.range(0);
  DType t = dtype_arg(state.range(1));
  Generator g(1);
  TensorOptions o(t, Device::cuda(0));
  Tensor a = randn({n, n}, o, &g), b = randn({n, n}, o, &g);
  NoGradGuard ng;
  time_loop(state, [&] { benchmark::DoNotOptimize(matmul(a, b).raw_data()); });
  report_flops(state, 2.0 * n * n * n);
}

// ResNet-style 3x3 convolution, batch 64, forward.
void BM_Conv3x3(benchmark::State& state) {
  if (skip_without_cuda(state)) return;
  int64_t c = state.range(0), hw = state.range(1);
  DType t = dtype_arg(state.range(2));
  Generator g(2);
  TensorOptions o(t, Device::cuda(0));
  Tensor x = randn({64, c, hw, hw}, o, &g), w = randn({c, c, 3, 3}, o, &g);
  Conv2dParams p;
  p.pad_h = p.pad_w = 1;
  NoGradGuard ng;
  time_loop(state, [&] { benchmark::DoNotOptimize(conv2d(x, w, Tensor(), p).raw_data()); });
  report_flops(state, 2.0 * 64 * c * hw * hw * c * 9);
}

}  // namespace

BENCHMARK(BM_Copy)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Add)->Arg(0)->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Gelu)->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SumRows)->Arg(64)->Arg(1024)->Arg(65536)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SumAll)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Softmax)->Arg(128)->Arg(4096)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LayerNorm)->Arg(768)->Arg(4096)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SgdStep)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Gemm)
    ->Args({1024, 0})
    ->Args({4096, 0})
    ->Args({4096, 1})
    ->Args({4096, 2})
    ->Args({8192, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Conv3x3)
    ->Args({64, 32, 0})
    ->Args({64, 32, 1})
    ->Args({256, 16, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
