// Error feedback: the running sum of what was sent tracks the running sum of the inputs.
#include <gtest/gtest.h>

#include <cmath>

#include "compress/codec.h"
#include "distributions.h"
#include "engine/ops.h"

using namespace dgpipe::compress;
using namespace dgpipe::testing;
using dgpipe::engine::Tensor;

TEST(ErrorFeedback, AccumulatedErrorStaysBoundedWhilePlainErrorGrows) {
  auto ef = make_codec("uniform:2+ef");
  auto plain = make_codec("uniform:2");
  EXPECT_EQ(ef->spec(), "uniform:2+ef");
  Tensor x = make_input(Dist::normal, 3, {512});
  std::vector<double> xs = x.to_vector();
  std::vector<double> sum_in(512, 0), sum_ef(512, 0), sum_plain(512, 0);
  for (int step = 0; step < 50; ++step) {
    std::vector<double> a = ef->decode(ef->encode(x)).to_vector();
    std::vector<double> b = plain->decode(plain->encode(x)).to_vector();
    for (int i = 0; i < 512; ++i) {
      sum_in[i] += xs[i];
      sum_ef[i] += a[i];
      sum_plain[i] += b[i];
    }
  }
  double worst_ef = 0, worst_plain = 0;
  for (int i = 0; i < 512; ++i) {
    worst_ef = std::max(worst_ef, std::fabs(sum_in[i] - sum_ef[i]));
    worst_plain = std::max(worst_plain, std::fabs(sum_in[i] - sum_plain[i]));
  }
  // With feedback the accumulated error stays within about one quantization step; without, it grows with
  // steps.
  EXPECT_LT(worst_ef, 2.5);
  EXPECT_GT(worst_plain, 5 * worst_ef);
}

TEST(ErrorFeedback, PacketsDecodeWithThePlainCodec) {
  auto ef = make_codec("sortquant:4+2+ef", "b0 fwd");
  auto plain = make_codec("sortquant:4+2");
  Tensor x = make_input(Dist::laplace);
  Packet p = ef->encode(x);
  EXPECT_EQ(plain->decode(p).to_vector(), ef->decode(p).to_vector());
  EXPECT_EQ(p.wire_bytes(), plain->wire_bytes(x.shape()));
}
