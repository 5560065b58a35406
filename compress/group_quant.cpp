// CPU pieces shared by the min/max group quantizers (uniform = one group, sortquant, fastquant) and the other
// bit-packed codecs. Every function here computes exactly what the scalar formulas of quant_math.h compute
// (the codec tests compare the bytes with goldens and an oracle); they are only written for speed: codes are
// packed and unpacked 8 at a time with the width a compile-time constant (nibbles, bytes, 12 and 16 bits as
// plain loops), and quantization runs 8 lanes at a time in AVX2 where the CPU has it (checked at run time)
// and 4 in SSE2 (the x86-64 baseline) otherwise, doing the same IEEE single-precision operations in the same
// order.
#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "compress/codec_impl.h"
#include "compress/quant_math.h"
#include "engine/cpu_features.h"
#include "engine/error.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace dgpipe::compress::detail {
namespace {

// 8 codes of B bits <-> exactly B bytes (bit order of quant_math.h: little-endian, code 0 in the low bits).
template <int B>
void pack_blocks(const uint32_t* codes, int64_t blocks, uint8_t* out) {
  // Nibbles, bytes, 3 bytes per 2 codes, 2 bytes per code: plain loops the compiler vectorises.
  if constexpr (B == 4) {
    for (int64_t j = 0; j < blocks * 4; ++j)
      out[j] = static_cast<uint8_t>(codes[2 * j] | (codes[2 * j + 1] << 4));
    return;
  } else if constexpr (B == 8) {
    for (int64_t j = 0; j < blocks * 8; ++j) out[j] = static_cast<uint8_t>(codes[j]);
    return;
  } else if constexpr (B == 12) {
    // 8 codes = 96 bits: one 8-byte and one 4-byte store instead of 12 byte stores.
    for (int64_t blk = 0; blk < blocks; ++blk, codes += 8, out += 12) {
      const uint64_t a = uint64_t(codes[0]) | uint64_t(codes[1]) << 12 | uint64_t(codes[2]) << 24 |
                         uint64_t(codes[3]) << 36 | uint64_t(codes[4]) << 48 | uint64_t(codes[5]) << 60;
      const uint32_t b = (codes[5] >> 4) | codes[6] << 8 | codes[7] << 20;
      std::memcpy(out, &a, 8);
      std::memcpy(out + 8, &b, 4);
    }
    return;
  } else if constexpr (B == 16) {
    for (int64_t j = 0; j < blocks * 8; ++j) {
      out[2 * j] = static_cast<uint8_t>(codes[j]);
      out[2 * j + 1] = static_cast<uint8_t>(codes[j] >> 8);
    }
    return;
  }
  for (int64_t blk = 0; blk < blocks; ++blk, codes += 8, out += B) {
    if constexpr (B <= 8) {
      uint64_t acc = 0;
      for (int k = 0; k < 8; ++k) acc |= static_cast<uint64_t>(codes[k]) << (k * B);
      std::memcpy(out, &acc, B);
    } else if constexpr (B <= 16) {
      unsigned __int128 acc = 0;
      for (int k = 0; k < 8; ++k) acc |= static_cast<unsigned __int128>(codes[k]) << (k * B);
      std::memcpy(out, &acc, B);
    } else {  // 4 codes fill 4B bits: B/2 bytes, and a half byte more when B is odd
      unsigned __int128 a = 0, b = 0;
      for (int k = 0; k < 4; ++k) a |= static_cast<unsigned __int128>(codes[k]) << (k * B);
      for (int k = 0; k < 4; ++k) b |= static_cast<unsigned __int128>(codes[4 + k]) << (k * B);
      if constexpr (B % 2 == 0) {
        std::memcpy(out, &a, B / 2);
        std::memcpy(out + B / 2, &b, B / 2);
      } else {
        a |= b << (4 * B);  // the low 128 - 4B bits of b
        std::memcpy(out, &a, 16);
        b >>= 128 - 4 * B;
        std::memcpy(out + 16, &b, B - 16);
      }
    }
  }
}

template <int B>
void unpack_blocks(const uint8_t* in, int64_t blocks, uint32_t* codes) {
  constexpr uint32_t mask = B == 32 ? 0xffffffffu : (1u << B) - 1u;
  if constexpr (B == 4) {
    for (int64_t j = 0; j < blocks * 4; ++j) {
      codes[2 * j] = in[j] & 15u;
      codes[2 * j + 1] = in[j] >> 4;
    }
    return;
  } else if constexpr (B == 8) {
    for (int64_t j = 0; j < blocks * 8; ++j) codes[j] = in[j];
    return;
  } else if constexpr (B == 12) {
    for (int64_t j = 0; j < blocks * 4; ++j) {
      const uint32_t b0 = in[3 * j], b1 = in[3 * j + 1], b2 = in[3 * j + 2];
      codes[2 * j] = b0 | ((b1 & 15u) << 8);
      codes[2 * j + 1] = (b1 >> 4) | (b2 << 4);
    }
    return;
  } else if constexpr (B == 16) {
    for (int64_t j = 0; j < blocks * 8; ++j)
      codes[j] = in[2 * j] | (static_cast<uint32_t>(in[2 * j + 1]) << 8);
    return;
  } else if constexpr (B > 16 && B <= 25) {
    // A code spans at most 4 bytes (7 + 25 bits): one 4-byte load each, shifted and masked (top-k's indices
    // of tensors of 64K to 32M elements). The load of code 7 ends at the block's end (its bits do), the
    // others stay inside the block (B >= 16), so nothing beyond the block is read.
    for (int64_t blk = 0; blk < blocks; ++blk, codes += 8, in += B) {
      for (int k = 0; k < 7; ++k) {
        uint32_t w;
        std::memcpy(&w, in + k * B / 8, 4);
        codes[k] = (w >> (k * B % 8)) & mask;
      }
      uint32_t w;
      std::memcpy(&w, in + B - 4, 4);
      codes[7] = w >> (32 - B);
    }
    return;
  }
  for (int64_t blk = 0; blk < blocks; ++blk, codes += 8, in += B) {
    if constexpr (B <= 8) {
      uint64_t acc = 0;
      std::memcpy(&acc, in, B);
      for (int k = 0; k < 8; ++k) codes[k] = static_cast<uint32_t>(acc >> (k * B)) & mask;
    } else if constexpr (B <= 16) {
      unsigned __int128 acc = 0;
      std::memcpy(&acc, in, B);
      for (int k = 0; k < 8; ++k) codes[k] = static_cast<uint32_t>(acc >> (k * B)) & mask;
    } else {
      unsigned __int128 a = 0, b = 0;
      if constexpr (B % 2 == 0) {
        std::memcpy(&a, in, B / 2);
        std::memcpy(&b, in + B / 2, B / 2);
      } else {
        std::memcpy(&a, in, 16);
        std::memcpy(&b, in + 16, B - 16);
        b = (b << (128 - 4 * B)) | (a >> (4 * B));
      }
      for (int k = 0; k < 4; ++k) codes[k] = static_cast<uint32_t>(a >> (k * B)) & mask;
      for (int k = 0; k < 4; ++k) codes[4 + k] = static_cast<uint32_t>(b >> (k * B)) & mask;
    }
  }
}

using PackFn = void (*)(const uint32_t*, int64_t, uint8_t*);
using UnpackFn = void (*)(const uint8_t*, int64_t, uint32_t*);

template <int... B>
constexpr std::array<PackFn, sizeof...(B)> pack_table(std::integer_sequence<int, B...>) {
  return {pack_blocks<B + 1>...};
}
template <int... B>
constexpr std::array<UnpackFn, sizeof...(B)> unpack_table(std::integer_sequence<int, B...>) {
  return {unpack_blocks<B + 1>...};
}
constexpr auto kPack = pack_table(std::make_integer_sequence<int, 32>{});
constexpr auto kUnpack = unpack_table(std::make_integer_sequence<int, 32>{});

#if defined(__SSE2__)
// round_half_even of 4 lanes in the default rounding mode: |v| < 2^23 is rounded by adding and subtracting
// 2^23 (exact for every such float), larger magnitudes are integers already; the sign is kept (-0.3 -> -0).
inline __m128 round_half_even4(__m128 v) {
  const __m128 sign = _mm_set1_ps(-0.0f), magic = _mm_set1_ps(8388608.0f);
  const __m128 a = _mm_andnot_ps(sign, v);
  const __m128 r = _mm_or_ps(_mm_sub_ps(_mm_add_ps(a, magic), magic), _mm_and_ps(v, sign));
  const __m128 small = _mm_cmplt_ps(a, magic);
  return _mm_or_ps(_mm_and_ps(small, r), _mm_andnot_ps(small, v));
}

// min(max(r, 0), top) then truncation: the clamp of uniform_code / group_value_code (a -0 becomes 0 either
// way; no lane is NaN, see all_steps_usable).
inline __m128i clamp_to_code4(__m128 r, __m128 top) {
  return _mm_cvttps_epi32(_mm_min_ps(_mm_max_ps(r, _mm_setzero_ps()), top));
}
#endif

#if defined(__x86_64__)
// The same as the SSE2 loops, 8 lanes wide, for CPUs with AVX2 (chosen at run time: the build targets plain
// x86-64). Every lane does the scalar formula's operations in the same order, so the codes are the same.
__attribute__((target("avx2"))) inline __m256 round_half_even8(__m256 v) {
  const __m256 sign = _mm256_set1_ps(-0.0f), magic = _mm256_set1_ps(8388608.0f);
  const __m256 a = _mm256_andnot_ps(sign, v);
  const __m256 r = _mm256_or_ps(_mm256_sub_ps(_mm256_add_ps(a, magic), magic), _mm256_and_ps(v, sign));
  const __m256 small = _mm256_cmp_ps(a, magic, _CMP_LT_OQ);
  return _mm256_or_ps(_mm256_and_ps(small, r), _mm256_andnot_ps(small, v));
}

__attribute__((target("avx2"))) int64_t uniform_codes_avx2(const float* x, int64_t m, float lo, float step,
                                                           int q_bits, uint32_t* codes) {
  const __m256 vlo = _mm256_set1_ps(lo), vstep = _mm256_set1_ps(step);
  const __m256 half = _mm256_set1_ps(static_cast<float>(1u << (q_bits - 1)));
  const __m256 top = _mm256_set1_ps(static_cast<float>((1u << q_bits) - 1u));
  int64_t i = 0;
  for (; i + 8 <= m; i += 8) {
    const __m256 d = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vlo), vstep);
    const __m256 r = _mm256_add_ps(round_half_even8(_mm256_sub_ps(d, half)), half);
    const __m256 c = _mm256_min_ps(_mm256_max_ps(r, _mm256_setzero_ps()), top);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i), _mm256_cvttps_epi32(c));
  }
  return i;
}

__attribute__((target("avx2"))) int64_t group_codes_avx2(const float* x, const uint8_t* group, int64_t m,
                                                         const float* lo, const float* step, int q_bits,
                                                         uint32_t* codes) {
  const __m256 top = _mm256_set1_ps(static_cast<float>((1u << q_bits) - 1u));
  const __m128i shift = _mm_cvtsi32_si128(q_bits);
  int64_t i = 0;
  for (; i + 8 <= m; i += 8) {
    const __m256i g = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(group + i)));
    const __m256 vlo = _mm256_i32gather_ps(lo, g, 4);
    const __m256 vstep = _mm256_i32gather_ps(step, g, 4);
    const __m256 r = round_half_even8(_mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vlo), vstep));
    const __m256i q =
        _mm256_and_si256(_mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(r, _mm256_setzero_ps()), top)),
                         _mm256_castps_si256(_mm256_cmp_ps(vstep, _mm256_setzero_ps(), _CMP_GT_OQ)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i),
                        _mm256_or_si256(_mm256_sll_epi32(g, shift), q));
  }
  return i;
}

// Decoders of one group's codes straight from the packed bytes (no code array), for the widths that dominate:
// each returns how many of the m codes at `in` it decoded (a prefix, a whole number of blocks), the caller
// does the rest. They produce exactly dequant(q, lo, step).
//
// 4 bits: each nibble indexes the 16 values dequant(q, lo, step), q < 16, computed once (`values`); a byte
// holds codes 2j (low nibble) and 2j + 1. 32 codes (16 bytes) per step, looked up with one 16-lane permute.
// (The masked forms with a full mask: GCC 12 warns on the plain ones.)
__attribute__((target("avx512f"))) inline __m512 nibble_values16(__m128i codes16, __m512 table) {
  return _mm512_maskz_permutexvar_ps(0xffff, _mm512_maskz_cvtepu8_epi32(0xffff, codes16), table);
}
__attribute__((target("avx512f"))) int64_t decode_nibbles_avx512(const uint8_t* in, int64_t m,
                                                                 const float* values, float* out) {
  const __m512 table = _mm512_loadu_ps(values);
  const __m128i low4 = _mm_set1_epi8(15);
  int64_t i = 0;
  for (; i + 32 <= m; i += 32) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i / 2));
    const __m128i lo = _mm_and_si128(b, low4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low4);
    _mm512_storeu_ps(out + i, nibble_values16(_mm_unpacklo_epi8(lo, hi), table));
    _mm512_storeu_ps(out + i + 16, nibble_values16(_mm_unpackhi_epi8(lo, hi), table));
  }
  return i;
}

// The same with 8-lane permutes: values 0-7 and 8-15, chosen by the code's bit 3 (moved to the sign bit).
__attribute__((target("avx2"))) inline __m256 nibble_values8(__m128i codes8, __m256 low, __m256 high) {
  const __m256i idx = _mm256_cvtepu8_epi32(codes8);
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(low, idx), _mm256_permutevar8x32_ps(high, idx),
                          _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}
__attribute__((target("avx2"))) int64_t decode_nibbles_avx2(const uint8_t* in, int64_t m, const float* values,
                                                            float* out) {
  const __m256 low = _mm256_loadu_ps(values), high = _mm256_loadu_ps(values + 8);
  const __m128i low4 = _mm_set1_epi8(15);
  int64_t i = 0;
  for (; i + 32 <= m; i += 32) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i / 2));
    const __m128i lo = _mm_and_si128(b, low4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low4);
    const __m128i first16 = _mm_unpacklo_epi8(lo, hi), last16 = _mm_unpackhi_epi8(lo, hi);
    _mm256_storeu_ps(out + i, nibble_values8(first16, low, high));
    _mm256_storeu_ps(out + i + 8, nibble_values8(_mm_srli_si128(first16, 8), low, high));
    _mm256_storeu_ps(out + i + 16, nibble_values8(last16, low, high));
    _mm256_storeu_ps(out + i + 24, nibble_values8(_mm_srli_si128(last16, 8), low, high));
  }
  return i;
}

// 12 bits: 8 codes in 12 bytes. A byte shuffle puts the two bytes holding code k in lane k (code k starts at
// bit 12k: byte 3k/2, shifted by 4 when k is odd), a shift and a mask leave the code, then q * step + lo as
// dequant() computes it (a separate multiply and add; AVX2 brings no fused multiply-add). A step reads 16
// bytes, so it stops while 16 bytes are left to read.
__attribute__((target("avx2"))) int64_t decode_12bit_avx2(const uint8_t* in, int64_t m, float lo, float step,
                                                          float* out) {
  const __m256i gather =
      _mm256_setr_epi8(0, 1, -1, -1, 1, 2, -1, -1, 3, 4, -1, -1, 4, 5, -1, -1,  // codes 0-3
                       6, 7, -1, -1, 7, 8, -1, -1, 9, 10, -1, -1, 10, 11, -1, -1);
  const __m256i shift = _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
  const __m256i mask = _mm256_set1_epi32(0xfff);
  const __m256 vlo = _mm256_set1_ps(lo), vstep = _mm256_set1_ps(step);
  const int64_t bytes = m / 8 * 12;
  int64_t i = 0;
  for (; i + 8 <= m && i / 8 * 12 + 16 <= bytes; i += 8) {
    const __m256i raw =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i / 8 * 12)));
    const __m256i q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(raw, gather), shift), mask);
    _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q), vstep), vlo));
  }
  return i;
}
#endif

// The vector paths need every (x - lo) / step finite or +-inf, never NaN: true when each group's step is
// finite (then hi - lo is finite, and lo <= x <= hi). A range that overflows fp32 goes the scalar way.
bool all_steps_finite(const float* step, int groups) {
  for (int g = 0; g < groups; ++g)
    if (!is_finite_float(step[g])) return false;
  return true;
}

}  // namespace

void pack_codes(const uint32_t* codes, int64_t n, int bits, uint8_t* out) {
  pack_codes_at(codes, 0, n, bits, out);
}

void pack_codes_at(const uint32_t* codes, int64_t first, int64_t m, int bits, uint8_t* payload) {
  DGP_CHECK(first % 8 == 0 && bits >= 1 && bits <= 32, "pack_codes_at: bad block start or width");
  const int64_t blocks = m / 8;
  kPack[bits - 1](codes, blocks, payload + first / 8 * bits);
  for (int64_t i = blocks * 8; i < m; ++i)
    put_bits(payload, static_cast<uint64_t>(first + i), bits, codes[i]);
}

void unpack_codes(const uint8_t* payload, uint64_t nbytes, int64_t first, int64_t m, int bits,
                  uint32_t* codes) {
  DGP_CHECK(first % 8 == 0 && bits >= 1 && bits <= 32, "unpack_codes: bad block start or width");
  // Whole blocks that lie inside the payload; the rest (a short last block) bit by bit.
  const int64_t avail = static_cast<int64_t>(nbytes / static_cast<uint64_t>(bits)) - first / 8;
  const int64_t blocks = std::max<int64_t>(0, std::min<int64_t>(m / 8, avail));
  kUnpack[bits - 1](payload + first / 8 * bits, blocks, codes);
  for (int64_t i = blocks * 8; i < m; ++i)
    codes[i] = get_bits(payload, nbytes, static_cast<uint64_t>(first + i), bits);
}

namespace {

// 1 when the bits of v are NaN's or Inf's (exponent all ones), else 0.
inline uint32_t non_finite(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
}

// Returns whether every value is finite (checked in the same pass: NaN would slip through min and max).
bool min_max_serial(const float* x, int64_t n, float* lo, float* hi) {
  if (n == 0) {
    *lo = *hi = 0.0f;
    return true;
  }
  float l = x[0], h = x[0];
  uint32_t bad = 0;
  int64_t i = 0;
#if defined(__SSE2__)
  // Four lanes (x[i] < l ? x[i] : l, as minps); -0 and +0 may come out in another order than in a scalar
  // loop, which no encoded byte sees (stats are written as v + 0, and hi - lo is the same for either zero).
  if (n >= 8) {
    const __m128i exp = _mm_set1_epi32(0x7f800000);
    auto non_finite4 = [&](__m128 v) {
      return _mm_cmpeq_epi32(_mm_and_si128(_mm_castps_si128(v), exp), exp);
    };
    __m128 l0 = _mm_loadu_ps(x), h0 = l0, l1 = _mm_loadu_ps(x + 4), h1 = l1;
    __m128i bad4 = _mm_or_si128(non_finite4(l0), non_finite4(l1));
    for (i = 8; i + 8 <= n; i += 8) {
      const __m128 a = _mm_loadu_ps(x + i), b = _mm_loadu_ps(x + i + 4);
      bad4 = _mm_or_si128(bad4, _mm_or_si128(non_finite4(a), non_finite4(b)));
      l0 = _mm_min_ps(a, l0);
      h0 = _mm_max_ps(a, h0);
      l1 = _mm_min_ps(b, l1);
      h1 = _mm_max_ps(b, h1);
    }
    bad = static_cast<uint32_t>(_mm_movemask_epi8(bad4) != 0);
    alignas(16) float ls[4], hs[4];
    _mm_store_ps(ls, _mm_min_ps(l0, l1));
    _mm_store_ps(hs, _mm_max_ps(h0, h1));
    l = ls[0];
    h = hs[0];
    for (int k = 1; k < 4; ++k) {
      l = ls[k] < l ? ls[k] : l;
      h = hs[k] > h ? hs[k] : h;
    }
  }
#endif
  for (; i < n; ++i) {
    bad |= non_finite(x[i]);
    l = x[i] < l ? x[i] : l;
    h = x[i] > h ? x[i] : h;
  }
  *lo = l;
  *hi = h;
  return bad == 0;
}

}  // namespace

// Blocks of the input on the op threads, their extremes combined in block order. (The -0/+0 order may differ
// from one serial pass, as between lanes above; no encoded byte sees it.)
bool min_max(const float* x, int64_t n, float* lo, float* hi) {
  constexpr int64_t kBlock = int64_t(1) << 16;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  if (blocks <= 1) return min_max_serial(x, n, lo, hi);
  std::vector<float> block_lo(blocks), block_hi(blocks);
  std::vector<uint8_t> block_finite(blocks);
  engine::parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      block_finite[b] =
          min_max_serial(x + b * kBlock, std::min(kBlock, n - b * kBlock), &block_lo[b], &block_hi[b]);
  });
  if (std::find(block_finite.begin(), block_finite.end(), 0) != block_finite.end()) return false;
  min_max_serial(block_lo.data(), blocks, lo, hi);
  float unused;
  min_max_serial(block_hi.data(), blocks, &unused, hi);
  return true;
}

void uniform_codes(const float* x, int64_t m, float lo, float step, int q_bits, uint32_t* codes) {
  int64_t i = 0;
#if defined(__x86_64__)
  if (step > 0.0f && is_finite_float(step) && engine::cpu_has_avx2())
    i = uniform_codes_avx2(x, m, lo, step, q_bits, codes);
#endif
#if defined(__SSE2__)
  if (step > 0.0f && is_finite_float(step)) {
    const __m128 vlo = _mm_set1_ps(lo), vstep = _mm_set1_ps(step);
    const __m128 half = _mm_set1_ps(static_cast<float>(1u << (q_bits - 1)));
    const __m128 top = _mm_set1_ps(static_cast<float>((1u << q_bits) - 1u));
    for (; i + 4 <= m; i += 4) {
      const __m128 d = _mm_div_ps(_mm_sub_ps(_mm_loadu_ps(x + i), vlo), vstep);
      const __m128 r = _mm_add_ps(round_half_even4(_mm_sub_ps(d, half)), half);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), clamp_to_code4(r, top));
    }
  }
#endif
  for (; i < m; ++i) codes[i] = uniform_code(x[i], lo, step, q_bits);
}

void group_codes(const float* x, const uint8_t* group, int64_t m, const float* lo, const float* step,
                 int groups, int q_bits, uint32_t* codes) {
  int64_t i = 0;
  const bool finite = all_steps_finite(step, groups);
#if defined(__x86_64__)
  if (finite && engine::cpu_has_avx2()) i = group_codes_avx2(x, group, m, lo, step, q_bits, codes);
#endif
#if defined(__SSE2__)
  if (finite) {
    const __m128 top = _mm_set1_ps(static_cast<float>((1u << q_bits) - 1u));
    const __m128i shift = _mm_cvtsi32_si128(q_bits);
    for (; i + 4 <= m; i += 4) {
      const int g0 = group[i], g1 = group[i + 1], g2 = group[i + 2], g3 = group[i + 3];
      const __m128 vlo = _mm_setr_ps(lo[g0], lo[g1], lo[g2], lo[g3]);
      const __m128 vstep = _mm_setr_ps(step[g0], step[g1], step[g2], step[g3]);
      const __m128 r = round_half_even4(_mm_div_ps(_mm_sub_ps(_mm_loadu_ps(x + i), vlo), vstep));
      // A group with step 0 (constant or empty) codes every value as 0.
      const __m128i q =
          _mm_and_si128(clamp_to_code4(r, top), _mm_castps_si128(_mm_cmpgt_ps(vstep, _mm_setzero_ps())));
      const __m128i g = _mm_sll_epi32(_mm_setr_epi32(g0, g1, g2, g3), shift);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), _mm_or_si128(g, q));
    }
  }
#endif
  for (; i < m; ++i) {
    const int g = group[i];
    codes[i] = (static_cast<uint32_t>(g) << q_bits) | group_value_code(x[i], lo[g], step[g], q_bits);
  }
}

void write_group_stats(uint8_t* body, const float* lo, const float* step, int groups) {
  std::memset(body, 0, kPreludeBytes);
  for (int g = 0; g < groups; ++g) {
    float pair[2] = {lo[g] + 0.0f, step[g] + 0.0f};  // + 0.0f turns -0 into +0: one canonical byte pattern
    std::memcpy(body + group_stats_offset() + 8ull * g, pair, 8);
  }
}

uint64_t group_body_bytes(int64_t n, int q_bits, int s_bits) {
  return group_payload_offset(1 << s_bits) + packed_bytes(static_cast<uint64_t>(n), q_bits + s_bits);
}

namespace {

// What decoding a group-quantizer body needs besides the codes: the groups' statistics and, with several
// groups on a tensor larger than the code space, every possible code decoded once into a table.
struct GroupDequant {
  int q_bits = 0, s_bits = 0;
  std::vector<float> lo, step, table;
  std::array<float, 16> nibble_values{};  // uniform:4: the value of each code

  GroupDequant(const uint8_t* body, int64_t n, int q, int s)
      : q_bits(q), s_bits(s), lo(1 << s), step(1 << s) {
    for (int g = 0; g < (1 << s); ++g) {
      std::memcpy(&lo[g], body + group_stats_offset() + 8ull * g, 4);
      std::memcpy(&step[g], body + group_stats_offset() + 8ull * g + 4, 4);
    }
    const uint32_t qmask = (1u << q) - 1u;
    if (s > 0 && (int64_t(1) << (q + s)) <= n) {
      table.resize(size_t(1) << (q + s));
      for (uint32_t c = 0; c < table.size(); ++c) table[c] = dequant(c & qmask, lo[c >> q], step[c >> q]);
    }
    if (s == 0 && q == 4)
      for (uint32_t c = 0; c < 16; ++c) nibble_values[c] = dequant(c, lo[0], step[0]);
  }

  // Decodes a prefix of the m codes packed at `in` (code 0 of the chunk at in[0]) without unpacking them
  // first, where a path for this width exists; returns how many (a multiple of 8).
  int64_t decode_packed(const uint8_t* in, int64_t m, float* o) const {
#if defined(__x86_64__)
    if (s_bits != 0) return 0;
    if (q_bits == 4 && engine::cpu_has_avx512()) return decode_nibbles_avx512(in, m, nibble_values.data(), o);
    if (q_bits == 4 && engine::cpu_has_avx2()) return decode_nibbles_avx2(in, m, nibble_values.data(), o);
    if (q_bits == 12 && engine::cpu_has_avx2()) return decode_12bit_avx2(in, m, lo[0], step[0], o);
#endif
    return 0;
  }

  // o[i] = the value of codes[i], i < m.
  void operator()(const uint32_t* codes, int64_t m, float* o) const {
    int64_t i = 0;
    if (!table.empty()) {
      for (; i < m; ++i) o[i] = table[codes[i]];
    } else if (s_bits == 0) {
#if defined(__SSE2__)
      const __m128 vlo = _mm_set1_ps(lo[0]), vstep = _mm_set1_ps(step[0]);
      for (; i + 4 <= m; i += 4) {  // codes < 2^16: the int32 conversion is exact
        const __m128 q = _mm_cvtepi32_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i)));
        _mm_storeu_ps(o + i, _mm_add_ps(_mm_mul_ps(q, vstep), vlo));
      }
#endif
    }
    const uint32_t qmask = (1u << q_bits) - 1u;
    for (; i < m; ++i) {
      const uint32_t g = codes[i] >> q_bits;  // always < groups: the code has exactly Q + S bits
      o[i] = dequant(codes[i] & qmask, lo[g], step[g]);
    }
  }
};

}  // namespace

void group_decode_cpu(const uint8_t* body, uint64_t body_bytes, int64_t n, int q_bits, int s_bits,
                      float* out) {
  const GroupDequant dequant_codes(body, n, q_bits, s_bits);
  const uint64_t off = group_payload_offset(1 << s_bits);
  const uint8_t* payload = body + off;
  const uint64_t nbytes = body_bytes - off;
  // Chunks are independent (each decodes its own codes into its own outputs): they run on the op threads.
  constexpr int64_t kChunk = 1024;
  engine::parallel_for((n + kChunk - 1) / kChunk, 16, [&](int64_t c0, int64_t c1) {
    uint32_t codes[kChunk];
    for (int64_t first = c0 * kChunk; first < std::min(n, c1 * kChunk); first += kChunk) {
      const int64_t m = std::min(kChunk, n - first);
      const int64_t done =
          dequant_codes.decode_packed(payload + first / 8 * (q_bits + s_bits), m, out + first);
      unpack_codes(payload, nbytes, first + done, m - done, q_bits + s_bits, codes);
      dequant_codes(codes, m - done, out + first + done);
    }
  });
}

}  // namespace dgpipe::compress::detail
