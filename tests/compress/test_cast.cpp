// none / fp16 / bf16 casts.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "compress/codec.h"
#include "distributions.h"
#include "engine/parallel.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

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

// The f32 -> fp16/bf16 encoders look for NaN/Inf within the conversion pass (8 or 16 lanes at a time, then a
// scalar tail, in slices on the op threads) instead of a pass of their own: the verdict and the error must be
// those of the separate check wherever the value sits, and a finite value beyond the half range (an Inf on
// the wire) is no error. On a tensor long enough for several slices, at one and two threads, the packet is
// also the engine's own conversion.
TEST(Cast, HalfEncodersFindEveryNonFiniteInput) {
  const int64_t n = 3 * 100003;
  std::vector<double> v = make_input(Dist::normal, 4, {n}).to_vector();
  v[5] = 70000.0;       // rounds to Inf in f16
  v[n - 2] = -65520.0;  // rounds to -Inf in f16
  const Tensor finite = dgpipe::engine::from_vector(v, {n});
  const int restore = dgpipe::engine::cpu_threads();
  for (int threads : {1, 2}) {
    dgpipe::engine::set_cpu_threads(threads);
    for (std::string spec : {"fp16", "bf16"}) {
      auto codec = make_codec(spec, "b1");
      const DType half = spec == "fp16" ? DType::f16 : DType::bf16;
      EXPECT_EQ(codec->decode(codec->encode(finite)).to_vector(), finite.to(half).to(DType::f32).to_vector())
          << spec << " at " << threads << " threads";
      // In a vector block's first and second half, the last whole block, the scalar tail, the last slice.
      for (int64_t at : {int64_t(0), int64_t(9), int64_t(15), n - 20, n - 1, int64_t(200000)}) {
        for (double bad : {std::nan(""), double(INFINITY), -double(INFINITY)}) {
          std::vector<double> w = v;
          w[at] = bad;  // the only one: a block whose check is skipped would let it through
          const Tensor x = dgpipe::engine::from_vector(w, {n});
          const std::string msg = dgpipe::testing::error_of([&] { codec->encode(x); });
          const std::string expect =
              "contains 1 non-finite values (first at flat index " + std::to_string(at) + ":";
          EXPECT_NE(msg.find(expect), std::string::npos) << spec << " at " << at << ": " << msg;
          EXPECT_NE(msg.find("b1"), std::string::npos) << msg;
        }
      }
    }
  }
  dgpipe::engine::set_cpu_threads(restore);
}
