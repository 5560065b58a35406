// The index math of the CUDA element-wise kernels (engine/cuda/indexing.h), checked on the CPU: the 32-bit
// multiply-high division against plain division, the 32-bit strided indexer against the 64-bit one over
// views and broadcasts, and the recognition of a broadcast vector operand (the bias-add fast path).
#include <gtest/gtest.h>

#include <random>

#include "engine/cuda/indexing.h"
#include "engine/ops.h"

using namespace dgpipe::engine;
using namespace dgpipe::engine::cuda;

TEST(FastDivmod, MatchesDivisionForEdgeAndRandomDivisors) {
  std::vector<uint32_t> divisors = {1,
                                    2,
                                    3,
                                    5,
                                    7,
                                    10,
                                    24,
                                    33,
                                    100,
                                    641,
                                    768,
                                    3136,
                                    65535,
                                    65536,
                                    65537,
                                    (1u << 20) - 1,
                                    1u << 20,
                                    1000003,
                                    (1u << 30) + 1,
                                    (1u << 31) - 1,
                                    1u << 31};
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) divisors.push_back(1 + rng() % (1u << 31));
  const uint32_t top = (1u << 31) - 1;
  for (uint32_t d : divisors) {
    const FastDivmod f(d);
    std::vector<uint32_t> ns = {0, 1, d - 1, d, d + 1, top, top - 1, top / d * d, top / d * d - 1};
    for (int i = 0; i < 2000; ++i) ns.push_back(rng() % (top + 1u));
    for (uint32_t n : ns) {
      if (n > top) continue;
      ASSERT_EQ(f.div(n), n / d) << n << " / " << d;
      ASSERT_EQ(f.mod(n), n % d) << n << " % " << d;
    }
  }
}

TEST(FastDivmod, RefusesDivisorsOutsideItsRange) {
  EXPECT_THROW(FastDivmod(0), Error);
  EXPECT_NO_THROW(FastDivmod(1u << 31));
}

namespace {

// The offsets of every element by both indexers, for operands viewed with the shape of ts[0].
template <int K>
void expect_indexers_agree(const Tensor* const ts[K], const char* what) {
  const Shape shape = ts[0]->shape();
  const int64_t n = shape_numel(shape);
  const StridedIndexer<K> wide = make_indexer<K>(shape, ts, what);
  ASSERT_TRUE(fits_32bit(wide, n)) << what;
  const StridedIndexer32<K> narrow = narrow_indexer(wide);
  // Reference: walk the multi-index directly.
  std::vector<int64_t> idx(shape.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t a[K], b[K];
    wide.offsets(i, a);
    narrow.offsets(static_cast<uint32_t>(i), b);
    for (int k = 0; k < K; ++k) {
      int64_t expect = ts[k]->offset();
      for (size_t d = 0; d < shape.size(); ++d) expect += idx[d] * ts[k]->strides()[d];
      ASSERT_EQ(a[k], expect) << what << ": 64-bit, element " << i << ", operand " << k;
      ASSERT_EQ(b[k], expect) << what << ": 32-bit, element " << i << ", operand " << k;
    }
    for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

}  // namespace

TEST(StridedIndexer32, AgreesWithTheWideIndexerOverViewsAndBroadcasts) {
  const Tensor out = empty({4, 6, 5});
  const Tensor base = zeros({6, 4, 7});
  const Tensor transposed = base.slice(2, 1, 6).permute({1, 0, 2});  // [4, 6, 5], offset 1
  const Tensor bias = zeros({5}).expand({4, 6, 5});
  const Tensor channel = zeros({1, 6, 1}).expand({4, 6, 5});
  const Tensor* pair[2] = {&out, &transposed};
  expect_indexers_agree<2>(pair, "transposed slice");
  const Tensor* triple[3] = {&out, &bias, &channel};
  expect_indexers_agree<3>(triple, "broadcasts");
}

TEST(StridedIndexer32, IsOnlyUsedWhereItFits) {
  const Tensor small = zeros({3, 4});
  const Tensor* one[1] = {&small};
  EXPECT_TRUE(fits_32bit(make_indexer<1>(small.shape(), one, "small"), small.numel()));
  EXPECT_FALSE(fits_32bit(make_indexer<1>(small.shape(), one, "small"), int64_t(1) << 31));
  // An operand whose reach passes 2^31 (a huge stride) takes the 64-bit indexer.
  StridedIndexer<1> far;
  far.ndim = 1;
  far.sizes[0] = 3;
  far.strides[0][0] = int64_t(1) << 30;
  far.base[0] = 0;
  EXPECT_FALSE(fits_32bit(far, 3));
  far.strides[0][0] = (int64_t(1) << 30) - 1;
  EXPECT_TRUE(fits_32bit(far, 3));
}

TEST(VectorBroadcast, RecognisesBiasChannelColumnAndScalarOperands) {
  auto layout = [](const Tensor& full, const Tensor& other) {
    const Tensor out = empty(full.shape());
    const Tensor* ts[3] = {&out, &full, &other};
    return vector_broadcast(make_indexer<3>(out.shape(), ts, "test"), 2);
  };
  const Tensor rows = zeros({8, 16, 33});
  VectorBroadcast bias = layout(rows, zeros({33}).expand({8, 16, 33}));
  EXPECT_TRUE(bias.found);
  EXPECT_EQ(bias.channels, 33);
  EXPECT_EQ(bias.inner, 1);
  const Tensor nchw = zeros({2, 3, 4, 5});
  VectorBroadcast channel = layout(nchw, zeros({1, 3, 1, 1}).expand({2, 3, 4, 5}));
  EXPECT_TRUE(channel.found);
  EXPECT_EQ(channel.channels, 3);
  EXPECT_EQ(channel.inner, 20);
  VectorBroadcast column = layout(zeros({7, 5}), zeros({7, 1}).expand({7, 5}));
  EXPECT_TRUE(column.found);
  EXPECT_EQ(column.channels, 7);
  EXPECT_EQ(column.inner, 5);
  VectorBroadcast scalar = layout(zeros({7, 5}), scalar_tensor(2.0).expand({7, 5}));
  EXPECT_TRUE(scalar.found);
  EXPECT_EQ(scalar.channels, 1);
  // Trailing dims that merge count as one vector: [3, 5] broadcast over [4, 3, 5] is 15 channels.
  VectorBroadcast block = layout(zeros({4, 3, 5}), zeros({3, 5}).expand({4, 3, 5}));
  EXPECT_TRUE(block.found);
  EXPECT_EQ(block.channels, 15);
  // Not vectors: a transposed operand, a broadcast over a middle dim only.
  EXPECT_FALSE(layout(zeros({5, 7}), zeros({7, 5}).t()).found);
  EXPECT_FALSE(layout(zeros({4, 3, 5}), zeros({4, 1, 5}).expand({4, 3, 5})).found);
}

// The vector's element for every linear index, as the fast kernel computes it with two FastDivmods, is the
// element the strided indexer finds.
TEST(VectorBroadcast, ElementFormulaMatchesTheIndexer) {
  const Tensor out = empty({2, 3, 4, 5});
  const Tensor full = zeros({2, 3, 4, 5});
  const Tensor channel = zeros({1, 3, 1, 1}).expand({2, 3, 4, 5});
  const Tensor* ts[3] = {&out, &full, &channel};
  const StridedIndexer<3> ix = make_indexer<3>(out.shape(), ts, "test");
  const VectorBroadcast v = vector_broadcast(ix, 2);
  ASSERT_TRUE(v.found);
  const FastDivmod inner(static_cast<uint32_t>(v.inner)), channels(static_cast<uint32_t>(v.channels));
  for (uint32_t i = 0; i < out.numel(); ++i) {
    int64_t off[3];
    ix.offsets(i, off);
    ASSERT_EQ(channels.mod(inner.div(i)), off[2]) << "element " << i;
  }
}
