// Power iteration and randomized SVD against the optimal rank-r error on matrices of known spectrum; CUDA
// parity.
#include <gtest/gtest.h>

#include <cmath>

#include "codec_checks.h"
#include "compress/codec.h"
#include "compress/codec_impl.h"
#include "distributions.h"
#include "engine/ops.h"
#include "support/gradcheck.h"

using namespace dgpipe::compress;
using namespace dgpipe::testing;
using dgpipe::engine::Tensor;

namespace {

double frob_diff(const Tensor& a, const Tensor& b) {
  return std::sqrt(squared_error(a, b));
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

// The CPU decoder's hand-written rank-r product (lowrank.cpp) against the packet's own factors multiplied by
// the engine's matmul: the same products, summed in another order, so equal to float rounding. Shapes with a
// rank of 1, above 4 and above 8 (the loop without rt in registers), row lengths that are not a multiple of the vector width, one and several samples,
// and enough rows for the op threads to split them (inside a sample).
TEST(LowRank, CpuDecodeIsTheProductOfTheSentFactors) {
  using dgpipe::engine::DType;
  const std::vector<std::pair<std::string, dgpipe::engine::Shape>> cases = {
      {"svd:4", {3, 40, 61}},  {"power:1", {2, 7, 5}},    {"power:6/1", {1, 33, 17}},
      {"svd:2", {5, 3, 4, 4}}, {"power:4", {1, 700, 29}}, {"svd:3", {2, 2, 3}},
      {"power:8", {2, 300, 48}}, {"svd:11", {2, 40, 37}}};
  for (const auto& [spec, shape] : cases) {
    const Tensor x = make_input(Dist::normal, 5, shape);
    auto codec = make_codec(spec);
    Packet p = codec->encode(x);
    const int64_t b = shape[0], m = shape[1], n = x.numel() / (b * m), r = p.header.params[2];
    Tensor body = p.host_body();
    Tensor l = detail::typed_view(body, detail::lowrank_l_offset(), DType::f32, {b, m, r});
    Tensor rt =
        detail::typed_view(body, detail::lowrank_l_offset() + 4ull * b * m * r, DType::f32, {b, n, r});
    Tensor expect = dgpipe::engine::matmul(l, rt.transpose(1, 2).contiguous()).reshape(shape);
    EXPECT_LE(relative_diff(codec->decode(p), expect), 1e-6) << spec;
  }
}

// Samples are factored on the op threads: the packet and its decoding are the same at any thread count
// (several samples, which tests/compress/test_codec.cpp's single-matrix case does not split).
TEST(LowRank, SamplesGiveTheSameBytesAtAnyThreadCount) {
  const Tensor x = make_input(Dist::laplace, 3, {7, 24, 6, 5});
  // Two calls: the power codec's second starts from its state.
  for (std::string spec : {"power:4", "svd:4", "power:2/3"}) expect_same_at_any_thread_count(spec, x, 2);
}

TEST(LowRank, ZeroAndRankDeficientInputsStayFinite) {
  for (std::string spec : {"power:4", "svd:4"}) {
    auto codec = make_codec(spec);
    Tensor z = dgpipe::engine::zeros({2, 5, 7});
    std::vector<double> y = codec->decode(codec->encode(z)).to_vector();
    for (double v : y) {
      ASSERT_EQ(v, 0.0) << spec;
    }
    Tensor one = make_input(Dist::all_equal, 1, {2, 5, 7});  // rank 1
    EXPECT_LE(frob_diff(codec->decode(codec->encode(one)), one), 1e-4) << spec;
    Tensor tiny = make_input(Dist::normal, 1, {3});  // 1 x 3 matrix: rank clamps to 1, exact
    EXPECT_LE(frob_diff(codec->decode(codec->encode(tiny)), tiny), 1e-5) << spec;
  }
}

// The CUDA twin runs the same algorithm (same Philox starts and sketches, same re-draw seeds, same Jacobi
// order), but its GEMMs sum in another order, so outputs agree to float rounding, not bit for bit. Subspace
// iteration and the Jacobi eigensolver are stable maps of their inputs: a 1e-7 relative perturbation grows by
// at most the ratio of neighbouring singular values per iteration, so 1e-4 relative (Frobenius) on the
// decoded tensor leaves a margin of ~100x on these spectra while still catching a wrong transpose, seed,
// ordering or orthonormalisation.
TEST(LowRank, CudaDecodesMatchTheCpuReference) {
  DGP_SKIP_WITHOUT_CUDA();
  using dgpipe::engine::Device;
  std::vector<double> sigma;
  for (int i = 0; i < 24; ++i) sigma.push_back(std::pow(0.7, i) * 10);
  std::vector<double> slow;  // full rank 60, slowly decaying: no collapsed columns at rank 40
  for (int i = 0; i < 60; ++i) slow.push_back(std::pow(0.9, i) * 10);
  struct Case {
    std::string spec;
    Tensor x;
    double tol;
  };
  std::vector<Case> cases = {
      {"power:4", known_spectrum(3, 40, 60, sigma, 100), 1e-4},
      {"power:3/1", known_spectrum(2, 32, 48, sigma, 7), 1e-4},
      {"svd:4", known_spectrum(3, 40, 60, sigma, 100), 1e-4},
      {"svd:8/3", known_spectrum(2, 50, 30, sigma, 21), 1e-4},
      {"power:2/4", known_spectrum(2, 8, 16, {3.0, 1.0}, 55).reshape({2, 8, 4, 4}), 1e-4},
      {"svd:2", known_spectrum(2, 8, 16, {3.0, 1.0}, 55).reshape({2, 8, 4, 4}), 1e-4},
      // Not low rank (a CNN-like boundary): looser, the spectrum has no large gap at the cut.
      {"power:4", make_input(Dist::normal, 3, {8, 16, 6, 6}), 1e-3},
      {"svd:4", make_input(Dist::laplace, 3, {8, 16, 6, 6}), 1e-3},
      // Above 32 columns the orthonormalisation works in several chunks of projections.
      {"power:40/2", known_spectrum(2, 64, 96, slow, 8), 1e-3},
      {"svd:40", known_spectrum(1, 64, 96, slow, 9), 1e-3},
      {"power:1", make_input(Dist::normal, 1, {3}), 1e-5},  // 1 x 3 matrix, rank 1: exact
  };
  for (auto& c : cases) {
    auto cpu_codec = make_codec(c.spec), gpu_codec = make_codec(c.spec);
    // Several calls: the power codec's warm-start state lives on the device between them.
    for (int call = 0; call < 3; ++call) {
      Packet cpu = cpu_codec->encode(c.x);
      Packet gpu = gpu_codec->encode(c.x.to(Device::cuda()));
      ASSERT_TRUE(gpu.body.is_cuda());
      EXPECT_EQ(cpu.header, gpu.header) << c.spec;
      Tensor y_cpu = cpu_codec->decode(cpu), y_gpu = gpu_codec->decode(gpu);
      EXPECT_TRUE(y_gpu.is_cuda());
      EXPECT_EQ(y_gpu.shape(), c.x.shape());
      EXPECT_LE(relative_diff(y_gpu, y_cpu), c.tol) << c.spec << " call " << call;
      // The GPU packet decodes the same on a CPU receiver.
      Tensor y_host = cpu_codec->decode(Packet::deserialize(gpu.serialize()));
      EXPECT_LE(relative_diff(y_host, y_gpu), 1e-6) << c.spec << " call " << call;
    }
  }
}

TEST(LowRank, CudaZeroInputsAndStatus) {
  DGP_SKIP_WITHOUT_CUDA();
  using dgpipe::engine::Device;
  for (std::string spec : {"power:4", "svd:4"}) {
    auto codec = make_codec(spec);
    std::vector<double> y = codec->decode(codec->encode(dgpipe::engine::zeros({2, 5, 7}).to(Device::cuda())))
                                .to(Device::cpu())
                                .to_vector();
    for (double v : y) {
      ASSERT_EQ(v, 0.0) << spec;
    }
    Tensor one = make_input(Dist::all_equal, 1, {2, 5, 7});  // rank 1
    EXPECT_LE(frob_diff(codec->decode(codec->encode(one.to(Device::cuda()))).to(Device::cpu()), one), 1e-4)
        << spec;
    std::vector<float> bad(70, 1.0f);
    bad[33] = NAN;
    Packet p = codec->encode(dgpipe::engine::from_vector(bad, {7, 10}).to(Device::cuda()));
    EXPECT_THROW(p.check_status(), dgpipe::engine::Error) << spec;
  }
  // A rank above the CUDA eigen-solver's limit runs the CPU reference and still returns a device packet.
  auto big = make_codec("svd:80");
  Tensor x = make_input(Dist::normal, 2, {1, 96, 100});
  Packet p = big->encode(x.to(Device::cuda()));
  EXPECT_TRUE(p.body.is_cuda());
  EXPECT_EQ(p.serialize(), make_codec("svd:80")->encode(x).serialize());
}

TEST(LowRank, PowerStateFollowsTheInputAcrossDevices) {
  DGP_SKIP_WITHOUT_CUDA();
  using dgpipe::engine::Device;
  std::vector<double> sigma;
  for (int i = 0; i < 20; ++i) sigma.push_back(std::pow(0.6, i) * 5);
  Tensor a = known_spectrum(2, 32, 48, sigma, 7);
  auto mixed = make_codec("power:3/1"), host = make_codec("power:3/1");
  for (int call = 0; call < 4; ++call) {
    Tensor in = call % 2 ? a.to(Device::cuda()) : a;
    Tensor y_mixed = mixed->decode(mixed->encode(in)), y_host = host->decode(host->encode(a));
    EXPECT_LE(relative_diff(y_mixed, y_host), 1e-4) << "call " << call;
  }
}
