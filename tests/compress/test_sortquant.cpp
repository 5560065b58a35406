// Sort quantization: exact equal-population groups, per-group error bound, order between groups, goldens of
// the original (docs/original.md#sort-quantization), CUDA parity.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "codec_checks.h"
#include "compress/codec.h"
#include "distributions.h"
#include "support/golden_json.h"
#include "support/gradcheck.h"

using namespace dgpipe::compress;
using namespace dgpipe::testing;
using dgpipe::engine::Tensor;

namespace {

// Checks every property of one sortquant/fastquant packet; `exact_population` for sortquant.
void check_group_packet(Codec& codec, const Tensor& x, int q, int s, bool exact_population,
                        const std::string& what) {
  Packet p = codec.encode(x);
  std::vector<GroupStat> st = read_group_stats(p);
  std::vector<uint32_t> codes = read_codes(p);
  std::vector<double> xv = x.to_vector(), yv = codec.decode(p).to_vector();
  const int groups = 1 << s;
  const int64_t n = static_cast<int64_t>(xv.size());
  std::vector<int64_t> count(groups, 0);
  std::vector<double> gmin(groups, INFINITY), gmax(groups, -INFINITY);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t g = codes[i] >> q;
    ASSERT_LT(g, static_cast<uint32_t>(groups)) << what;
    ++count[g];
    gmin[g] = std::min(gmin[g], xv[i]);
    gmax[g] = std::max(gmax[g], xv[i]);
  }
  for (int g = 0; g < groups; ++g) {
    if (count[g] == 0) {
      EXPECT_EQ(st[g].step, 0.0f) << what;
      continue;
    }
    // Group statistics are the exact min of the group and (max - min) / (2^Q - 1).
    EXPECT_EQ(st[g].lo, static_cast<float>(gmin[g])) << what << " group " << g;
    EXPECT_NEAR(st[g].step, (gmax[g] - gmin[g]) / ((1 << q) - 1), 1e-6 * (gmax[g] - gmin[g]) + 1e-30) << what;
    // Groups are ordered: everything in group g <= everything in group g + 1 (ties may straddle).
    for (int h = g + 1; h < groups; ++h)
      if (count[h]) {
        EXPECT_LE(gmax[g], gmin[h]) << what << " groups " << g << "," << h;
      }
  }
  if (exact_population) {
    // tensor_split sizes: the first n mod K groups have ceil(n/K), the others floor(n/K).
    for (int g = 0; g < groups; ++g) {
      EXPECT_EQ(count[g], n / groups + (g < n % groups ? 1 : 0)) << what << " group " << g;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t g = codes[i] >> q;
    const double mag = std::max(std::fabs(gmin[g]), std::fabs(gmax[g]));
    const double tol = st[g].step * 0.5 * (1 + 1e-5) + 4 * mag * 1.2e-7;
    ASSERT_LE(std::fabs(xv[i] - yv[i]), tol) << what << " element " << i << " group " << g;
    if (st[g].step == 0.0f) {
      ASSERT_EQ(xv[i], yv[i]) << what << ": constant group must be exact";
    }
  }
}

}  // namespace

TEST(SortQuant, EqualPopulationGroupsAndPerGroupBound) {
  for (Dist d : all_dists())
    for (auto [q, s] :
         std::vector<std::pair<int, int>>{{3, 1}, {6, 2}, {9, 3}, {12, 4}, {4, 4}, {1, 0}, {2, 6}}) {
      auto codec = make_codec("sortquant:" + std::to_string(q) + "+" + std::to_string(s));
      check_group_packet(*codec, make_input(d), q, s, true, std::string(dist_name(d)) + " " + codec->spec());
    }
}

TEST(SortQuant, TiesStraddlingBoundariesSplitInIndexOrder) {
  // 10 zeros then 6 positives, 4 groups of 4: zeros fill groups 0, 1 and half of 2 in flat index order.
  std::vector<float> v(16, 0.0f);
  for (int i = 10; i < 16; ++i) v[i] = static_cast<float>(i);
  auto codec = make_codec("sortquant:3+2");
  Packet p = codec->encode(dgpipe::engine::from_vector(v, {16}));
  std::vector<uint32_t> codes = read_codes(p);
  for (int i = 0; i < 16; ++i) {
    const uint32_t g = codes[i] >> 3;
    const uint32_t expect = i < 4 ? 0 : i < 8 ? 1 : i < 12 ? 2 : 3;
    EXPECT_EQ(g, expect) << "element " << i;
  }
  std::vector<double> y = codec->decode(p).to_vector();
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(y[i], 0.0);
  }
  // Negative zero is the same value as zero.
  v[3] = -0.0f;
  std::vector<uint32_t> codes2 = read_codes(codec->encode(dgpipe::engine::from_vector(v, {16})));
  EXPECT_EQ(codes2, codes);
}

TEST(SortQuant, FewerElementsThanGroups) {
  auto codec = make_codec("sortquant:4+3");  // 8 groups, 3 elements
  Tensor x = dgpipe::engine::from_vector(std::vector<float>{2.5f, -1.0f, 7.0f}, {3});
  Packet p = codec->encode(x);
  std::vector<uint32_t> codes = read_codes(p);
  EXPECT_EQ(codes[1] >> 4, 0u);
  EXPECT_EQ(codes[0] >> 4, 1u);
  EXPECT_EQ(codes[2] >> 4, 2u);
  EXPECT_EQ(codec->decode(p).to_vector(), x.to_vector());  // one element per group: exact
}

TEST(SortQuant, MatchesTheOriginalGoldenCodes) {
  auto spec = [](const nlohmann::json& c) {
    return "sortquant:" + std::to_string(c["q"].get<int>()) + "+" + std::to_string(c["s"].get<int>());
  };
  EXPECT_EQ(check_original_golden_codes("sortquant", spec), 18);
}

TEST(SortQuant, CudaEqualsCpuPacketForPacket) {
  DGP_SKIP_WITHOUT_CUDA();
  for (Dist d : all_dists())
    for (auto [q, s] : std::vector<std::pair<int, int>>{{3, 1}, {6, 2}, {12, 4}, {4, 4}, {2, 6}})
      for (dgpipe::engine::Shape shape :
           {dist_shape(d), dgpipe::engine::Shape{64, 1280, 4, 4}, dgpipe::engine::Shape{777}}) {
        if (d == Dist::tiny && shape != dist_shape(d)) continue;
        auto codec = make_codec("sortquant:" + std::to_string(q) + "+" + std::to_string(s));
        expect_cuda_packet_equals_cpu(*codec, make_input(d, 9, shape), dist_name(d));
      }
}
