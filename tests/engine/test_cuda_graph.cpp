// CUDA graph capture of a steady-state training step (forward, backward and SGD update of a small MLP): after
// a warm-up, the step is captured once and replayed; replays must give the same parameters as running the
// step eagerly, and must not allocate from the driver. And the allocator during capture: other streams keep
// allocating from the general pool, and a block freed during capture is not handed out before the graph is
// gone.
#include <gtest/gtest.h>

#include "engine/cuda.h"
#include "engine/ops.h"
#include "engine/optim/sgd.h"
#include "support/gradcheck.h"

using namespace dgpipe::engine;
using dgpipe::testing::max_rel_diff;

namespace {

struct Mlp {
  Tensor w1, b1, w2;
  std::vector<Tensor> params() const { return {w1, b1, w2}; }
};

Mlp make_mlp(uint64_t seed) {
  Generator g(seed);
  TensorOptions o(DType::f32, Device::cuda(0));
  Mlp m{mul(randn({16, 32}, o, &g), 0.2), zeros({32}, o), mul(randn({32, 4}, o, &g), 0.2)};
  for (Tensor* t : {&m.w1, &m.b1, &m.w2}) {
    *t = t->detach();
    t->requires_grad_(true);
  }
  return m;
}

// One step. Gradients are reset to "none" first, so every step allocates them afresh (inside a capture: from
// the graph's private pool) instead of accumulating.
void train_step(Mlp& m, SGD& opt, const Tensor& x, const Tensor& y) {
  for (Tensor& p : std::vector<Tensor>{m.w1, m.b1, m.w2}) p.zero_grad();
  Tensor h = gelu(add(matmul(x, m.w1), m.b1));
  Tensor out = matmul(h, m.w2);
  Tensor diff = sub(out, y);
  Tensor loss = mean(mul(diff, diff));
  loss.backward();
  opt.step();
}

}  // namespace

TEST(CudaGraph, CapturesAndReplaysATrainingStep) {
  DGP_SKIP_WITHOUT_CUDA();
  cuda::Stream stream = cuda::Stream::create();
  cuda::StreamGuard sg(stream);
  Generator g(3);
  TensorOptions o(DType::f32, Device::cuda(0));
  Tensor x = randn({8, 16}, o, &g), y = randn({8, 4}, o, &g);

  SGDOptions so;
  so.lr = 0.05;
  so.momentum = 0.9;
  Mlp eager = make_mlp(1), graphed = make_mlp(1);
  SGD opt_eager(eager.params(), so), opt_graphed(graphed.params(), so);

  // Warm-up on the capture stream: the allocator caches every block the step needs, cuBLAS makes its handle
  // and the momentum buffers exist.
  for (int i = 0; i < 3; ++i) {
    train_step(eager, opt_eager, x, y);
    train_step(graphed, opt_graphed, x, y);
  }
  stream.synchronize();

  cuda::Graph graph;
  graph.capture_begin();
  train_step(graphed, opt_graphed, x, y);  // recorded, not run
  graph.capture_end();
  ASSERT_TRUE(graph.captured());

  uint64_t mallocs = cuda::memory_stats().num_device_mallocs;
  for (int i = 0; i < 5; ++i) {
    graph.replay();
    train_step(eager, opt_eager, x, y);
  }
  stream.synchronize();
  EXPECT_EQ(cuda::memory_stats().num_device_mallocs, mallocs) << "replays must not allocate";
  for (size_t i = 0; i < 3; ++i)
    EXPECT_LE(max_rel_diff(graphed.params()[i].detach().to(Device::cpu()),
                           eager.params()[i].detach().to(Device::cpu())),
              1e-6)
        << "parameter " << i;
}

TEST(CudaGraph, RefusesTheLegacyDefaultStream) {
  DGP_SKIP_WITHOUT_CUDA();
  cuda::StreamGuard sg(cuda::Stream::default_stream(0));
  cuda::Graph graph;
  EXPECT_THROW(graph.capture_begin(), Error);
}

namespace {
Tensor dev_bytes(int64_t nbytes) {
  return empty({nbytes}, TensorOptions(DType::u8, Device::cuda(0)));
}
}  // namespace

TEST(CudaGraph, OtherStreamsAllocateFromTheGeneralPoolDuringCapture) {
  DGP_SKIP_WITHOUT_CUDA();
  cuda::Stream capturing = cuda::Stream::create(), other = cuda::Stream::create();
  void* cached = nullptr;
  {
    cuda::StreamGuard g(other);
    cached = dev_bytes(3 << 20).raw_data();
  }
  cuda::StreamGuard g(capturing);
  Tensor x = zeros({1024}, TensorOptions(DType::f32, Device::cuda(0)));
  capturing.synchronize();
  cuda::Graph graph;
  graph.capture_begin();
  x.fill_(1.0);
  {
    cuda::StreamGuard on_other(other);
    EXPECT_EQ(dev_bytes(3 << 20).raw_data(), cached) << "the other stream reuses its own cached block";
  }
  graph.capture_end();
  cuda::StreamGuard on_other(other);
  EXPECT_EQ(dev_bytes(3 << 20).raw_data(), cached)
      << "a block another stream used during the capture must not have gone to the graph's pool";
}

TEST(CudaGraph, BlocksFreedDuringCaptureWaitForTheGraph) {
  DGP_SKIP_WITHOUT_CUDA();
  cuda::Stream stream = cuda::Stream::create();
  cuda::StreamGuard sg(stream);
  const TensorOptions o(DType::f32, Device::cuda(0));
  Tensor y = zeros({1 << 20}, o);
  Tensor scratch = ones({1 << 20}, o);
  void* scratch_ptr = scratch.raw_data();
  stream.synchronize();
  Tensor fresh;
  {
    cuda::Graph graph;
    graph.capture_begin();
    y.copy_(scratch);    // the graph reads scratch on every replay
    scratch = Tensor();  // freed during the capture
    graph.capture_end();
    fresh = empty({1 << 20}, o);
    EXPECT_NE(fresh.raw_data(), scratch_ptr) << "a block the graph still reads was handed out";
    graph.replay();
  }
  EXPECT_EQ(empty({1 << 20}, o).raw_data(), scratch_ptr) << "the block returns once the graph is gone";
  EXPECT_EQ(sum(y).item(), double(1 << 20));
}
