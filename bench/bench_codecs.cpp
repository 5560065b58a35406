// Codec throughput: encode and decode of every codec on CIFAR-geometry analogues of the original's boundaries
// (docs/original.md#partitions)
// ([64,32,32,32], [64,1280,4,4], [32,128,768]) and a 16M-element tensor. Counters: "GB" = input f32 bytes per
// second (what the codec consumes; the fairest figure across codecs whose payloads differ), and on CUDA
// "of_copy" = that rate as a fraction of the device-to-device copy bandwidth measured first in the same
// process (BM_CopyBandwidth, read + write of 64 MiB counted as 2 x bytes).
//   build-<dir>/bench/bench_codecs [--benchmark_filter=cuda]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "compress/codec.h"
#include "engine/cuda.h"
#include "engine/ops.h"

using namespace dgpipe;
using engine::Device;
using engine::Tensor;

namespace {

double g_copy_gbps = 0;  // measured D2D copy bandwidth (GB/s), 0 until BM_CopyBandwidth ran

void sync(Device d) {
  if (d.is_cuda()) engine::cuda::device_synchronize(d.index);
}

Tensor boundary_input(const engine::Shape& shape, Device device) {
  engine::Generator gen(7);
  return engine::randn(shape, engine::TensorOptions(engine::DType::f32, device), &gen);
}

void report(benchmark::State& state, double bytes, Device device) {
  state.counters["GB"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (device.is_cuda() && g_copy_gbps > 0) state.counters["copy_GBps"] = g_copy_gbps;
}

void BM_CopyBandwidth(benchmark::State& state) {
  Device d = Device::cuda();
  Tensor a = boundary_input({int64_t(16) << 20}, d);
  Tensor b = engine::empty_like(a);
  for (auto _ : state) {
    b.copy_(a);
    sync(d);
  }
  const double bytes = 2.0 * a.nbytes();
  state.counters["GB"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Measures the copy bandwidth once, directly (google-benchmark counters are not readable from other
// benchmarks).
double measure_copy_gbps() {
  Device d = Device::cuda();
  Tensor a = boundary_input({int64_t(16) << 20}, d);
  Tensor b = engine::empty_like(a);
  b.copy_(a);
  sync(d);
  auto t0 = std::chrono::steady_clock::now();
  const int reps = 20;
  for (int i = 0; i < reps; ++i) b.copy_(a);
  sync(d);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * a.nbytes() * reps / s * 1e-9;
}

void BM_Encode(benchmark::State& state, std::string spec, engine::Shape shape, Device device) {
  auto codec = compress::make_codec(spec);
  Tensor x = boundary_input(shape, device);
  compress::Packet p = codec->encode(x);
  sync(device);
  for (auto _ : state) {
    p = codec->encode(x);
    sync(device);
  }
  report(state, static_cast<double>(x.nbytes()), device);
  state.counters["wire_ratio"] = static_cast<double>(p.wire_bytes()) / x.nbytes();
  if (device.is_cuda() && g_copy_gbps > 0)
    state.counters["of_copy"] =
        benchmark::Counter(x.nbytes() * 1e-9 / g_copy_gbps, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Decode(benchmark::State& state, std::string spec, engine::Shape shape, Device device) {
  auto codec = compress::make_codec(spec);
  Tensor x = boundary_input(shape, device);
  compress::Packet p = codec->encode(x);
  Tensor y = codec->decode(p);
  sync(device);
  for (auto _ : state) {
    y = codec->decode(p);
    sync(device);
  }
  report(state, static_cast<double>(x.nbytes()), device);
  if (device.is_cuda() && g_copy_gbps > 0)
    state.counters["of_copy"] =
        benchmark::Counter(x.nbytes() * 1e-9 / g_copy_gbps, benchmark::Counter::kIsIterationInvariantRate);
}

std::string shape_name(const engine::Shape& s) {
  return engine::shape_str(s);
}

void register_all() {
  const std::vector<engine::Shape> shapes = {
      {64, 32, 32, 32}, {64, 1280, 4, 4}, {32, 128, 768}, {int64_t(16) << 20}};
  std::vector<Device> devices = {Device::cpu()};
  if (engine::cuda_available()) {
    devices.push_back(Device::cuda());
    g_copy_gbps = measure_copy_gbps();
    benchmark::RegisterBenchmark("copy/cuda/16M", BM_CopyBandwidth)->UseRealTime();
  }
  // Every codec on the GPU (where the quantizers are fused kernels); on the CPU the cheap ones everywhere and
  // the expensive ones (k-means, SVD) only on the smaller boundaries to keep a run short.
  const std::vector<std::string> specs = {"none",          "fp16",           "bf16",          "uniform:4",
                                          "uniform:8",     "uniform:12",     "sortquant:3+1", "sortquant:6+2",
                                          "sortquant:9+3", "sortquant:12+4", "fastquant:6+2", "fastquant:9+3",
                                          "topk:0.1",      "power:4",        "svd:4",         "kmeans:4"};
  for (Device d : devices)
    for (const auto& shape : shapes)
      for (const auto& spec : specs) {
        const bool slow =
            spec.rfind("kmeans", 0) == 0 || spec.rfind("svd", 0) == 0 || spec.rfind("power", 0) == 0;
        if (slow && engine::shape_numel(shape) > (int64_t(4) << 20)) continue;
        if (shape.size() == 1 && (spec.rfind("power", 0) == 0 || spec.rfind("svd", 0) == 0)) continue;
        const std::string name = spec + "/" + (d.is_cuda() ? "cuda" : "cpu") + "/" + shape_name(shape);
        benchmark::RegisterBenchmark(("encode/" + name).c_str(), BM_Encode, spec, shape, d)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
        benchmark::RegisterBenchmark(("decode/" + name).c_str(), BM_Decode, spec, shape, d)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
