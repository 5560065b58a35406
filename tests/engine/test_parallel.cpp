// parallel_for: every index exactly once, serial fallbacks, exceptions, the per-thread budget; and the ops
// that use it give bitwise the same results at any thread count (convolution, depthwise convolution, batch
// norm, elementwise ops, attention's batched products, forward and backward).
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "engine/ops.h"
#include "engine/ops/conv_onednn.h"
#include "engine/parallel.h"
#include "support/test_util.h"

using namespace dgpipe::engine;
using dgpipe::testing::ThreadsScope;

TEST(ParallelFor, CoversEveryIndexOnceInChunksOfAtLeastTheGrain) {
  ThreadsScope threads(3);
  std::vector<std::atomic<int>> hits(1000);
  std::atomic<int> calls{0}, short_chunks{0};
  parallel_for(1000, 100, [&](int64_t begin, int64_t end) {
    ++calls;
    if (end - begin < 100 && end != 1000) ++short_chunks;
    for (int64_t i = begin; i < end; ++i) ++hits[i];
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  EXPECT_EQ(calls.load(), 3);
  EXPECT_EQ(short_chunks.load(), 0);
}

TEST(ParallelFor, RunsSeriallyWhenSmallOneThreadOrNested) {
  ThreadsScope threads(4);
  int calls = 0;
  parallel_for(10, 8, [&](int64_t begin, int64_t end) {
    ++calls;
    EXPECT_EQ(begin, 0);
    EXPECT_EQ(end, 10);
  });
  EXPECT_EQ(calls, 1);
  std::atomic<int> inner_calls{0};
  parallel_for(4, 1,
               [&](int64_t, int64_t) { parallel_for(100, 1, [&](int64_t, int64_t) { ++inner_calls; }); });
  EXPECT_EQ(inner_calls.load(), 4);  // one serial call per outer chunk
  set_thread_cpu_threads(1);
  int one = 0;
  parallel_for(1000, 1, [&](int64_t, int64_t) { ++one; });
  set_thread_cpu_threads(0);
  EXPECT_EQ(one, 1);
}

TEST(ParallelFor, RethrowsAfterEveryChunkHasFinished) {
  ThreadsScope threads(3);
  std::atomic<int> finished{0};
  EXPECT_THROW(parallel_for(3, 1,
                            [&](int64_t begin, int64_t) {
                              if (begin == 1) throw std::runtime_error("chunk failed");
                              ++finished;
                            }),
               std::runtime_error);
  EXPECT_EQ(finished.load(), 2);
  int after = 0;  // the pool still works
  parallel_for(3, 1, [&](int64_t b, int64_t e) { after += static_cast<int>(e - b); });
  EXPECT_EQ(after, 3);
}

TEST(ParallelFor, ThreadBudgetIsPerThreadWhenSet) {
  ThreadsScope threads(4);
  set_thread_cpu_threads(2);
  EXPECT_EQ(cpu_threads(), 2);
  int other = 0;
  std::thread([&] { other = cpu_threads(); }).join();
  EXPECT_EQ(other, 4);
  set_thread_cpu_threads(0);
  EXPECT_EQ(cpu_threads(), 4);
  EXPECT_GE(available_cores(), 1);
}

namespace {

// Forward and backward of a small MobileNet-like block in f32; returns the output and every gradient. The
// convolutions run on the reference kernels, which use parallel_for: oneDNN's (the default backend) may
// differ in the last bits between thread counts (test_conv_onednn checks them at a fixed count).
std::vector<std::vector<double>> block_results() {
  const dgpipe::testing::CpuConvBackendScope reference(CpuConvBackend::reference);
  Generator gen(11);
  const TensorOptions f32(DType::f32);
  Tensor x = randn({6, 8, 20, 20}, f32, &gen).requires_grad_(true);
  Tensor w1 = mul(randn({32, 8, 3, 3}, f32, &gen), 0.2).detach().requires_grad_(true);
  Tensor b1 = randn({32}, f32, &gen).requires_grad_(true);
  Tensor wd = randn({32, 1, 3, 3}, f32, &gen).requires_grad_(true);
  Tensor gamma = randn({32}, f32, &gen).requires_grad_(true),
         beta = randn({32}, f32, &gen).requires_grad_(true);
  Tensor rm = zeros({32}, f32), rv = ones({32}, f32);
  Conv2dParams p;
  p.pad_h = p.pad_w = 1;
  Tensor h = conv2d(x, w1, b1, p);
  h = relu6(batch_norm2d(h, gamma, beta, rm, rv, true, 0.1, 1e-5));
  Conv2dParams dw = p;
  dw.groups = 32;
  dw.stride_h = dw.stride_w = 2;
  Tensor y = add(relu(conv2d(h, wd, Tensor(), dw)), mul(h.slice(2, 0, 20, 2).slice(3, 0, 20, 2), 0.5));
  Tensor probe = randn(y.shape(), f32, &gen);
  sum(mul(y, probe)).backward();
  return {y.to_vector(),           x.grad().to_vector(),  w1.grad().to_vector(),
          b1.grad().to_vector(),   wd.grad().to_vector(), gamma.grad().to_vector(),
          beta.grad().to_vector(), rm.to_vector(),        rv.to_vector()};
}

// The same for a transformer-like block: linear (its bias gradient is a sum over the leading dims), GELU,
// dropout, layer norm, softmax.
std::vector<std::vector<double>> text_block_results() {
  Generator gen(12);
  const TensorOptions f32(DType::f32);
  Tensor x = randn({8, 128, 96}, f32, &gen).requires_grad_(true);
  Tensor w = mul(randn({128, 96}, f32, &gen), 0.1).detach().requires_grad_(true);
  Tensor b = randn({128}, f32, &gen).requires_grad_(true);
  Tensor h = dropout(gelu(linear(x, w, b)), 0.1, true, &gen);
  Tensor y = softmax(layer_norm(h, {128}, Tensor(), Tensor(), 1e-5), -1);
  Tensor probe = randn(y.shape(), f32, &gen);
  sum(mul(y, probe)).backward();
  return {y.to_vector(), x.grad().to_vector(), w.grad().to_vector(), b.grad().to_vector()};
}

// Attention's batched products (one GEMM per head, split over the threads) on permuted heads, with the
// softmax between them, forward and backward.
std::vector<std::vector<double>> attention_results() {
  Generator gen(13);
  const TensorOptions f32(DType::f32);
  Tensor x = randn({4, 64, 96}, f32, &gen).requires_grad_(true);
  Tensor heads = x.view({4, 64, 3, 32}).permute({0, 2, 1, 3});
  Tensor probs = softmax(mul(matmul(heads, heads.transpose(-1, -2)), 0.17), -1);
  Tensor y = matmul(probs, heads);
  Tensor probe = randn(y.shape(), f32, &gen);
  sum(mul(y, probe)).backward();
  return {y.to_vector(), x.grad().to_vector()};
}

void expect_same_at_one_and_three_threads(const std::function<std::vector<std::vector<double>>()>& run) {
  std::vector<std::vector<double>> one, three;
  {
    ThreadsScope threads(1);
    one = run();
  }
  {
    ThreadsScope threads(3);
    three = run();
  }
  ASSERT_EQ(one.size(), three.size());
  for (size_t i = 0; i < one.size(); ++i) EXPECT_EQ(one[i], three[i]) << "result " << i;
}

}  // namespace

TEST(ParallelOps, ImageBlockIsBitwiseTheSameAtAnyThreadCount) {
  expect_same_at_one_and_three_threads(block_results);
}

TEST(ParallelOps, TextBlockIsBitwiseTheSameAtAnyThreadCount) {
  expect_same_at_one_and_three_threads(text_block_results);
}

TEST(ParallelOps, AttentionProductsAreBitwiseTheSameAtAnyThreadCount) {
  expect_same_at_one_and_three_threads(attention_results);
}
