// The CPU pieces of the group quantizers (compress/group_quant.cpp) against the scalar formulas of
// quant_math.h they must reproduce bit for bit: packing at every width, the vector quantizers on rounding
// ties, clamps, zero and overflowing steps, and the min/max scan.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "compress/codec_impl.h"
#include "compress/quant_math.h"
#include "distributions.h"
#include "engine/rng.h"

using namespace dgpipe::compress;
using namespace dgpipe::compress::detail;

namespace {

std::vector<uint32_t> random_codes(int64_t n, int bits, uint64_t seed) {
  std::vector<uint32_t> c(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    uint32_t w[4];
    dgpipe::engine::philox4x32(seed, static_cast<uint64_t>(i), w);
    c[i] = bits == 32 ? w[0] : w[0] & ((1u << bits) - 1u);
  }
  return c;
}

// Values that probe the quantizers: rounding ties of (x - lo)/step, both zeros, the ends of the range.
std::vector<float> probe_values(float lo, float step, int levels) {
  std::vector<float> x;
  for (int k = -2; k <= 2 * levels + 2; ++k) {
    const float t = lo + step * 0.5f * static_cast<float>(k);
    x.push_back(t);
    x.push_back(std::nextafter(t, -1e30f));
    x.push_back(std::nextafter(t, 1e30f));
  }
  x.push_back(0.0f);
  x.push_back(-0.0f);
  return x;
}

}  // namespace

TEST(GroupQuant, PackingMatchesTheBitByBitReferenceAtEveryWidth) {
  for (int bits = 1; bits <= 32; ++bits)
    for (int64_t n : {0, 1, 7, 8, 9, 63, 1024, 1031, 2500}) {
      std::vector<uint32_t> codes = random_codes(n, bits, 100 + bits);
      const size_t nbytes = packed_bytes(static_cast<uint64_t>(n), bits);
      std::vector<uint8_t> ref(nbytes, 0), fast(nbytes, 0);
      for (int64_t i = 0; i < n; ++i) put_bits(ref.data(), static_cast<uint64_t>(i), bits, codes[i]);
      pack_codes(codes.data(), n, bits, fast.data());
      ASSERT_EQ(ref, fast) << "bits " << bits << " n " << n;
      // Unpacked from code 8 on (a block start inside the stream) and from 0.
      for (int64_t first : {int64_t(0), int64_t(8)}) {
        if (first > n) continue;
        std::vector<uint32_t> back(static_cast<size_t>(n - first));
        unpack_codes(fast.data(), nbytes, first, n - first, bits, back.data());
        for (int64_t i = first; i < n; ++i)
          ASSERT_EQ(back[i - first], codes[i]) << "bits " << bits << " n " << n << " i " << i;
      }
    }
}

TEST(GroupQuant, UniformCodesEqualTheScalarFormula) {
  for (int q : {1, 2, 4, 8, 12, 16})
    for (float lo : {-3.0f, 0.0f, 1e-3f, -7e20f}) {
      const int levels = (1 << q) - 1;
      for (float step : {1.0f / levels, 0.37f, 3e-7f, 2e18f, 0.0f, std::numeric_limits<float>::infinity()}) {
        std::vector<float> x = probe_values(lo, step == 0.0f || std::isinf(step) ? 1.0f : step, levels);
        std::vector<uint32_t> codes(x.size());
        uniform_codes(x.data(), static_cast<int64_t>(x.size()), lo, step, q, codes.data());
        for (size_t i = 0; i < x.size(); ++i)
          ASSERT_EQ(codes[i], uniform_code(x[i], lo, step, q))
              << "q " << q << " x " << x[i] << " step " << step;
      }
    }
}

TEST(GroupQuant, GroupCodesEqualTheScalarFormula) {
  const int q = 6, groups = 4;
  const float lo[groups] = {-5.0f, -1.0f, 0.0f, 2.5f};
  const float step[groups] = {0.0625f, 0.0f, 0.013f, 1e-3f};
  for (bool overflow : {false, true}) {
    std::vector<float> steps(step, step + groups);
    if (overflow)
      steps[3] = std::numeric_limits<float>::infinity();  // a range wider than f32: the scalar way
    std::vector<float> x;
    std::vector<uint8_t> group;
    for (int g = 0; g < groups; ++g)
      for (float v : probe_values(lo[g], steps[g] > 0 && !std::isinf(steps[g]) ? steps[g] : 0.1f, 63)) {
        x.push_back(v);
        group.push_back(static_cast<uint8_t>(g));
      }
    std::vector<uint32_t> codes(x.size());
    group_codes(x.data(), group.data(), static_cast<int64_t>(x.size()), lo, steps.data(), groups, q,
                codes.data());
    for (size_t i = 0; i < x.size(); ++i) {
      const int g = group[i];
      ASSERT_EQ(codes[i], (static_cast<uint32_t>(g) << q) | group_value_code(x[i], lo[g], steps[g], q))
          << "x " << x[i] << " group " << g;
    }
  }
}

TEST(GroupQuant, MinMaxFindsTheExtremesAnywhere) {
  for (int64_t n : {1, 3, 8, 13, 1000}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) x[i] = std::sin(static_cast<float>(i));
    for (int64_t at = 0; at < n; at += (n > 20 ? 97 : 1)) {
      const int64_t top = (at + n / 2 + 1) % n;  // another element (the same one when n == 1)
      std::vector<float> y = x;
      y[at] = -10.0f;
      y[top] = 10.0f;
      float lo = 0, hi = 0;
      EXPECT_TRUE(min_max(y.data(), n, &lo, &hi));
      EXPECT_EQ(lo, n == 1 ? 10.0f : -10.0f) << "n " << n << " at " << at;
      EXPECT_EQ(hi, 10.0f) << "n " << n << " at " << at;
    }
  }
}

// min_max is the uniform codec's NaN/Inf check too (min and max alone would pass a NaN by): a lone NaN or
// Inf anywhere — the first vector load, the loop, the scalar tail, any 64k block on the op threads — is
// reported; a finite input never is.
TEST(GroupQuant, MinMaxReportsEveryNonFiniteValue) {
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(8), int64_t(13), int64_t(1000), int64_t(200003)}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) x[i] = std::sin(static_cast<float>(i)) * 1e30f;
    float lo = 0, hi = 0;
    EXPECT_TRUE(min_max(x.data(), n, &lo, &hi)) << n;
    for (int64_t at : {int64_t(0), int64_t(3), int64_t(6), int64_t(9), n - 1, n / 2, int64_t(140000)}) {
      if (at >= n) continue;
      for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()}) {
        std::vector<float> y = x;
        y[at] = bad;
        EXPECT_FALSE(min_max(y.data(), n, &lo, &hi)) << "n " << n << " at " << at << " " << bad;
      }
    }
  }
}

// uniform:4 and uniform:12 decode straight from the packed bytes (a nibble table with 16- or 8-lane
// permutes, a byte shuffle for 12 bits) where the CPU has AVX-512 or AVX2; every value must be the scalar
// formula's dequant(code, lo, step), in whole chunks, a last partial chunk and the codes past the last full
// vector step. The other widths go the unpack-then-dequantize way and are checked alike.
TEST(GroupQuant, UniformDecodeIsTheScalarFormula) {
  for (int64_t n : {int64_t(3 * 100003), int64_t(1024 + 40), int64_t(31)}) {
    const dgpipe::engine::Tensor x = dgpipe::testing::make_input(dgpipe::testing::Dist::laplace, 8, {n});
    for (int q : {4, 12, 8, 5}) {
      auto codec = make_codec("uniform:" + std::to_string(q));
      const Packet p = codec->encode(x);
      const std::vector<uint32_t> codes = read_codes(p);
      const GroupStat stat = read_group_stats(p)[0];
      const dgpipe::engine::Tensor y = codec->decode(p);
      const float* yv = y.data<float>();
      int64_t wrong = 0, first_wrong = -1;
      for (int64_t i = 0; i < n; ++i) {
        const float expect = dequant(codes[i], stat.lo, stat.step);
        if (std::memcmp(&yv[i], &expect, 4) != 0 && wrong++ == 0) first_wrong = i;
      }
      EXPECT_EQ(wrong, 0) << "uniform:" << q << " n=" << n << ", first at " << first_wrong;
    }
  }
}
