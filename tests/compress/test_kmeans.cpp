// 1-D k-means: nearest-centroid codes, beats uniform quantization's error at the same bits on bell-shaped data.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "compress/codec.h"
#include "distributions.h"

using namespace dgpipe::compress;
using namespace dgpipe::testing;
using dgpipe::engine::Tensor;

namespace {
double mse(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector(), y = b.to_vector();
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += (x[i] - y[i]) * (x[i] - y[i]);
  return x.empty() ? 0 : s / x.size();
}
}  // namespace

TEST(KMeans, EveryElementDecodesToItsNearestCentroid) {
  for (Dist d : all_dists()) {
    auto codec = make_codec("kmeans:3");
    Tensor x = make_input(d);
    Packet p = codec->encode(x);
    Tensor hb = p.host_body();
    std::vector<float> c(8);
    std::memcpy(c.data(), hb.data<uint8_t>() + 8, 32);
    std::vector<double> xv = x.to_vector(), yv = codec->decode(p).to_vector();
    for (size_t i = 0; i < xv.size(); ++i) {
      double best = INFINITY;
      for (float cj : c) best = std::min(best, std::fabs(xv[i] - cj));
      ASSERT_LE(std::fabs(xv[i] - yv[i]), best * (1 + 1e-6) + 1e-30) << dist_name(d) << " element " << i;
    }
    if (d == Dist::all_equal || d == Dist::tiny) { EXPECT_EQ(xv, yv) << dist_name(d); }
  }
}

TEST(KMeans, LowerErrorThanUniformAtTheSameBits) {
  for (Dist d : {Dist::normal, Dist::laplace}) {
    Tensor x = make_input(d, 4, {8, 1024});
    for (int bits : {2, 3, 4}) {
      auto km = make_codec("kmeans:" + std::to_string(bits));
      auto un = make_codec("uniform:" + std::to_string(bits));
      double e_km = mse(km->decode(km->encode(x)), x), e_un = mse(un->decode(un->encode(x)), x);
      EXPECT_LT(e_km, e_un) << dist_name(d) << " bits " << bits;
    }
  }
}

TEST(KMeans, DeterministicAcrossCalls) {
  auto codec = make_codec("kmeans:4");
  Tensor x = make_input(Dist::laplace);
  EXPECT_EQ(codec->encode(x).serialize(), codec->encode(x).serialize());
}
