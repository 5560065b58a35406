// Spec parser, direction pairs, packet serialisation and validation, exact wire bytes for every codec, and
// half-precision inputs.
#include <gtest/gtest.h>

#include <cmath>

#include "codec_checks.h"
#include "compress/codec.h"
#include "distributions.h"
#include "engine/ops.h"
#include "support/test_util.h"

using namespace dgpipe::compress;
using dgpipe::engine::DType;
using dgpipe::engine::Error;
using dgpipe::engine::Tensor;
using dgpipe::testing::error_of;

namespace {
const std::vector<std::string> kSingleSpecs = {
    "none",          "fp16",          "bf16",          "uniform:8",      "uniform:1",
    "uniform:13",    "sortquant:6+2", "sortquant:3+1", "sortquant:12+4", "fastquant:6+2",
    "fastquant:5+3", "topk:0.1",      "topk:1",        "power:2",        "power:3/1",
    "svd:2",         "kmeans:3",      "kmeans:4/5",    "uniform:4+ef",   "sortquant:6+2+ef"};
// Group quantization and composed codecs (delta without sample ids: every row sent with its first-send
// codec).
const std::vector<std::string> kGroupedAndComposedSpecs = {
    "uniform:8/channel",          "uniform:5/row",   "topk:0.5>uniform:8",
    "topk:0.25>sortquant:4+2+ef", "delta>uniform:4", "delta:fp16>topk:0.5>uniform:8"};
const std::vector<std::string> kAllSpecs = [] {
  std::vector<std::string> all = kSingleSpecs;
  all.insert(all.end(), kGroupedAndComposedSpecs.begin(), kGroupedAndComposedSpecs.end());
  return all;
}();
}  // namespace

TEST(CodecSpec, ParsesEveryMethod) {
  CodecSpec s = parse_codec_spec("sortquant:6+2");
  EXPECT_EQ(s.id, CodecId::sortquant);
  EXPECT_EQ(s.q_bits, 6);
  EXPECT_EQ(s.s_bits, 2);
  EXPECT_FALSE(s.error_feedback);
  s = parse_codec_spec(" uniform:8+ef ");
  EXPECT_EQ(s.id, CodecId::uniform);
  EXPECT_EQ(s.q_bits, 8);
  EXPECT_TRUE(s.error_feedback);
  EXPECT_DOUBLE_EQ(parse_codec_spec("topk:0.25").fraction, 0.25);
  s = parse_codec_spec("power:4");
  EXPECT_EQ(s.rank, 4);
  EXPECT_EQ(s.iterations, 2);
  EXPECT_EQ(parse_codec_spec("svd:8/3").iterations, 3);
  EXPECT_EQ(parse_codec_spec("kmeans:4").bits, 4);
  for (const auto& spec : kAllSpecs) {
    CodecSpec p = parse_codec_spec(spec);
    EXPECT_EQ(parse_codec_spec(p.str()).str(), p.str()) << spec;
  }
}

TEST(CodecSpec, MalformedSpecsNameTheProblem) {
  struct Case {
    std::string spec, needle;
  };
  std::vector<Case> cases = {{"", "empty"},
                             {"zip:3", "unknown codec 'zip'"},
                             {"uniform", "missing bit count"},
                             {"uniform:0", "1 <= Q <= 16"},
                             {"uniform:17", "1 <= Q <= 16"},
                             {"uniform:8x", "not an integer"},
                             {"sortquant:6", "Q+S"},
                             {"sortquant:12+5", "Q + S <= 16"},
                             {"fastquant:0+2", "Q >= 1"},
                             {"topk:0", "(0, 1]"},
                             {"topk:1.5", "(0, 1]"},
                             {"topk:abc", "not a number"},
                             {"power:0", "rank"},
                             {"svd:4/0", "iteration count"},
                             {"kmeans:13", "1 <= B <= 12"},
                             {"fp16:3", "takes no argument"}};
  for (const auto& c : cases) {
    std::string msg = error_of([&] { parse_codec_spec(c.spec); });
    EXPECT_NE(msg.find(c.needle), std::string::npos) << "spec '" << c.spec << "' gave: " << msg;
  }
}

TEST(CodecSpec, DirectionPairs) {
  DirectionPair p = parse_direction_pair("fwd=sortquant:6+2,bwd=uniform:8");
  EXPECT_EQ(p.fwd, "sortquant:6+2");
  EXPECT_EQ(p.bwd, "uniform:8");
  p = parse_direction_pair("uniform:4");
  EXPECT_EQ(p.fwd, "uniform:4");
  EXPECT_EQ(p.bwd, "uniform:4");
  p = parse_direction_pair("bwd=topk:0.5");
  EXPECT_EQ(p.fwd, "none");
  EXPECT_EQ(p.bwd, "topk:0.5");
  EXPECT_NE(
      error_of([] { parse_direction_pair("fwd=uniform:8,side=none"); }).find("unknown direction 'side'"),
      std::string::npos);
  EXPECT_NE(error_of([] { parse_direction_pair("fwd=uniform:99"); }).find("uniform:99"), std::string::npos);
  EXPECT_NE(error_of([] { parse_direction_pair("fwd=none,fwd=fp16"); }).find("twice"), std::string::npos);
}

TEST(Packet, WireBytesAreExactForEveryCodec) {
  for (const auto& spec : kAllSpecs) {
    for (dgpipe::engine::Shape shape :
         {dgpipe::engine::Shape{4, 8, 6, 5}, dgpipe::engine::Shape{3, 7, 11}, dgpipe::engine::Shape{13}}) {
      auto codec = make_codec(spec);
      Tensor x = dgpipe::testing::make_input(dgpipe::testing::Dist::normal, 5, shape);
      Packet p = codec->encode(x);
      std::vector<uint8_t> bytes = p.serialize();
      EXPECT_EQ(bytes.size(), p.wire_bytes()) << spec;
      EXPECT_EQ(p.wire_bytes(), codec->wire_bytes(shape)) << spec << " " << dgpipe::engine::shape_str(shape);
      EXPECT_EQ(p.header_bytes(), 20u + 8u * (shape.size() + p.header.params.size())) << spec;
      Packet q = Packet::deserialize(bytes);
      EXPECT_EQ(q.header, p.header) << spec;
      Tensor a = codec->decode(p), b = codec->decode(q);
      EXPECT_EQ(a.to_vector(), b.to_vector()) << spec;
      EXPECT_EQ(a.shape(), shape) << spec;
    }
  }
}

TEST(Packet, BitPackedPayloadSizes) {
  // 1000 elements at 6+2 bits: exactly 1000 bytes of codes; at 12 bits: 1500 bytes (the original used 2000,
  // docs/original.md#wire-size-and-nominal-ratios).
  auto sq = make_codec("sortquant:6+2");
  EXPECT_EQ(sq->body_bytes({1000}), 48u + 1000u);  // prelude 8 + 4 groups x 8 = 40 -> padded to 48
  auto u12 = make_codec("uniform:12");
  EXPECT_EQ(u12->body_bytes({1000}), 16u + 1500u);
  auto u3 = make_codec("uniform:3");
  EXPECT_EQ(u3->body_bytes({1001}), 16u + 376u);  // ceil(3003 / 8)
  auto tk = make_codec("topk:0.1");
  // k = 100 values (400 bytes after the 8-byte prelude -> 416), indices of 10 bits -> 125 bytes
  EXPECT_EQ(tk->body_bytes({1000}), 416u + 125u);
  auto pw = make_codec("power:3");
  EXPECT_EQ(pw->body_bytes({2, 32, 4, 4}), 16u + 4u * 2u * (32u + 16u) * 3u);
  auto km = make_codec("kmeans:4");
  EXPECT_EQ(km->body_bytes({100}), 80u + 50u);  // 8 + 16 centroids x 4 = 72 -> 80; 100 x 4 bits = 50
  EXPECT_EQ(make_codec("fp16")->body_bytes({100}), 200u);
}

TEST(Packet, DeserializeRejectsCorruptBuffers) {
  auto codec = make_codec("uniform:8", "stage0->1 fwd");
  Packet p = codec->encode(dgpipe::testing::make_input(dgpipe::testing::Dist::normal));
  std::vector<uint8_t> good = p.serialize();
  std::vector<uint8_t> bad = good;
  bad[0] = 'X';
  EXPECT_NE(
      error_of([&] { Packet::deserialize(bad, dgpipe::engine::Device::cpu(), "b1"); }).find("bad magic"),
      std::string::npos);
  bad = good;
  bad[4] = 99;
  EXPECT_NE(error_of([&] { Packet::deserialize(bad); }).find("unsupported packet version 99"),
            std::string::npos);
  bad = good;
  bad[5] = 200;
  EXPECT_NE(error_of([&] { Packet::deserialize(bad); }).find("unknown codec id 200"), std::string::npos);
  std::vector<uint8_t> cut(good.begin(), good.begin() + 10);
  EXPECT_NE(error_of([&] { Packet::deserialize(cut); }).find("truncated"), std::string::npos);
  cut.assign(good.begin(), good.end() - 5);
  std::string msg =
      error_of([&] { Packet::deserialize(cut, dgpipe::engine::Device::cpu(), "stage0->1 fwd"); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  EXPECT_NE(msg.find("stage0->1 fwd"), std::string::npos) << msg;
  // A packet of another codec is refused by decode.
  auto other = make_codec("uniform:4");
  EXPECT_NE(error_of([&] { other->decode(p); }).find("parameters do not match"), std::string::npos);
  auto sq = make_codec("sortquant:6+2");
  EXPECT_NE(error_of([&] { sq->decode(p); }).find("cannot decode a uniform packet"), std::string::npos);
}

TEST(Codec, NonFiniteInputNamesTheBoundary) {
  for (const auto& spec : kAllSpecs) {
    auto codec = make_codec(spec, "stage1->2 bwd");
    Tensor x = dgpipe::testing::make_input(dgpipe::testing::Dist::normal);
    for (double bad : {std::nan(""), double(INFINITY), -double(INFINITY)}) {
      std::vector<double> v = x.to_vector();
      v[17] = bad;
      Tensor y = dgpipe::engine::from_vector(v, x.shape());
      std::string msg = error_of([&] { codec->encode(y); });
      EXPECT_NE(msg.find("stage1->2 bwd"), std::string::npos) << spec << ": " << msg;
      EXPECT_NE(msg.find("non-finite"), std::string::npos) << spec << ": " << msg;
      EXPECT_NE(msg.find("index 17"), std::string::npos) << spec << ": " << msg;
    }
  }
}

TEST(Codec, RejectsIntegerTensors) {
  auto codec = make_codec("uniform:8", "b0");
  Tensor x = dgpipe::engine::arange(0, 10);
  EXPECT_NE(error_of([&] { codec->encode(x); }).find("expected a floating tensor"), std::string::npos);
}

TEST(Codec, EmptyTensorRoundTrips) {
  for (const auto& spec : kAllSpecs) {
    auto codec = make_codec(spec);
    Tensor x = dgpipe::engine::zeros({0, 4});
    Packet p = codec->encode(x);
    EXPECT_EQ(p.wire_bytes(), codec->wire_bytes({0, 4})) << spec;
    EXPECT_EQ(codec->decode(Packet::deserialize(p.serialize())).shape(), x.shape()) << spec;
  }
}

// ---- half-precision inputs (f16, bf16): what a half-precision stage sends ----

namespace {
bool is_cast_spec(const std::string& spec) {
  return spec == "none" || spec == "fp16" || spec == "bf16";
}
}  // namespace

// Every codec encodes a half tensor into the packet its exact f32 values would give (the quantizers'
// arithmetic is f32 either way), so wire bytes are those of an f32 input for the quantizing codecs; `none`
// sends half the f32 bytes and fp16/bf16 send the half tensor unchanged. decode() returns the half dtype,
// decode_as() the receiver's.
TEST(HalfInput, EveryCodecEncodesHalfAsItsF32ValuesWithF32WireBytes) {
  const dgpipe::engine::Shape shape{4, 8, 6, 5};
  for (DType half : {DType::f16, DType::bf16}) {
    const Tensor xh = dgpipe::testing::make_input(dgpipe::testing::Dist::laplace, 7, shape).to(half);
    const Tensor xf = xh.to(DType::f32);  // the same values, exactly
    for (const auto& spec : kAllSpecs) {
      const std::string what = spec + " on " + dgpipe::engine::dtype_name(half);
      Packet ph = make_codec(spec)->encode(xh);  // fresh codecs: power and svd start from the same state
      Packet pf = make_codec(spec)->encode(xf);
      EXPECT_EQ(ph.header.dtype, half) << what;
      EXPECT_EQ(ph.wire_bytes(), make_codec(spec)->wire_bytes(shape, half)) << what;
      EXPECT_EQ(Packet::deserialize(ph.serialize()).header, ph.header) << what;
      auto codec = make_codec(spec);
      Tensor back = codec->decode(ph);
      EXPECT_EQ(back.dtype(), half) << what;
      EXPECT_EQ(codec->decode_as(ph, DType::f32).dtype(), DType::f32) << what;
      if (spec == "none") {
        EXPECT_EQ(ph.body_bytes() * 2, pf.body_bytes()) << "none sends half the f32 bytes";
      } else if (is_cast_spec(spec)) {
        EXPECT_EQ(ph.body_bytes(), 2u * xh.numel()) << what;
      } else {
        EXPECT_EQ(ph.wire_bytes(), pf.wire_bytes()) << what << ": the wire bytes of an f32 input";
        EXPECT_EQ(ph.host_body().to_vector(), pf.host_body().to_vector())
            << what << ": the f32 input's packet";
      }
      if (is_cast_spec(spec)) {
        EXPECT_EQ(back.to_vector(), xh.to_vector()) << what << " is the identity";
      }
    }
  }
}

// The decode error bounds hold on half inputs: uniform:Q is within half a step of the input (before the
// decoded value is rounded to the receiver's half type, which adds at most half a unit in its last place).
TEST(HalfInput, DecodeErrorBoundsHold) {
  for (DType half : {DType::f16, DType::bf16}) {
    const Tensor xh = dgpipe::testing::make_input(dgpipe::testing::Dist::normal, 3, {2, 16, 7, 7}).to(half);
    auto codec = make_codec("uniform:8");
    Packet p = codec->encode(xh);
    const GroupStat g = read_group_stats(p)[0];
    const std::vector<double> x = xh.to_vector(), exact = codec->decode_as(p, DType::f32).to_vector(),
                              rounded = codec->decode(p).to_vector();
    const double ulp = half == DType::f16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);  // relative half-ulp
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_LE(std::fabs(exact[i] - x[i]), 0.5 * g.step * (1 + 1e-6)) << i;
      ASSERT_LE(std::fabs(rounded[i] - exact[i]), ulp * std::fabs(exact[i]) + 1e-30) << i;
    }
    auto topk = make_codec("topk:0.25");
    const std::vector<double> kept = topk->decode(topk->encode(xh)).to_vector();
    for (size_t i = 0; i < x.size(); ++i) {
      if (kept[i] != 0) {
        ASSERT_EQ(kept[i], x[i]) << "top-k sends the kept half values exactly";
      }
    }
  }
}

// fp16 on a bf16 tensor is the identity: a value beyond f16's range survives.
TEST(HalfInput, HalfCastCodecsNeverSqueezeAHalfInputIntoTheOtherHalf) {
  Tensor x = dgpipe::engine::from_vector(std::vector<double>{1e30, -3.0, 1e-30}, {3}).to(DType::bf16);
  auto fp16 = make_codec("fp16");
  EXPECT_EQ(fp16->decode(fp16->encode(x)).to_vector(), x.to_vector());
  Tensor h = dgpipe::engine::from_vector(std::vector<double>{6e4, 1e-7}, {2}).to(DType::f16);
  auto bf16 = make_codec("bf16");
  EXPECT_EQ(bf16->decode(bf16->encode(h)).to_vector(), h.to_vector());
}

// Error feedback on a half input sends it in its own dtype and keeps the f32 residual, rounding included.
TEST(HalfInput, ErrorFeedbackSendsHalfAndKeepsAnF32Residual) {
  auto codec = make_codec("none+ef");
  Tensor x = dgpipe::testing::make_input(dgpipe::testing::Dist::normal, 9, {64}).to(DType::f16);
  Packet p = codec->encode(x);
  EXPECT_EQ(p.body_bytes(), 2u * 64u);
  EXPECT_EQ(codec->decode(p).to_vector(), x.to_vector());
}

// CPU codecs split their passes over the op threads (engine/parallel.h); a packet and its decoding must not
// depend on how many there are. The tensor is large enough for every split to happen (several 64k-element
// blocks of min/max, many 1024-element chunks), with an odd tail.
TEST(Packet, CpuCodecsGiveTheSameBytesAtAnyThreadCount) {
  const Tensor x = dgpipe::testing::make_input(dgpipe::testing::Dist::normal, 11, {3, 100003});
  for (const auto& spec : kAllSpecs) dgpipe::testing::expect_same_at_any_thread_count(spec, x);
}
