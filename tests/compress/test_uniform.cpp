// Uniform min/max quantization: error bound, edge cases, golden codes of the original
// (docs/original.md#uniform-quantization), CUDA parity.
#include <gtest/gtest.h>

#include <cmath>

#include "codec_checks.h"
#include "compress/codec.h"
#include "distributions.h"
#include "support/golden_json.h"
#include "support/gradcheck.h"

using namespace dgpipe::compress;
using namespace dgpipe::testing;
using dgpipe::engine::Tensor;

TEST(Uniform, MaxErrorIsHalfAStepOnEveryDistribution) {
  for (Dist d : all_dists()) {
    for (int q : {1, 2, 3, 4, 8, 12, 16}) {
      auto codec = make_codec("uniform:" + std::to_string(q));
      Tensor x = make_input(d);
      Packet p = codec->encode(x);
      std::vector<GroupStat> st = read_group_stats(p);
      ASSERT_EQ(st.size(), 1u);
      std::vector<double> xv = x.to_vector(), yv = codec->decode(p).to_vector();
      double lo = *std::min_element(xv.begin(), xv.end()), hi = *std::max_element(xv.begin(), xv.end());
      EXPECT_EQ(st[0].lo, static_cast<float>(lo)) << dist_name(d);
      EXPECT_NEAR(st[0].step, (hi - lo) / ((1 << q) - 1), 1e-6 * (hi - lo) + 1e-30) << dist_name(d);
      // Bound: step/2 plus the fp32 rounding of (x - lo)/step and of lo + q*step (a few ulps of the
      // magnitudes).
      double mag = std::max(std::fabs(lo), std::fabs(hi));
      double tol = st[0].step * 0.5 * (1 + 1e-5) + 4 * mag * 1.2e-7;
      double worst = 0;
      for (size_t i = 0; i < xv.size(); ++i) worst = std::max(worst, std::fabs(xv[i] - yv[i]));
      EXPECT_LE(worst, tol) << dist_name(d) << " Q=" << q;
      if (d == Dist::all_equal) {
        EXPECT_EQ(worst, 0.0) << "constant tensor must decode exactly";
      }
      // Codes cover the range: the minimum maps to 0 and the maximum to 2^Q - 1 (unless constant).
      std::vector<uint32_t> codes = read_codes(p);
      uint32_t cmax = *std::max_element(codes.begin(), codes.end());
      EXPECT_EQ(*std::min_element(codes.begin(), codes.end()), 0u);
      if (hi > lo) {
        EXPECT_EQ(cmax, (1u << q) - 1) << dist_name(d);
      }
    }
  }
}

TEST(Uniform, CodeZeroDecodesToTheMinimum) {
  // The original's unsigned mask decoder lost code 0 (docs/original.md#b1); arithmetic decoding must not.
  auto codec = make_codec("uniform:4");
  Tensor x = dgpipe::engine::from_vector(std::vector<float>{-3.0f, 5.0f, -3.0f, 0.0f, 1.0f}, {5});
  std::vector<double> y = codec->decode(codec->encode(x)).to_vector();
  EXPECT_EQ(y[0], -3.0);
  EXPECT_EQ(y[2], -3.0);
  EXPECT_NEAR(y[1], 5.0, 1e-6);
}

TEST(Uniform, KeepsDtypeAndShape) {
  auto codec = make_codec("uniform:8");
  Tensor x = make_input(Dist::normal).to(dgpipe::engine::DType::f16);
  Tensor y = codec->decode(codec->encode(x));
  EXPECT_EQ(y.dtype(), dgpipe::engine::DType::f16);
  EXPECT_EQ(y.shape(), x.shape());
  Tensor nc = make_input(Dist::normal, 3, {6, 5}).t();  // non-contiguous input
  Tensor yn = codec->decode(codec->encode(nc));
  EXPECT_LE(max_rel_diff(yn, nc.contiguous()), 0.02);
}

TEST(Uniform, MatchesTheOriginalGoldenCodes) {
  auto spec = [](const nlohmann::json& c) { return "uniform:" + std::to_string(c["q"].get<int>()); };
  EXPECT_EQ(check_original_golden_codes("uniform", spec), 15);
}

TEST(Uniform, CudaEqualsCpuPacketForPacket) {
  DGP_SKIP_WITHOUT_CUDA();
  for (Dist d : all_dists())
    for (int q : {1, 3, 8, 12, 16})
      for (dgpipe::engine::Shape shape :
           {dist_shape(d), dgpipe::engine::Shape{64, 32, 32, 32}, dgpipe::engine::Shape{1001}}) {
        if (d == Dist::tiny && shape != dist_shape(d)) continue;
        auto codec = make_codec("uniform:" + std::to_string(q));
        expect_cuda_packet_equals_cpu(*codec, make_input(d, 5, shape), dist_name(d));
      }
}
