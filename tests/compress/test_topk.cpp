// Top-k: keeps exactly the k largest magnitudes, values exact, indices in the narrowest width.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "compress/codec.h"
#include "distributions.h"

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
      if (d != Dist::post_relu || r < 0.5) { EXPECT_EQ(kept, k) << dist_name(d) << " r=" << r; }
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
