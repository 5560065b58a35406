// 1-D k-means: nearest-centroid codes, beats uniform quantization's error at the same bits on bell-shaped
// data; CUDA parity.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "compress/codec.h"
#include "distributions.h"
#include "support/gradcheck.h"

using namespace dgpipe::compress;
using namespace dgpipe::testing;
using dgpipe::engine::Tensor;

namespace {
double mse(const Tensor& a, const Tensor& b) {
  return a.numel() == 0 ? 0 : squared_error(a, b) / static_cast<double>(a.numel());
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
    if (d == Dist::all_equal || d == Dist::tiny) {
      EXPECT_EQ(xv, yv) << dist_name(d);
    }
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

namespace {
std::vector<float> centroids_of(const Packet& p, int bits) {
  Tensor hb = p.host_body();
  std::vector<float> c(size_t(1) << bits);
  std::memcpy(c.data(), hb.data<uint8_t>() + 8, 4 * c.size());
  return c;
}
}  // namespace

// The CUDA twin runs the same init (quantiles of the same sorted sample), the same Lloyd steps in double and
// the same final f32 assignment, but adds each cluster's members in an order set by its atomics instead of
// index order. Centroids therefore agree to about 1e-12 of the range before the f32 rounding (and within 1e-6
// of the range when the two runs stop one iteration apart, the stopping threshold); tolerance 1e-5 of the
// range. A code can differ only for an element within that distance of a midpoint: at most 0.1 % of elements
// may decode differently, and the GPU packet itself must satisfy the nearest-centroid property exactly.
TEST(KMeans, CudaMatchesTheCpuReference) {
  DGP_SKIP_WITHOUT_CUDA();
  using dgpipe::engine::Device;
  std::vector<std::pair<std::string, Tensor>> inputs;
  for (Dist d : all_dists()) inputs.emplace_back(dist_name(d), make_input(d));
  inputs.emplace_back("laplace 96K", make_input(Dist::laplace, 8, {96, 1024}));  // sample of 65536 < N
  inputs.emplace_back("post_relu 200K", make_input(Dist::post_relu, 9, {8, 25, 1000}));
  inputs.emplace_back("normal ragged", make_input(Dist::normal, 10, {4099}));
  for (auto& [name, x] : inputs)
    for (std::string spec :
         {"kmeans:1", "kmeans:3", "kmeans:4/50", "kmeans:8", "kmeans:11/5", "kmeans:12/3"}) {
      const int bits = std::stoi(spec.substr(7));
      auto codec = make_codec(spec);
      Packet cpu = codec->encode(x);
      Packet gpu = codec->encode(x.to(Device::cuda()));
      ASSERT_TRUE(gpu.body.is_cuda());
      EXPECT_EQ(cpu.header, gpu.header);
      std::vector<double> xv = x.to_vector();
      double lo = xv[0], hi = xv[0];
      for (double v : xv) lo = std::min(lo, v), hi = std::max(hi, v);
      const double tol = 1e-5 * (hi - lo);
      std::vector<float> cc = centroids_of(cpu, bits), gc = centroids_of(gpu, bits);
      for (size_t j = 0; j < cc.size(); ++j) {
        ASSERT_LE(std::fabs(double(cc[j]) - double(gc[j])), tol) << name << " " << spec << " centroid " << j;
      }
      std::vector<double> yc = codec->decode(cpu).to_vector(),
                          yg = codec->decode(gpu).to(Device::cpu()).to_vector();
      int64_t differ = 0;
      for (size_t i = 0; i < xv.size(); ++i) {
        double best = INFINITY;
        for (float c : gc) best = std::min(best, std::fabs(xv[i] - c));
        ASSERT_LE(std::fabs(xv[i] - yg[i]), best * (1 + 1e-6) + 1e-30)
            << name << " " << spec << " element " << i;
        differ += std::fabs(yc[i] - yg[i]) > tol ? 1 : 0;
      }
      EXPECT_LE(differ, static_cast<int64_t>(xv.size() / 1000)) << name << " " << spec;
      if (name == "all_equal" || name == "tiny") {
        EXPECT_EQ(yc, yg) << name << " " << spec;
      }
      // The GPU packet decodes the same on a CPU receiver.
      EXPECT_EQ(codec->decode(Packet::deserialize(gpu.serialize())).to_vector(), yg) << name << " " << spec;
    }
}

TEST(KMeans, CudaReportsNonFiniteInputs) {
  DGP_SKIP_WITHOUT_CUDA();
  std::vector<float> v(5000, 0.5f);
  v[4321] = -INFINITY;
  auto codec = make_codec("kmeans:4");
  Packet p = codec->encode(dgpipe::engine::from_vector(v, {5000}).to(dgpipe::engine::Device::cuda()));
  EXPECT_THROW(p.check_status(), dgpipe::engine::Error);
}
