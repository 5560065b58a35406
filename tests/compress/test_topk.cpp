// Top-k: keeps exactly the k largest magnitudes, values exact, indices in the narrowest width; CUDA parity.
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

TEST(TopK, KeepsExactlyTheLargestMagnitudes) {
  for (Dist d : all_dists())
    for (double r : {0.01, 0.1, 0.5, 1.0}) {
      std::ostringstream spec;
      spec << "topk:" << r;
      auto codec = make_codec(spec.str());
      Tensor x = make_input(d);
      Packet p = codec->encode(x);
      std::vector<double> xv = x.to_vector(), yv = codec->decode(p).to_vector();
      const int64_t n = static_cast<int64_t>(xv.size());
      const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::floor(r * n)));
      EXPECT_EQ(p.header.params[0], k);
      int64_t kept = 0;
      double min_kept = INFINITY, max_dropped = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (yv[i] != 0.0) {
          EXPECT_EQ(yv[i], xv[i]) << "kept values are sent exactly";
          ++kept;
          min_kept = std::min(min_kept, std::fabs(xv[i]));
        } else {
          max_dropped = std::max(max_dropped, std::fabs(xv[i]));
        }
      }
      // Non-zero kept values equal k unless zeros are among the k largest (all-equal has none).
      if (d != Dist::post_relu || r < 0.5) {
        EXPECT_EQ(kept, k) << dist_name(d) << " r=" << r;
      }
      EXPECT_GE(min_kept, max_dropped) << dist_name(d) << " r=" << r;
    }
}

TEST(TopK, TiesKeepTheSmallerIndex) {
  auto codec = make_codec("topk:0.5");
  Tensor x = dgpipe::engine::from_vector(std::vector<float>{1, -1, 1, -1, 0.5f, 1}, {6});
  std::vector<double> y = codec->decode(codec->encode(x)).to_vector();
  EXPECT_EQ(y, (std::vector<double>{1, -1, 1, 0, 0, 0}));
}

TEST(TopK, IndexWidthIsTheNarrowestThatFits) {
  EXPECT_EQ(index_bits(1), 1);
  EXPECT_EQ(index_bits(2), 1);
  EXPECT_EQ(index_bits(3), 2);
  EXPECT_EQ(index_bits(1024), 10);
  EXPECT_EQ(index_bits(1025), 11);
  EXPECT_EQ(index_bits(64 * 32 * 32 * 32), 21);
  auto codec = make_codec("topk:0.25");
  // 4096 elements: 1024 values (4096 B + 8 prelude -> 4112 aligned) + 1024 x 12-bit indices (1536 B).
  EXPECT_EQ(codec->body_bytes({4096}), 4112u + 1536u);
}

// The CUDA encoder (radix select + compaction) must send the CPU reference's packet byte for byte, ties
// included: distributions with heavy ties (post-ReLU zeros, all-equal, +-1 magnitudes spread over many
// 2048-element tiles), a tensor of several tiles with a ragged tail, fractions down to a single kept element.
TEST(TopK, CudaEqualsCpuPacketForPacket) {
  DGP_SKIP_WITHOUT_CUDA();
  using dgpipe::engine::Shape;
  std::vector<std::pair<std::string, Tensor>> inputs;
  for (Dist d : all_dists()) {
    inputs.emplace_back(dist_name(d), make_input(d));
    if (d != Dist::tiny)
      inputs.emplace_back(std::string(dist_name(d)) + " large", make_input(d, 5, Shape{16, 64, 9, 13}));
  }
  std::vector<float> ties(10001);
  for (size_t i = 0; i < ties.size(); ++i) ties[i] = (i % 7 == 3) ? 2.0f : ((i % 2) ? -1.0f : 1.0f);
  ties[9999] = -2.0f;
  inputs.emplace_back("ties", dgpipe::engine::from_vector(ties, {10001}));
  inputs.emplace_back("signed zeros",
                      dgpipe::engine::from_vector(std::vector<float>{0.0f, -0.0f, 0.0f, -0.0f, 1e-40f}, {5}));
  for (auto& [name, x] : inputs)
    for (double r : {1e-4, 0.01, 0.1, 0.3, 0.5, 1.0}) {
      std::ostringstream spec;
      spec << "topk:" << r;
      auto codec = make_codec(spec.str());
      Packet gpu = expect_cuda_packet_equals_cpu(*codec, x, name);
      ASSERT_TRUE(gpu.body.is_cuda());
      // A CPU decode of the GPU packet (the receiving stage may be a CPU) gives the same tensor.
      Packet moved = Packet::deserialize(gpu.serialize());
      EXPECT_EQ(codec->decode(codec->encode(x)).to_vector(), codec->decode(moved).to_vector())
          << name << " " << spec.str();
    }
}

TEST(TopK, CudaReportsNonFiniteInputs) {
  DGP_SKIP_WITHOUT_CUDA();
  std::vector<float> v(3000, 1.0f);
  v[17] = NAN;
  v[2500] = INFINITY;
  auto codec = make_codec("topk:0.1");
  Packet p = codec->encode(dgpipe::engine::from_vector(v, {3000}).to(dgpipe::engine::Device::cuda()));
  EXPECT_THROW(p.check_status(), dgpipe::engine::Error);
  EXPECT_THROW(p.serialize(), dgpipe::engine::Error);
}
