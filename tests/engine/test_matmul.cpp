#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/ops.h"
#include "engine/ops/conv_onednn.h"
#include "engine/ops/gemm.h"
#include "engine/parallel.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;

namespace {
// Plain triple loop over contiguous copies: C[m,n] = sum_k A[m,k] B[k,n].
std::vector<double> naive_mm(const Tensor& a, const Tensor& b) {
  int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  std::vector<double> av = a.to_vector(), bv = b.to_vector(), c(M * N, 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) c[m * N + n] += av[m * K + k] * bv[k * N + n];
  return c;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-12) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}
}  // namespace

TEST(Matmul, ShapesAndValuesForEveryRankCombination) {
  Tensor A = random_leaf({3, 4}, -1, 1, 1).detach(), B = random_leaf({4, 5}, -1, 1, 2).detach();
  Tensor v4 = random_leaf({4}, -1, 1, 3).detach(), w3 = random_leaf({3}, -1, 1, 4).detach();
  // 2-D x 2-D
  Tensor C = matmul(A, B);
  EXPECT_EQ(C.shape(), (Shape{3, 5}));
  expect_close(C.to_vector(), naive_mm(A, B));
  // 1-D x 1-D: dot product, 0-d
  Tensor d = matmul(v4, v4);
  EXPECT_EQ(d.dim(), 0);
  double dot = 0;
  for (double x : v4.to_vector()) dot += x * x;
  EXPECT_NEAR(d.item(), dot, 1e-12);
  // 2-D x 1-D and 1-D x 2-D
  EXPECT_EQ(matmul(A, v4).shape(), (Shape{3}));
  expect_close(matmul(A, v4).to_vector(), naive_mm(A, v4.view({4, 1})));
  EXPECT_EQ(matmul(w3, A).shape(), (Shape{4}));
  expect_close(matmul(w3, A).to_vector(), naive_mm(w3.view({1, 3}), A));
  // transposed operands (BLAS reads them through strides)
  Tensor At = random_leaf({4, 3}, -1, 1, 5).detach();
  expect_close(matmul(At.t(), B).to_vector(), naive_mm(At.t().contiguous(), B));
  expect_close(matmul(A, B.t().contiguous().t()).to_vector(), naive_mm(A, B));
}

TEST(Matmul, BatchedWithBroadcastBatchDims) {
  Tensor a = random_leaf({2, 1, 3, 4}, -1, 1, 6).detach(), b = random_leaf({3, 4, 2}, -1, 1, 7).detach();
  Tensor c = matmul(a, b);
  EXPECT_EQ(c.shape(), (Shape{2, 3, 3, 2}));
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      expect_close(c.select(0, i).select(0, j).to_vector(),
                   naive_mm(a.select(0, i).select(0, 0), b.select(0, j)));
  // [B,M,K] x [K,N] (folded into one GEMM) and [K] x [B,K,N]
  Tensor x = random_leaf({2, 3, 4}, -1, 1, 8).detach(), W = random_leaf({4, 5}, -1, 1, 9).detach();
  Tensor y = matmul(x, W);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 5}));
  expect_close(y.select(0, 1).to_vector(), naive_mm(x.select(0, 1), W));
  Tensor v = random_leaf({3}, -1, 1, 10).detach();
  EXPECT_EQ(matmul(v, x).shape(), (Shape{2, 4}));
  EXPECT_EQ(matmul(x, random_leaf({4}, -1, 1, 11).detach()).shape(), (Shape{2, 3}));
}

TEST(Matmul, GradcheckAllForms) {
  Tensor m34 = random_leaf({3, 4}, -1, 1, 20), m45 = random_leaf({4, 5}, -1, 1, 21);
  Tensor v4 = random_leaf({4}, -1, 1, 22), v3 = random_leaf({3}, -1, 1, 23);
  Tensor b234 = random_leaf({2, 3, 4}, -1, 1, 24), b2145 = random_leaf({2, 1, 4, 5}, -1, 1, 25);
  Tensor m43 = random_leaf({4, 3}, -1, 1, 26);
  std::vector<std::tuple<const char*, Fn, Inputs>> cases = {
      {"2d_2d", [](const Inputs& in) { return matmul(in[0], in[1]); }, {m34, m45}},
      {"1d_1d", [](const Inputs& in) { return matmul(in[0], in[1]); }, {v4, v4.detach().clone()}},
      {"2d_1d", [](const Inputs& in) { return matmul(in[0], in[1]); }, {m34, v4}},
      {"1d_2d", [](const Inputs& in) { return matmul(in[0], in[1]); }, {v3, m34}},
      {"3d_2d_fold", [](const Inputs& in) { return matmul(in[0], in[1]); }, {b234, m45}},
      {"3d_4d_broadcast", [](const Inputs& in) { return matmul(in[0], in[1]); }, {b234, b2145}},
      {"transposed_a", [](const Inputs& in) { return matmul(in[0].t(), in[1]); }, {m43, m45}},
      {"transposed_b",
       [](const Inputs& in) { return matmul(in[0], in[1].t()); },
       {m34, random_leaf({5, 4}, -1, 1, 28)}},
      {"transposed_batch",
       [](const Inputs& in) { return matmul(in[0].transpose(1, 2), in[1]); },
       {b234.detach().clone().requires_grad_(true), random_leaf({2, 3, 5}, -1, 1, 27)}},
      {"same_input", [](const Inputs& in) { return matmul(in[0], in[0].t()); }, {m34}},
  };
  for (auto& [name, f, in] : cases) {
    SCOPED_TRACE(name);
    EXPECT_GRADCHECK(f, in);
  }
}

TEST(Matmul, BmmValuesAndGradcheck) {
  Tensor a = random_leaf({3, 2, 4}, -1, 1, 30), b = random_leaf({3, 4, 5}, -1, 1, 31);
  Tensor c = bmm(a.detach(), b.detach());
  EXPECT_EQ(c.shape(), (Shape{3, 2, 5}));
  for (int64_t i = 0; i < 3; ++i)
    expect_close(c.select(0, i).to_vector(), naive_mm(a.detach().select(0, i), b.detach().select(0, i)));
  Fn f = [](const Inputs& in) { return bmm(in[0], in[1]); };
  EXPECT_GRADCHECK(f, (Inputs{a, b}));
  Tensor bt = random_leaf({3, 5, 4}, -1, 1, 32);
  Fn g = [](const Inputs& in) { return bmm(in[0], in[1].transpose(1, 2)); };
  EXPECT_GRADCHECK(g, (Inputs{a, bt}));
}

TEST(Matmul, LinearWithAndWithoutBias) {
  Tensor x = random_leaf({2, 3, 4}, -1, 1, 40), W = random_leaf({5, 4}, -1, 1, 41),
         b = random_leaf({5}, -1, 1, 42);
  Tensor y = linear(x.detach(), W.detach(), b.detach());
  EXPECT_EQ(y.shape(), (Shape{2, 3, 5}));
  std::vector<double> ref = naive_mm(x.detach().reshape({6, 4}), W.detach().t().contiguous());
  std::vector<double> bv = b.to_vector(), yv = y.to_vector();
  for (size_t i = 0; i < yv.size(); ++i) EXPECT_NEAR(yv[i], ref[i] + bv[i % 5], 1e-12);
  expect_close(linear(x.detach(), W.detach()).to_vector(), ref);
  Fn with_bias = [](const Inputs& in) { return linear(in[0], in[1], in[2]); };
  Fn no_bias = [](const Inputs& in) { return linear(in[0], in[1]); };
  EXPECT_GRADCHECK(with_bias, (Inputs{x, W, b}));
  EXPECT_GRADCHECK(no_bias, (Inputs{x, W}));
  Tensor x2 = random_leaf({4, 3}, -1, 1, 43);  // transposed input
  Fn transposed = [](const Inputs& in) { return linear(in[0].t(), in[1], in[2]); };
  EXPECT_GRADCHECK(transposed, (Inputs{x2, W, b}));
  Tensor x1 = random_leaf({4}, -1, 1, 44);  // 1-D input
  EXPECT_GRADCHECK(with_bias, (Inputs{x1, W, b}));
}

TEST(Matmul, F32MatchesF64) {
  Tensor a = random_leaf({8, 16}, -1, 1, 50).detach(), b = random_leaf({16, 4}, -1, 1, 51).detach();
  Tensor c64 = matmul(a, b), c32 = matmul(a.to(DType::f32), b.to(DType::f32));
  EXPECT_EQ(c32.dtype(), DType::f32);
  EXPECT_LT(max_rel_diff(c32.to(DType::f64), c64), 1e-5);
}

TEST(Matmul, ErrorsNameTheOpAndShapes) {
  std::string e = error_of([] { matmul(zeros({2, 3}), zeros({4, 5})); });
  EXPECT_TRUE(contains(e, "matmul") && contains(e, "[2,3]") && contains(e, "[4,5]")) << e;
  e = error_of([] { matmul(zeros({2, 2, 3}), zeros({3, 3, 4})); });
  EXPECT_TRUE(contains(e, "matmul") && contains(e, "broadcast")) << e;
  e = error_of([] { bmm(zeros({2, 2, 3}), zeros({3, 3, 4})); });
  EXPECT_TRUE(contains(e, "bmm")) << e;
  e = error_of([] { linear(zeros({2, 3}), zeros({5, 4})); });
  EXPECT_TRUE(contains(e, "linear") && contains(e, "[5,4]")) << e;
  e = error_of([] { linear(zeros({2, 4}), zeros({5, 4}), zeros({4})); });
  EXPECT_TRUE(contains(e, "bias")) << e;
  EXPECT_THROW(matmul(zeros({}), zeros({3})), Error);
  EXPECT_THROW(matmul(zeros({3}), zeros({3}, DType::f64)), Error);
}

namespace {
// Sets the f32 GEMM backend for a scope.
struct GemmBackendScope {
  explicit GemmBackendScope(cpu::GemmBackend b) : saved(cpu::gemm_backend()) { cpu::set_gemm_backend(b); }
  ~GemmBackendScope() { cpu::set_gemm_backend(saved); }
  cpu::GemmBackend saved;
};
}  // namespace

// The raw f32 GEMM on each backend against a double loop: both transposes, leading dimensions wider than the
// rows, alpha and beta (C read back), products below and above the size from which the oneDNN backend calls
// oneDNN, and one tall enough for the op threads to split its rows: the split gives the bits of one call (1
// and 3 threads).
TEST(Matmul, CpuGemmBackendsComputeTheProductAndSplitRowsBitwise) {
  std::vector<cpu::GemmBackend> backends = {cpu::GemmBackend::openblas};
  if (onednn_built()) backends.push_back(cpu::GemmBackend::onednn);
  struct Case {
    int64_t M, N, K;
    bool ta, tb;
  };
  const Case cases[] = {{7, 5, 3, false, false}, {33, 17, 65, true, false}, {64, 10, 512, false, true},
                        {40, 9, 12, true, true}, {97, 130, 64, true, true}, {2048, 48, 96, false, true}};
  const int threads_before = cpu_threads();
  for (cpu::GemmBackend backend : backends) {
    GemmBackendScope scope(backend);
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(cpu::gemm_backend_name(backend)) + " " + std::to_string(c.M) + "x" +
                   std::to_string(c.N) + "x" + std::to_string(c.K) + (c.ta ? " A^T" : "") + (c.tb ? " B^T" : ""));
      const int64_t ar = c.ta ? c.K : c.M, ac = c.ta ? c.M : c.K, br = c.tb ? c.N : c.K, bc = c.tb ? c.K : c.N;
      const int64_t lda = ac + 3, ldb = bc + 2, ldc = c.N + 1;  // padded rows
      Generator gen(c.M * 131 + c.K);
      const std::vector<double> a = randn({ar * lda}, {}, &gen).to_vector(),
                                b = randn({br * ldb}, {}, &gen).to_vector(),
                                c0 = randn({c.M * ldc}, {}, &gen).to_vector();
      std::vector<float> af(a.begin(), a.end()), bf(b.begin(), b.end());
      const float alpha = 0.75f, beta = -0.5f;
      std::vector<float> out[2];
      for (int t : {1, 3}) {
        set_cpu_threads(t);
        std::vector<float> cf(c0.begin(), c0.end());
        cpu::gemm(c.ta, c.tb, c.M, c.N, c.K, alpha, af.data(), lda, bf.data(), ldb, beta, cf.data(), ldc);
        out[t == 1 ? 0 : 1] = cf;
      }
      set_cpu_threads(threads_before);
      double worst = 0;
      for (int64_t i = 0; i < c.M; ++i)
        for (int64_t j = 0; j < c.N; ++j) {
          double sum = 0, scale = 0;
          for (int64_t k = 0; k < c.K; ++k) {
            const double x = af[c.ta ? k * lda + i : i * lda + k], y = bf[c.tb ? j * ldb + k : k * ldb + j];
            sum += x * y;
            scale += std::fabs(x * y);
          }
          const double want = alpha * sum + beta * static_cast<float>(c0[i * ldc + j]);
          worst = std::max(worst, std::fabs(out[0][i * ldc + j] - want) / (scale + 1.0));
        }
      EXPECT_LT(worst, 1e-6);
      // The padding between rows of C is left alone.
      for (int64_t i = 0; i < c.M; ++i) EXPECT_EQ(out[0][i * ldc + c.N], static_cast<float>(c0[i * ldc + c.N]));
      EXPECT_EQ(out[0], out[1]) << "3 threads changed the bits";
    }
  }
}

// Random products on the active backend (oneDNN where the build has it: all these are above its size rule),
// split into rows by the op threads at 2 and 3 threads: the bits of the one-thread call. The comment in
// matmul.cpp's gemm_by_rows rests on this.
TEST(Matmul, CpuGemmRowSplitsGiveTheBitsOfOneCall) {
  const int threads_before = cpu_threads();
  std::mt19937 pick(5);
  for (int trial = 0; trial < 12; ++trial) {
    const int64_t M = 256 + pick() % 1500, N = 16 + pick() % 300, K = 16 + pick() % 300;
    const bool ta = pick() % 2, tb = pick() % 2;
    SCOPED_TRACE(std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) + (ta ? " A^T" : "") +
                 (tb ? " B^T" : ""));
    Generator gen(trial + 1);
    const std::vector<double> a = randn({M * K}, {}, &gen).to_vector(), b = randn({K * N}, {}, &gen).to_vector();
    const std::vector<float> af(a.begin(), a.end()), bf(b.begin(), b.end());
    std::vector<float> c[3];
    for (int t = 1; t <= 3; ++t) {
      set_cpu_threads(t);
      c[t - 1].assign(static_cast<size_t>(M * N), 0.0f);
      cpu::gemm(ta, tb, M, N, K, 1.0f, af.data(), ta ? M : K, bf.data(), tb ? K : N, 0.0f, c[t - 1].data(), N);
    }
    set_cpu_threads(threads_before);
    EXPECT_EQ(c[0], c[1]);
    EXPECT_EQ(c[0], c[2]);
  }
}
