// Top-k: keeps exactly the k largest magnitudes, values exact, indices in the narrowest width; CUDA parity.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include <cstring>
#include <tuple>

#include "codec_checks.h"
#include "compress/codec.h"
#include "compress/codec_impl.h"
#include "distributions.h"
#include "engine/parallel.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

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

namespace {

// The packet's kept indices, unpacked.
std::vector<uint32_t> kept_indices(const Packet& p) {
  const int64_t n = dgpipe::engine::shape_numel(p.header.shape), k = p.header.params[0];
  Tensor body = p.host_body();
  const uint64_t off = detail::topk_index_offset(k);
  std::vector<uint32_t> index(static_cast<size_t>(k));
  detail::unpack_codes(body.data<uint8_t>() + off, body.nbytes() - off, 0, k, index_bits(n), index.data());
  return index;
}

// Overwrites code i of a bit-packed stream (put_bits only sets bits).
void set_code(uint8_t* out, uint64_t i, int bits, uint32_t value) {
  for (int b = 0; b < bits; ++b) {
    const uint64_t bit = i * static_cast<uint64_t>(bits) + static_cast<uint64_t>(b);
    const uint8_t mask = static_cast<uint8_t>(1u << (bit & 7));
    out[bit >> 3] = static_cast<uint8_t>(((value >> b) & 1u) ? out[bit >> 3] | mask : out[bit >> 3] & ~mask);
  }
}

}  // namespace

// The CPU decoder zeroes and scatters chunk by chunk on the op threads; the simple path — zeros, then every
// kept value written at its index — must give the same floats at any thread count, for one chunk, several,
// a last partial one, and everything kept. A packet whose indices do not increase (which would let two
// chunks write one element) or reach n is refused.
TEST(TopK, CpuDecodeIsZerosThenScatterAtAnyThreadCount) {
  const Tensor x = make_input(Dist::normal, 6, {3, 100003});
  const int64_t n = x.numel();
  const int restore = dgpipe::engine::cpu_threads();
  for (std::string spec : {"topk:0.000005", "topk:0.003", "topk:0.1", "topk:1"}) {
    auto codec = make_codec(spec, "b2");
    Packet p = codec->encode(x);
    const int64_t k = p.header.params[0];
    const std::vector<uint32_t> index = kept_indices(p);
    std::vector<float> expect(static_cast<size_t>(n), 0.0f);
    Tensor body = p.host_body();
    for (int64_t j = 0; j < k; ++j)
      std::memcpy(&expect[index[j]], body.data<uint8_t>() + kPreludeBytes + 4 * j, 4);
    for (int threads : {1, 2, 3}) {
      dgpipe::engine::set_cpu_threads(threads);
      Tensor y = codec->decode(p);
      EXPECT_EQ(std::memcmp(y.data<float>(), expect.data(), 4 * expect.size()), 0)
          << spec << " at " << threads << " threads";
    }
    dgpipe::engine::set_cpu_threads(restore);
    if (k < 3000) continue;
    // Corrupt copies: an index that repeats its predecessor in the middle of a chunk, one that goes back
    // across a chunk boundary, one beyond the tensor, and a chunk's first index far beyond it (the chunk
    // before zeroes up to that index: it must stop at n).
    const int bits = index_bits(n);
    const uint32_t largest = static_cast<uint32_t>((uint64_t(1) << bits) - 1);
    for (auto [position, value, what] :
         {std::tuple{int64_t(500), index[499], "do not increase"},
          std::tuple{int64_t(2048), index[2000], "do not increase"}, std::tuple{k - 1, uint32_t(n), ">= "},
          std::tuple{int64_t(1024), largest, ">= "}}) {
      Packet bad = Packet::deserialize(p.serialize());
      Tensor bb = bad.host_body();
      set_code(bb.data<uint8_t>() + detail::topk_index_offset(k), static_cast<uint64_t>(position), bits,
               value);
      bad.body = bb;
      const std::string msg = dgpipe::testing::error_of([&] { codec->decode(bad); });
      EXPECT_NE(msg.find("corrupt packet"), std::string::npos) << spec << ": " << msg;
      EXPECT_NE(msg.find(what), std::string::npos) << spec << ": " << msg;
      EXPECT_NE(msg.find("b2"), std::string::npos) << msg;
    }
  }
}
