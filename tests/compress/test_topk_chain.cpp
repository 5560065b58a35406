// topk:R>Q: the selection of topk:R with its kept values quantized by Q — equal to doing the two by hand —,
// exact wire bytes, which chains are legal, error feedback around a chain, CUDA parity.
#include <gtest/gtest.h>

#include <cmath>

#include "codec_checks.h"
#include "compress/codec.h"
#include "distributions.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::compress;
using namespace dgpipe::testing;
using dgpipe::engine::Tensor;

namespace {

// topk:R, then Q applied to the kept values: what the chain must decode to, computed from the two codecs.
std::vector<double> by_hand(const std::string& topk, const std::string& values, const Tensor& x) {
  auto sparse = make_codec(topk);
  std::vector<double> kept = sparse->decode(sparse->encode(x)).to_vector();
  std::vector<int64_t> where;
  std::vector<float> vals;
  for (size_t i = 0; i < kept.size(); ++i)
    if (kept[i] != 0.0) where.push_back(static_cast<int64_t>(i)), vals.push_back(static_cast<float>(kept[i]));
  auto q = make_codec(values);
  std::vector<double> sent =
      q->decode(q->encode(dgpipe::engine::from_vector(vals, {static_cast<int64_t>(vals.size())})))
          .to_vector();
  std::vector<double> out(kept.size(), 0.0);
  for (size_t j = 0; j < where.size(); ++j) out[where[j]] = sent[j];
  return out;
}

}  // namespace

TEST(TopKChain, DecodesLikeTopkThenTheValuesCodec) {
  // Inputs without zeros, so the positions topk keeps are the non-zeros of its decode.
  for (Dist d : {Dist::normal, Dist::laplace, Dist::huge})
    for (const std::string values :
         {"uniform:8", "uniform:3", "sortquant:4+2", "fastquant:6+2", "kmeans:3", "fp16"})
      for (const std::string r : {"0.5", "0.1", "1"}) {
        const std::string spec = "topk:" + r + ">" + values;
        auto chain = make_codec(spec);
        EXPECT_EQ(chain->spec(), parse_codec_spec(spec).str());
        Tensor x = make_input(d, 9, {4, 8, 6, 5});
        Packet p = chain->encode(x);
        EXPECT_EQ(p.header.codec, CodecId::topk_chain);
        EXPECT_EQ(chain->decode(p).to_vector(), by_hand("topk:" + r, values, x))
            << spec << " " << dist_name(d);
      }
}

TEST(TopKChain, WireBytesAreTheIndicesPlusTheValuesPacket) {
  // 4096 elements, keep 2048: 16 bytes of prelude and padding, uniform:8 on [2048] (16 + 2048), 2048 indices
  // of 12 bits (3072 bytes).
  auto chain = make_codec("topk:0.5>uniform:8");
  EXPECT_EQ(chain->body_bytes({4096}), 16u + (16u + 2048u) + 3072u);
  Packet p = chain->encode(make_input(Dist::normal, 3, {4096}));
  EXPECT_EQ(p.header.params, (std::vector<int64_t>{2048, static_cast<int64_t>(CodecId::uniform), 8}));
  EXPECT_EQ(p.serialize().size(), p.wire_bytes());
  EXPECT_EQ(p.wire_bytes(), chain->wire_bytes({4096}));
  // Half of the values at 8 bits plus their indices: (8 + 12) / 2 = 10 bits per element instead of 32.
  EXPECT_NEAR(p.wire_bytes() * 8.0 / 4096, 10.0, 0.2);
  Packet back = Packet::deserialize(p.serialize());
  EXPECT_EQ(chain->decode(back).to_vector(), chain->decode(p).to_vector());
}

TEST(TopKChain, OnlyLegalChainsParse) {
  struct Case {
    std::string spec, needle;
  };
  const std::vector<Case> cases = {
      {"topk:0.5>power:4", "flat list"},
      {"topk:0.5>topk:0.1>uniform:8", "flat list"},
      {"topk:0.5>uniform:8/channel", "flat list"},
      {"topk:0.5>none", "flat list"},
      {"uniform:8>uniform:4", "only topk and delta can feed"},
      {"topk:0.5>", "empty stage"},
      {">uniform:8", "empty stage"},
      {"topk:0.5>>uniform:8", "empty stage"},
      {"delta", "delta needs the codec of the changes"},
      {"delta>power:4", "drift"},
      {"delta>delta>uniform:4", "one delta per boundary"},
      {"delta:svd:2>uniform:4", "first sends cannot use svd"},
      {"delta>uniform:4+ef", "error feedback cannot wrap delta"},
      {"uniform:8/column", "unknown grouping 'column'"},
  };
  for (const auto& c : cases) {
    const std::string msg = error_of([&] { parse_codec_spec(c.spec); });
    EXPECT_TRUE(contains(msg, c.needle)) << "spec '" << c.spec << "' gave: " << msg;
    EXPECT_TRUE(contains(msg, "'" + c.spec + "'")) << "the error must name the spec: " << msg;
  }
  for (const std::string ok : {"topk:0.5>uniform:8", "topk:0.5>uniform:8+ef", "delta>topk:0.5>uniform:8",
                               "delta:fp16>uniform:4/row", "delta>none"})
    EXPECT_EQ(parse_codec_spec(ok).str(), ok);
}

TEST(TopKChain, ErrorFeedbackWrapsTheWholeChain) {
  auto ef = make_codec("topk:0.25>uniform:4+ef");
  auto plain = make_codec("topk:0.25>uniform:4");
  Tensor x = make_input(Dist::laplace, 4, {512});
  std::vector<double> xs = x.to_vector(), sum_in(512, 0), sum_ef(512, 0), sum_plain(512, 0);
  for (int step = 0; step < 40; ++step) {
    Packet p = ef->encode(x);
    EXPECT_EQ(p.wire_bytes(), plain->wire_bytes(x.shape()));
    std::vector<double> y = plain->decode(p).to_vector(), z = plain->decode(plain->encode(x)).to_vector();
    for (int i = 0; i < 512; ++i) sum_in[i] += xs[i], sum_ef[i] += y[i], sum_plain[i] += z[i];
  }
  // With feedback every element is sent sooner or later, so the accumulated error stays bounded; without it,
  // the elements outside the top quarter are never sent and their error grows with every step.
  double worst_ef = 0, worst_plain = 0;
  for (int i = 0; i < 512; ++i) {
    worst_ef = std::max(worst_ef, std::fabs(sum_in[i] - sum_ef[i]));
    worst_plain = std::max(worst_plain, std::fabs(sum_in[i] - sum_plain[i]));
  }
  EXPECT_LT(4 * worst_ef, worst_plain);
}

TEST(TopKChain, CudaEqualsCpuPacketForPacket) {
  DGP_SKIP_WITHOUT_CUDA();
  for (Dist d : all_dists())
    for (const std::string spec :
         {"topk:0.5>uniform:8", "topk:0.1>sortquant:4+2", "topk:0.3>kmeans:3", "topk:1>bf16"}) {
      Tensor x =
          make_input(d, 5, d == Dist::tiny ? dgpipe::engine::Shape{3} : dgpipe::engine::Shape{16, 9, 13, 7});
      auto codec = make_codec(spec);
      expect_cuda_packet_equals_cpu(*codec, x, dist_name(d));
    }
}
