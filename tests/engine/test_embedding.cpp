#include <gtest/gtest.h>

#include "engine/ops.h"
#include "support/golden_json.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;

TEST(Embedding, MatchesPyTorchGolden) {
  auto c = load_golden_json("ops_nn.json").at("cases").at("embedding");
  Tensor w = golden_tensor(c.at("weight"), DType::f32);
  Tensor ix = golden_tensor(c.at("indices"), DType::i64);
  Tensor out = embedding(w, ix, c.at("padding_idx").get<int64_t>());
  Tensor expect = golden_tensor(c.at("out"), DType::f32);
  EXPECT_EQ(out.shape(), expect.shape());
  EXPECT_LT(max_rel_diff(out, expect), 1e-5);
}

TEST(Embedding, GathersRowsForAnyIndexShapeAndDtype) {
  Tensor w = arange(0, 12, 1, DType::f32).view({4, 3});
  Tensor ix64 = from_vector(std::vector<int64_t>{3, 0, 2, 2, 1, 3}, {1, 2, 3});
  Tensor out = embedding(w, ix64);
  EXPECT_EQ(out.shape(), (Shape{1, 2, 3, 3}));
  std::vector<double> v = out.to_vector();
  EXPECT_EQ(v[0], 9.0);    // row 3
  EXPECT_EQ(v[3], 0.0);    // row 0
  EXPECT_EQ(v[17], 11.0);  // last index 3, last column
  EXPECT_EQ(embedding(w, ix64.to(DType::i32)).to_vector(), v);
  // A 0-d index gives one row.
  Tensor one = embedding(w, full({}, 2.0, DType::i64));
  EXPECT_EQ(one.shape(), (Shape{3}));
  EXPECT_EQ(one.to_vector(), (std::vector<double>{6, 7, 8}));
  // Non-contiguous indices and weight.
  Tensor ixt = from_vector(std::vector<int64_t>{0, 1, 2, 3}, {2, 2}).t();  // [[0,2],[1,3]]
  Tensor wt = arange(0, 12, 1, DType::f32).view({3, 4}).t();               // [4,3], column-major
  Tensor o2 = embedding(wt, ixt);
  EXPECT_EQ(o2.to_vector()[3], wt.contiguous().to_vector()[2 * 3]);  // out[0,1,:] = wt[2,:]
}

TEST(Embedding, GradcheckWeightWithRepeatsAndPadding) {
  Tensor w = random_leaf({5, 3}, -1, 1, 1);
  Tensor ix = from_vector(std::vector<int64_t>{1, 4, 1, 0, 2, 4, 1, 0}, {2, 4});
  for (int64_t pad : {-1, 0, 1}) {
    SCOPED_TRACE("padding_idx " + std::to_string(pad));
    auto f = [ix, pad](const Inputs& in) {
      // the gradcheck compares against finite differences, which do see the padding row; zero it in the
      // forward of the check so both agree (the real semantics are tested below).
      Tensor out = embedding(in[0], ix, pad);
      if (pad < 0) return out;
      Tensor keep = ne(ix, full({}, static_cast<double>(pad), DType::i64)).unsqueeze(-1);
      return where(keep, out, zeros_like(out));
    };
    EXPECT_GRADCHECK(f, (Inputs{w}));
  }
}

TEST(Embedding, GradcheckNonContiguousWeight) {
  Tensor leaf = random_leaf({3, 6}, -1, 1, 2);
  Tensor ix = from_vector(std::vector<int64_t>{5, 0, 5, 3}, {4}).to(DType::i32);
  auto f = [ix](const Inputs& in) { return embedding(in[0].t(), ix); };
  EXPECT_GRADCHECK(f, (Inputs{leaf}));
}

TEST(Embedding, BackwardAccumulatesRepeatsAndSkipsPaddingRow) {
  Tensor w = random_leaf({4, 2}, -1, 1, 3);
  Tensor ix = from_vector(std::vector<int64_t>{2, 0, 2, 2, 3}, {5});
  Tensor out = embedding(w, ix, /*padding_idx=*/3);
  // The padding row is still looked up in the forward pass (PyTorch does the same).
  EXPECT_EQ(out.select(0, 4).to_vector(), w.detach().select(0, 3).to_vector());
  Tensor g = from_vector(std::vector<double>{1, 10, 2, 20, 3, 30, 4, 40, 5, 50}, {5, 2}, DType::f64);
  out.backward(g);
  EXPECT_EQ(w.grad().to_vector(), (std::vector<double>{2, 20, 0, 0, 1 + 3 + 4, 10 + 30 + 40, 0, 0}));
}

TEST(Embedding, ErrorsNameIndexAndTableSize) {
  Tensor w = zeros({10, 4});
  std::string e = error_of([&] { embedding(w, from_vector(std::vector<int64_t>{1, 10}, {2})); });
  EXPECT_TRUE(contains(e, "embedding")) << e;
  EXPECT_TRUE(contains(e, "index 10")) << e;
  EXPECT_TRUE(contains(e, "10 rows")) << e;
  e = error_of([&] { embedding(w, from_vector(std::vector<int64_t>{-1}, {1}).to(DType::i32)); });
  EXPECT_TRUE(contains(e, "index -1")) << e;
  e = error_of([&] { embedding(w, zeros({2})); });
  EXPECT_TRUE(contains(e, "i32 or i64")) << e;
  e = error_of([&] { embedding(w, from_vector(std::vector<int64_t>{1}, {1}), 10); });
  EXPECT_TRUE(contains(e, "padding_idx 10")) << e;
  EXPECT_THROW(embedding(zeros({10}), from_vector(std::vector<int64_t>{1}, {1})), Error);
}
