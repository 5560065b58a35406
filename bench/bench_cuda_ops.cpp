// CUDA kernel throughput, timed with CUDA events (manual time, so host overhead between launches is
// excluded):
//  - memory-bound ops report GB/s (bytes each op must move) and `of_copy`, the fraction of the
//  device-to-device
//    copy bandwidth measured in the same process (the practical ceiling);
//  - GEMM and convolution report TFLOP/s (2*M*N*K per GEMM; 2*N*O*Ho*Wo*C/groups*kh*kw per conv forward).
// The benchmarks are the `bench` sizes of the CUDA twin cases (tests/support/cuda_op_cases.cpp): the same op,
// dtype and launchers the twin tests check, on device-sized inputs. Their names are those
// bench/engine_vs_pytorch.py knows; it runs PyTorch on the same GPU for comparison.
//   build-cuda/bench/bench_cuda_ops [--benchmark_format=json]
#include <benchmark/benchmark.h>

#include <functional>
#include <string>

#include "engine/cuda.h"
#include "engine/ops.h"
#include "support/cuda_op_cases.h"

using namespace dgpipe::engine;
using dgpipe::testing::CudaBench;
using dgpipe::testing::CudaTwinCase;

namespace {

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

// Device-to-device copy bandwidth (read + write bytes per second) of 256 MiB, measured once.
double copy_bandwidth() {
  static double bw = [] {
    Tensor a = empty({int64_t(64) << 20}, TensorOptions(DType::f32, Device::cuda(0)));
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

// Times one benchmark size of a case: its step (prepared once, outside the timing) on cuda:0.
void run_case_bench(benchmark::State& state, const CudaTwinCase& c, const CudaBench& b) {
  if (skip_without_cuda(state)) return;
  const Device device = Device::cuda(0);
  NoGradGuard ng;
  dgpipe::testing::Step step =
      dgpipe::testing::prepare_step(c, b.inputs(TensorOptions(c.dtype, device)), device);
  time_loop(state, [&] { benchmark::DoNotOptimize(step().raw_data()); });
  if (b.flops > 0)
    report_flops(state, b.flops);
  else
    report_bytes(state, b.bytes);
}

}  // namespace

int main(int argc, char** argv) {
  for (const CudaTwinCase& c : dgpipe::testing::engine_cuda_cases())
    for (const CudaBench& b : c.bench)
      benchmark::RegisterBenchmark(b.name.c_str(),
                                   [&c, &b](benchmark::State& state) { run_case_bench(state, c, b); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
