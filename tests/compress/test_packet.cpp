// Packet header and body apart (what a channel that keeps bodies on the device sends): the header alone is
// the first bytes of serialize(), and header + body rebuild the same packet; mismatches are reported.
#include "compress/packet.h"

#include <gtest/gtest.h>

#include "compress/codec.h"
#include "distributions.h"
#include "engine/error.h"
#include "support/test_util.h"

using namespace dgpipe::compress;
using dgpipe::engine::Tensor;
using dgpipe::testing::error_of;

TEST(Packet, HeaderAndBodyApartRoundTrip) {
  Tensor x = dgpipe::testing::make_input(dgpipe::testing::Dist::normal);
  for (const char* spec : {"none", "fp16", "uniform:8", "sortquant:6+2", "topk:0.1", "power:2"}) {
    auto codec = make_codec(spec);
    Packet p = codec->encode(x);
    std::vector<uint8_t> whole = p.serialize();
    std::vector<uint8_t> header = p.serialize_header();
    ASSERT_EQ(header.size(), p.header_bytes()) << spec;
    EXPECT_TRUE(std::equal(header.begin(), header.end(), whole.begin())) << spec;
    Packet q = Packet::deserialize_with_body(header.data(), header.size(), p.body.clone(), "b");
    EXPECT_TRUE(q.header == p.header) << spec;
    EXPECT_EQ(q.serialize(), whole) << spec;
    EXPECT_EQ(codec->decode(q).to_vector(), codec->decode(p).to_vector()) << spec;
  }
}

TEST(Packet, HeaderAndBodyApartRejectMismatches) {
  auto codec = make_codec("uniform:8");
  Packet p = codec->encode(dgpipe::testing::make_input(dgpipe::testing::Dist::normal));
  std::vector<uint8_t> header = p.serialize_header();
  // body of the wrong size
  Tensor shorter = p.body.slice(0, 0, p.body.numel() - 1).contiguous();
  EXPECT_NE(error_of([&] {
              Packet::deserialize_with_body(header.data(), header.size(), shorter, "s0->1 fwd");
            }).find("announces"),
            std::string::npos);
  // no body at all
  EXPECT_NE(error_of([&] {
              Packet::deserialize_with_body(header.data(), header.size(), Tensor(), "s0->1 fwd");
            }).find("no body arrived"),
            std::string::npos);
  // body of the wrong dtype
  Tensor wrong = dgpipe::engine::zeros({p.body.numel()});
  EXPECT_NE(error_of([&] { Packet::deserialize_with_body(header.data(), header.size(), wrong); }).find("u8"),
            std::string::npos);
  // whole packet passed where a header alone is expected
  std::vector<uint8_t> whole = p.serialize();
  EXPECT_NE(error_of([&] {
              Packet::deserialize_with_body(whole.data(), whole.size(), p.body);
            }).find("stand alone"),
            std::string::npos);
  // truncated header
  EXPECT_NE(error_of([&] {
              Packet::deserialize_with_body(header.data(), header.size() - 3, p.body);
            }).find("truncated"),
            std::string::npos);
}
