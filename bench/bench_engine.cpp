// Engine throughput: square f32 GEMM (counter GFLOP, shown per second: 2*n^3 flops per matmul), BERT's
// linear layers (4096 tokens x 384 <-> 1152 / 1536, x W^T) on each CPU GEMM backend side by side (gemm.h), and
// memory-bound ops on 16M floats (counter GB, per second, counting the bytes each op must move: add/mul read
// two arrays and write one, gelu reads one and writes one, sum reads one; the AdamW step reads param, grad
// and both moments and writes param and moments). Every benchmark runs on the CPU; the same set runs on
// cuda:0 when a GPU is present (synchronised per iteration, so the figures include launch overhead).
//   build-<dir>/bench/bench_engine [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "engine/cuda.h"
#include "engine/ops.h"
#include "engine/ops/conv_onednn.h"
#include "engine/ops/gemm.h"
#include "engine/optim/adamw.h"

using namespace dgpipe::engine;

namespace {

constexpr int64_t kElements = int64_t(16) << 20;  // 16M floats = 64 MiB per array

void sync_if_cuda(Device d) {
  if (d.is_cuda()) cuda::device_synchronize(d.index);
}

void set_bytes_rate(benchmark::State& state, double bytes_per_iteration) {
  state.counters["GB"] =
      benchmark::Counter(bytes_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Sgemm(benchmark::State& state, Device device) {
  const int64_t n = state.range(0);
  Generator gen(11);
  Tensor a = randn({n, n}, TensorOptions(DType::f32, device), &gen);
  Tensor b = randn({n, n}, TensorOptions(DType::f32, device), &gen);
  NoGradGuard ng;
  for (auto _ : state) {
    Tensor c = matmul(a, b);
    sync_if_cuda(device);
    benchmark::DoNotOptimize(c.raw_data());
  }
  state.counters["GFLOP"] =
      benchmark::Counter(2.0 * n * n * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// y = x W^T for x [4096, in], W [out, in], as the MiniLM-size BERT step's linear layers, on `backend`.
void BM_LinearBert(benchmark::State& state, cpu::GemmBackend backend) {
  const int64_t in = state.range(0), out = state.range(1), tokens = 4096;
  Generator gen(13);
  Tensor x = randn({tokens, in}, {}, &gen), w = randn({out, in}, {}, &gen);
  const cpu::GemmBackend saved = cpu::gemm_backend();
  cpu::set_gemm_backend(backend);
  NoGradGuard ng;
  for (auto _ : state) {
    Tensor y = linear(x, w, Tensor());
    benchmark::DoNotOptimize(y.raw_data());
  }
  cpu::set_gemm_backend(saved);
  state.counters["GFLOP"] =
      benchmark::Counter(2.0 * tokens * in * out * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// add_inplace (x += y, no output allocation) separates the loop's bandwidth from the cost of a fresh 64 MiB
// output (allocation and first-touch page faults on the CPU) that add pays.
enum class Elementwise { add, add_inplace, mul, gelu, sum };

void BM_Elementwise(benchmark::State& state, Device device, Elementwise op) {
  Generator gen(12);
  Tensor x = randn({kElements}, TensorOptions(DType::f32, device), &gen);
  Tensor y = randn({kElements}, TensorOptions(DType::f32, device), &gen);
  NoGradGuard ng;
  for (auto _ : state) {
    Tensor out;
    switch (op) {
      case Elementwise::add:
        out = add(x, y);
        break;
      case Elementwise::add_inplace:
        out = add_(x, y, 1e-9);
        break;
      case Elementwise::mul:
        out = mul(x, y);
        break;
      case Elementwise::gelu:
        out = gelu(x);
        break;
      case Elementwise::sum:
        out = sum(x);
        break;
    }
    sync_if_cuda(device);
    benchmark::DoNotOptimize(out.raw_data());
  }
  const double array = 4.0 * kElements;
  double bytes = 0;
  switch (op) {
    case Elementwise::add:
    case Elementwise::add_inplace:
    case Elementwise::mul:
      bytes = 3 * array;
      break;
    case Elementwise::gelu:
      bytes = 2 * array;
      break;
    case Elementwise::sum:
      bytes = array;
      break;
  }
  set_bytes_rate(state, bytes);
}

void BM_AdamWStep(benchmark::State& state, Device device) {
  Generator gen(13);
  Tensor p = randn({kElements}, TensorOptions(DType::f32, device), &gen);
  p.requires_grad_();
  p.set_grad(randn({kElements}, TensorOptions(DType::f32, device), &gen));
  AdamW opt({p}, AdamWOptions{});
  opt.step();  // moments allocated outside the timed loop
  for (auto _ : state) {
    opt.step();
    sync_if_cuda(device);
  }
  set_bytes_rate(state, 7.0 * 4.0 * kElements);
}

void register_all(Device device) {
  const std::string dev = device.is_cuda() ? "cuda" : "cpu";
  auto* gemm = benchmark::RegisterBenchmark(("sgemm/" + dev).c_str(), BM_Sgemm, device);
  gemm->Arg(256)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
  if (!device.is_cuda()) {
    std::vector<cpu::GemmBackend> backends = {cpu::GemmBackend::openblas};
    if (onednn_built()) backends.push_back(cpu::GemmBackend::onednn);
    for (cpu::GemmBackend b : backends)
      benchmark::RegisterBenchmark((std::string("linear_bert/") + cpu::gemm_backend_name(b) + "/cpu").c_str(),
                                   BM_LinearBert, b)
          ->Args({384, 1152})
          ->Args({384, 1536})
          ->Args({1536, 384})
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
  }
  const std::pair<const char*, Elementwise> ops[] = {{"add", Elementwise::add},
                                                     {"add_inplace", Elementwise::add_inplace},
                                                     {"mul", Elementwise::mul},
                                                     {"gelu", Elementwise::gelu},
                                                     {"sum", Elementwise::sum}};
  for (const auto& [name, op] : ops)
    benchmark::RegisterBenchmark((std::string(name) + "_16M/" + dev).c_str(), BM_Elementwise, device, op)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  benchmark::RegisterBenchmark(("adamw_step_16M/" + dev).c_str(), BM_AdamWStep, device)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all(Device::cpu());
  if (cuda_available()) register_all(Device::cuda(0));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
