// none / fp16 / bf16 casts.
#include <gtest/gtest.h>

#include "compress/codec.h"
#include "distributions.h"
#include "support/gradcheck.h"

using namespace dgpipe::compress;
using namespace dgpipe::testing;
using dgpipe::engine::DType;
using dgpipe::engine::Tensor;

TEST(Cast, NoneIsLosslessAndDoesNotAlias) {
  auto codec = make_codec("none");
  Tensor x = make_input(Dist::laplace);
  Packet p = codec->encode(x);
  EXPECT_EQ(p.body_bytes(), x.nbytes());
  x.fill_(0.0);  // the packet owns its bytes
  Tensor y = codec->decode(p);
  EXPECT_EQ(y.to_vector(), make_input(Dist::laplace).to_vector());
}

TEST(Cast, HalfCastsRoundToNearestEven) {
  Tensor x = make_input(Dist::normal);
  for (std::string spec : {"fp16", "bf16"}) {
    auto codec = make_codec(spec);
    Packet p = codec->encode(x);
    EXPECT_EQ(p.body_bytes(), 2u * x.numel());
    Tensor y = codec->decode(Packet::deserialize(p.serialize()));
    EXPECT_EQ(y.dtype(), DType::f32);
    DType half = spec == "fp16" ? DType::f16 : DType::bf16;
    EXPECT_EQ(y.to_vector(), x.to(half).to(DType::f32).to_vector()) << spec;
  }
}
