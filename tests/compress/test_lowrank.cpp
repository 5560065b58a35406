// Power iteration and randomized SVD against the optimal rank-r error on matrices of known spectrum.
#include <gtest/gtest.h>

#include <cmath>

#include "compress/codec.h"
#include "distributions.h"
#include "engine/ops.h"

using namespace dgpipe::compress;
using namespace dgpipe::testing;
using dgpipe::engine::Tensor;

namespace {

// b matrices m x n = U diag(sigma) V^T with random orthonormal U, V (QR of Gaussians via Gram-Schmidt).
Tensor known_spectrum(int64_t b, int64_t m, int64_t n, const std::vector<double>& sigma, uint64_t seed) {
  auto orth = [](std::vector<double>& a, int64_t rows, int64_t cols) {
    for (int64_t c = 0; c < cols; ++c) {
      for (int pass = 0; pass < 2; ++pass)
        for (int64_t k = 0; k < c; ++k) {
          double d = 0;
          for (int64_t r = 0; r < rows; ++r) d += a[r * cols + c] * a[r * cols + k];
          for (int64_t r = 0; r < rows; ++r) a[r * cols + c] -= d * a[r * cols + k];
        }
      double nn = 0;
      for (int64_t r = 0; r < rows; ++r) nn += a[r * cols + c] * a[r * cols + c];
      for (int64_t r = 0; r < rows; ++r) a[r * cols + c] /= std::sqrt(nn);
    }
  };
  const int64_t k = static_cast<int64_t>(sigma.size());
  std::vector<double> out(b * m * n, 0.0);
  for (int64_t bi = 0; bi < b; ++bi) {
    std::vector<double> u = make_input(Dist::normal, seed + 2 * bi, {m, k}).to(dgpipe::engine::DType::f64).to_vector();
    std::vector<double> v = make_input(Dist::normal, seed + 2 * bi + 1, {n, k}).to(dgpipe::engine::DType::f64).to_vector();
    orth(u, m, k);
    orth(v, n, k);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t t = 0; t < k; ++t) s += u[i * k + t] * sigma[t] * v[j * k + t];
        out[bi * m * n + i * n + j] = s;
      }
  }
  return dgpipe::engine::from_vector(out, {b, m, n});
}

double frob_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector(), y = b.to_vector();
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += (x[i] - y[i]) * (x[i] - y[i]);
  return std::sqrt(s);
}

}  // namespace

TEST(LowRank, SvdIsNearOptimalOnAKnownSpectrum) {
  std::vector<double> sigma;
  for (int i = 0; i < 24; ++i) sigma.push_back(std::pow(0.7, i) * 10);
  const int64_t b = 3, r = 4;
  Tensor a = known_spectrum(b, 40, 60, sigma, 100);
  double opt2 = 0;
  for (size_t i = r; i < sigma.size(); ++i) opt2 += sigma[i] * sigma[i];
  const double optimal = std::sqrt(b * opt2);  // every batch matrix has the same spectrum
  auto codec = make_codec("svd:4");
  double err = frob_diff(codec->decode(codec->encode(a)), a);
  EXPECT_LE(err, 1.1 * optimal) << "svd error " << err << " vs optimal " << optimal;
  EXPECT_GE(err, 0.999 * optimal);  // nothing beats Eckart–Young: catches a bogus error metric
}

TEST(LowRank, PowerIterationConvergesWithWarmStart) {
  std::vector<double> sigma;
  for (int i = 0; i < 20; ++i) sigma.push_back(std::pow(0.6, i) * 5);
  const int64_t r = 3;
  Tensor a = known_spectrum(2, 32, 48, sigma, 7);
  double opt2 = 0;
  for (size_t i = r; i < sigma.size(); ++i) opt2 += sigma[i] * sigma[i];
  const double optimal = std::sqrt(2 * opt2);
  auto codec = make_codec("power:3/1");
  double first = frob_diff(codec->decode(codec->encode(a)), a);
  double err = first;
  for (int call = 0; call < 15; ++call) err = frob_diff(codec->decode(codec->encode(a)), a);
  EXPECT_LE(err, 1.05 * optimal) << "after warm-started calls: " << err << " vs optimal " << optimal;
  EXPECT_LE(err, first + 1e-9);
}

TEST(LowRank, FourDimensionalBoundaryIsBatchOfChannelMatrices) {
  // [b, C, H, W] of exact rank 2 per sample (as C x HW) is reproduced by rank 2.
  Tensor a = known_spectrum(2, 8, 16, {3.0, 1.0}, 55).reshape({2, 8, 4, 4});
  for (std::string spec : {"power:2/4", "svd:2"}) {
    auto codec = make_codec(spec);
    Tensor y = codec->decode(codec->encode(a));
    EXPECT_EQ(y.shape(), a.shape());
    EXPECT_LE(frob_diff(y, a), 1e-4) << spec;
  }
  auto codec = make_codec("power:2");
  EXPECT_EQ(codec->body_bytes({2, 8, 4, 4}), 16u + 4u * 2 * (8 + 16) * 2);
}

TEST(LowRank, ZeroAndRankDeficientInputsStayFinite) {
  for (std::string spec : {"power:4", "svd:4"}) {
    auto codec = make_codec(spec);
    Tensor z = dgpipe::engine::zeros({2, 5, 7});
    std::vector<double> y = codec->decode(codec->encode(z)).to_vector();
    for (double v : y) { ASSERT_EQ(v, 0.0) << spec; }
    Tensor one = make_input(Dist::all_equal, 1, {2, 5, 7});  // rank 1
    EXPECT_LE(frob_diff(codec->decode(codec->encode(one)), one), 1e-4) << spec;
    Tensor tiny = make_input(Dist::normal, 1, {3});  // 1 x 3 matrix: rank clamps to 1, exact
    EXPECT_LE(frob_diff(codec->decode(codec->encode(tiny)), tiny), 1e-5) << spec;
  }
}
