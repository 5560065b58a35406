// Grouped uniform quantization (uniform:Q/channel, uniform:Q/row): per-group error bound, one group equals
// uniform:Q, a narrow channel keeps its resolution, exact sizes, CUDA parity packet for packet.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "codec_checks.h"
#include "compress/codec.h"
#include "distributions.h"
#include "support/gradcheck.h"

using namespace dgpipe::compress;
using namespace dgpipe::testing;
using dgpipe::engine::Shape;
using dgpipe::engine::Tensor;

namespace {

// The group of flat index i for a grouping of `shape` (written out here, not taken from the codec).
int64_t group_of(const std::string& grouping, const Shape& shape, int64_t i) {
  if (grouping == "channel") {
    if (shape.size() < 2) return 0;
    int64_t inner = 1;
    for (size_t d = 2; d < shape.size(); ++d) inner *= shape[d];
    return (i / inner) % shape[1];
  }
  return i / shape.back();
}

}  // namespace

TEST(GroupedUniform, ErrorIsHalfTheStepOfEachGroup) {
  for (const std::string grouping : {"channel", "row"}) {
    for (Dist d : all_dists()) {
      for (int q : {1, 2, 4, 8, 16}) {
        const std::string spec = "uniform:" + std::to_string(q) + "/" + grouping;
        auto codec = make_codec(spec);
        Tensor x = make_input(d);
        Packet p = codec->encode(x);
        const std::vector<GroupStat> st = read_group_stats(p);
        std::vector<double> xv = x.to_vector(), yv = codec->decode(p).to_vector();
        std::vector<double> lo(st.size(), INFINITY), hi(st.size(), -INFINITY);
        for (size_t i = 0; i < xv.size(); ++i) {
          const int64_t g = group_of(grouping, x.shape(), static_cast<int64_t>(i));
          ASSERT_LT(g, static_cast<int64_t>(st.size())) << spec;
          lo[g] = std::min(lo[g], xv[i]);
          hi[g] = std::max(hi[g], xv[i]);
        }
        for (size_t g = 0; g < st.size(); ++g) {
          EXPECT_EQ(st[g].lo, static_cast<float>(lo[g])) << spec << " " << dist_name(d) << " group " << g;
          EXPECT_NEAR(st[g].step, (hi[g] - lo[g]) / ((1 << q) - 1), 1e-6 * (hi[g] - lo[g]) + 1e-30) << spec;
        }
        for (size_t i = 0; i < xv.size(); ++i) {
          const int64_t g = group_of(grouping, x.shape(), static_cast<int64_t>(i));
          const double mag = std::max(std::fabs(lo[g]), std::fabs(hi[g]));
          const double tol = st[g].step * 0.5 * (1 + 1e-5) + 4 * mag * 1.2e-7;
          EXPECT_LE(std::fabs(xv[i] - yv[i]), tol) << spec << " " << dist_name(d) << " element " << i;
        }
      }
    }
  }
}

TEST(GroupedUniform, OneGroupIsUniform) {
  // One channel, or a 1-D tensor as one row: the statistics and every code of uniform:Q.
  for (const auto& [spec, shape] : std::vector<std::pair<std::string, Shape>>{
           {"/channel", {4, 1, 6, 5}}, {"/channel", {17}}, {"/row", {29}}}) {
    for (int q : {3, 8}) {
      Tensor x = make_input(Dist::laplace, 7, shape);
      Packet grouped = make_codec("uniform:" + std::to_string(q) + spec)->encode(x);
      Packet plain = make_codec("uniform:" + std::to_string(q))->encode(x);
      ASSERT_EQ(read_group_stats(grouped).size(), 1u);
      EXPECT_EQ(read_group_stats(grouped)[0].lo, read_group_stats(plain)[0].lo);
      EXPECT_EQ(read_group_stats(grouped)[0].step, read_group_stats(plain)[0].step);
      EXPECT_EQ(read_codes(grouped), read_codes(plain)) << spec;
    }
  }
}

TEST(GroupedUniform, ANarrowChannelKeepsItsResolution) {
  // Channel 0 spans [-1000, 1000], channel 1 [-1, 1]: one tensor-wide step (about 7.8 at 8 bits) wipes out
  // channel 1; per-channel steps keep it to 1/255.
  std::vector<float> v;
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 2; ++c)
      for (int i = 0; i < 64; ++i) v.push_back((c == 0 ? 1000.0f : 1.0f) * std::sin(0.37f * i + n));
  Tensor x = dgpipe::engine::from_vector(v, {2, 2, 64});
  auto channel_error = [&](const std::string& spec) {
    auto codec = make_codec(spec);
    std::vector<double> y = codec->decode(codec->encode(x)).to_vector();
    double worst = 0;
    for (int n = 0; n < 2; ++n)
      for (int i = 0; i < 64; ++i) {
        const size_t k = static_cast<size_t>(n * 128 + 64 + i);
        worst = std::max(worst, std::fabs(y[k] - v[k]));
      }
    return worst;
  };
  EXPECT_LE(channel_error("uniform:8/channel"), 1.0 / 255);
  EXPECT_GT(channel_error("uniform:8"), 0.5);
}

TEST(GroupedUniform, WireBytesCountEveryGroup) {
  // [4,8,6,5]: 8 channels -> 8 + 8 x 8 = 72 -> 80 bytes before the codes; 960 codes of 8 bits.
  EXPECT_EQ(make_codec("uniform:8/channel")->body_bytes({4, 8, 6, 5}), 80u + 960u);
  // Rows of a [2,16,12] text boundary: 32 groups -> 8 + 256 = 264 -> 272; 384 codes of 4 bits = 192 bytes.
  EXPECT_EQ(make_codec("uniform:4/row")->body_bytes({2, 16, 12}), 272u + 192u);
  Packet p = make_codec("uniform:4/row")->encode(make_input(Dist::normal, 3, {2, 16, 12}));
  EXPECT_EQ(p.header.params, (std::vector<int64_t>{4, 2, 32}));
  EXPECT_EQ(p.serialize().size(), p.wire_bytes());
}

TEST(GroupedUniform, PacketsOfAnotherGroupingAreRefused) {
  Packet p = make_codec("uniform:8/channel")->encode(make_input(Dist::normal));
  EXPECT_THROW(make_codec("uniform:8")->decode(p), dgpipe::engine::Error);
  EXPECT_THROW(make_codec("uniform:8/row")->decode(p), dgpipe::engine::Error);
  EXPECT_EQ(make_codec("uniform:8/channel")->spec(), "uniform:8/channel");
}

// The CUDA encoder must send the CPU packet byte for byte: groups whose segments are not multiples of the 8
// elements a thread handles (inner = 5, 3, 1), many tiles, post-ReLU ties, an empty tensor.
TEST(GroupedUniform, CudaEqualsCpuPacketForPacket) {
  DGP_SKIP_WITHOUT_CUDA();
  std::vector<std::pair<std::string, Tensor>> inputs;
  for (Dist d : all_dists()) inputs.emplace_back(dist_name(d), make_input(d));
  inputs.emplace_back("large", make_input(Dist::laplace, 5, {16, 24, 33, 17}));
  inputs.emplace_back("inner 3", make_input(Dist::normal, 6, {64, 40, 3}));
  inputs.emplace_back("inner 1", make_input(Dist::post_relu, 6, {512, 67}));
  inputs.emplace_back("empty", dgpipe::engine::zeros({0, 4, 3}));
  for (auto& [name, x] : inputs)
    for (const std::string spec :
         {"uniform:8/channel", "uniform:3/channel", "uniform:8/row", "uniform:13/row"}) {
      auto codec = make_codec(spec);
      Packet gpu = expect_cuda_packet_equals_cpu(*codec, x, name);
      ASSERT_TRUE(x.numel() == 0 || gpu.body.is_cuda()) << name << " " << spec;
    }
}

TEST(GroupedUniform, CudaReportsNonFiniteInputs) {
  DGP_SKIP_WITHOUT_CUDA();
  std::vector<float> v(3000, 1.0f);
  v[17] = NAN;
  auto codec = make_codec("uniform:8/channel");
  Packet p = codec->encode(dgpipe::engine::from_vector(v, {10, 3, 100}).to(dgpipe::engine::Device::cuda()));
  EXPECT_THROW(p.check_status(), dgpipe::engine::Error);
}
