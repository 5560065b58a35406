// Fast quantization: per-group bound, approximately equal populations, edge cases, CUDA parity.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "codec_checks.h"
#include "compress/codec.h"
#include "distributions.h"
#include "support/gradcheck.h"

using namespace dgpipe::compress;
using namespace dgpipe::testing;
using dgpipe::engine::Tensor;

TEST(FastQuant, PerGroupBoundAndOrderedGroups) {
  for (Dist d : all_dists())
    for (auto [q, s] : std::vector<std::pair<int, int>>{{3, 1}, {6, 2}, {9, 3}, {4, 4}}) {
      auto codec = make_codec("fastquant:" + std::to_string(q) + "+" + std::to_string(s));
      Tensor x = make_input(d);
      Packet p = codec->encode(x);
      std::vector<GroupStat> st = read_group_stats(p);
      std::vector<uint32_t> codes = read_codes(p);
      std::vector<double> xv = x.to_vector(), yv = codec->decode(p).to_vector();
      const int groups = 1 << s;
      std::vector<double> gmin(groups, INFINITY), gmax(groups, -INFINITY);
      for (size_t i = 0; i < xv.size(); ++i) {
        uint32_t g = codes[i] >> q;
        gmin[g] = std::min(gmin[g], xv[i]);
        gmax[g] = std::max(gmax[g], xv[i]);
      }
      for (int g = 0; g + 1 < groups; ++g)
        for (int h = g + 1; h < groups; ++h)
          if (gmax[g] > -INFINITY && gmin[h] < INFINITY) {
            EXPECT_LT(gmax[g], gmin[h]) << dist_name(d);
          }
      for (size_t i = 0; i < xv.size(); ++i) {
        uint32_t g = codes[i] >> q;
        double mag = std::max(std::fabs(gmin[g]), std::fabs(gmax[g]));
        ASSERT_LE(std::fabs(xv[i] - yv[i]), st[g].step * 0.5 * (1 + 1e-5) + 4 * mag * 1.2e-7)
            << dist_name(d) << " " << codec->spec();
      }
      if (d == Dist::all_equal) {
        EXPECT_EQ(xv, yv);
      }
    }
}

TEST(FastQuant, PopulationsCloseToEqualOnALargeTensor) {
  // 64K elements, sample of 8192: each boundary's population error has sd ~ sqrt(p(1-p)/8192) ~ 0.5% of N.
  auto codec = make_codec("fastquant:6+2");
  Tensor x = make_input(Dist::laplace, 21, {16, 4096});
  std::vector<uint32_t> codes = read_codes(codec->encode(x));
  std::vector<int64_t> count(4, 0);
  for (uint32_t c : codes) ++count[c >> 6];
  for (int g = 0; g < 4; ++g) {
    EXPECT_NEAR(count[g], 16384, 0.03 * 65536) << "group " << g;
  }
}

TEST(FastQuant, DuplicatedQuantilesGiveEmptyGroupsNotOverwrites) {
  // Post-ReLU: half zeros, so the first two boundaries are both 0; every zero decodes exactly.
  auto codec = make_codec("fastquant:4+2");
  Tensor x = make_input(Dist::post_relu, 3, {4096});
  Packet p = codec->encode(x);
  std::vector<double> xv = x.to_vector(), yv = codec->decode(p).to_vector();
  for (size_t i = 0; i < xv.size(); ++i)
    if (xv[i] == 0.0) {
      ASSERT_EQ(yv[i], 0.0) << i;
    }
}

TEST(FastQuant, CudaEqualsCpuPacketForPacket) {
  DGP_SKIP_WITHOUT_CUDA();
  for (Dist d : all_dists())
    for (auto [q, s] : std::vector<std::pair<int, int>>{{3, 1}, {6, 2}, {12, 4}, {2, 6}})
      for (dgpipe::engine::Shape shape :
           {dist_shape(d), dgpipe::engine::Shape{32, 128, 768}, dgpipe::engine::Shape{777}}) {
        if (d == Dist::tiny && shape != dist_shape(d)) continue;
        auto codec = make_codec("fastquant:" + std::to_string(q) + "+" + std::to_string(s));
        expect_cuda_packet_equals_cpu(*codec, make_input(d, 9, shape), dist_name(d));
      }
}
