// dropout: keeps element i of x (row-major order) iff philox_uniform(state, i) >= p, scaling kept elements by
// 1/(1-p) (the rule in engine/rng.h, shared with dropout.cu). Only the Philox state is saved: the backward
// pass regenerates the same mask and applies it to the gradient, so no mask tensor is stored. Regenerating
// costs less than a stored mask would save: with the Philox blocks drawn several at a time in vector lanes
// (below) the pass is bound by reading x and writing the output, as a stored mask's pass would be too.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "engine/cpu_features.h"
#include "engine/ops.h"
#include "engine/ops/cpu_loops.h"
#include "engine/ops/dropout_kernels.h"
#include "engine/parallel.h"

namespace dgpipe::engine {

namespace {

// Philox blocks are drawn kTile at a time into a buffer of words in element order (block b's word k is
// element 4*b + k), then applied to the tile's elements.
constexpr int64_t kTileBlocks = 64;

// Words of blocks [first, first + count) by the scalar philox4x32 of engine/rng.h.
void philox_words_scalar(uint64_t seed, uint64_t first, int64_t count, uint32_t* words) {
  for (int64_t b = 0; b < count; ++b) philox4x32(seed, first + static_cast<uint64_t>(b), words + 4 * b);
}

#if defined(__x86_64__)
// The same rounds as philox4x32, one block per 32-bit lane. SSE2 has no 32x32 -> 64 multiply of all four
// lanes: _mm_mul_epu32 multiplies lanes 0 and 2, so the odd lanes go through a second one after a shift, and
// the high and low halves are gathered back into lane order.
inline void mul_hi_lo4(__m128i a, __m128i m, __m128i& hi, __m128i& lo) {
  const __m128i even = _mm_mul_epu32(a, m);                     // lo0 hi0 lo2 hi2
  const __m128i odd = _mm_mul_epu32(_mm_srli_epi64(a, 32), m);  // lo1 hi1 lo3 hi3
  const __m128i low_pairs = _mm_unpacklo_epi32(even, odd);      // lo0 lo1 hi0 hi1
  const __m128i high_pairs = _mm_unpackhi_epi32(even, odd);     // lo2 lo3 hi2 hi3
  lo = _mm_unpacklo_epi64(low_pairs, high_pairs);
  hi = _mm_unpackhi_epi64(low_pairs, high_pairs);
}

// Four consecutive blocks starting at `first`, whose counters share their high 32 bits.
void philox_words4(uint64_t seed, uint64_t first, uint32_t* words) {
  __m128i c0 = _mm_add_epi32(_mm_set1_epi32(static_cast<int>(static_cast<uint32_t>(first))),
                             _mm_setr_epi32(0, 1, 2, 3));
  __m128i c1 = _mm_set1_epi32(static_cast<int>(static_cast<uint32_t>(first >> 32)));
  __m128i c2 = _mm_setzero_si128(), c3 = _mm_setzero_si128();
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const __m128i m0 = _mm_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m128i m1 = _mm_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int round = 0; round < 10; ++round) {
    __m128i hi0, lo0, hi1, lo1;
    mul_hi_lo4(c0, m0, hi0, lo0);
    mul_hi_lo4(c2, m1, hi1, lo1);
    c0 = _mm_xor_si128(_mm_xor_si128(hi1, c1), _mm_set1_epi32(static_cast<int>(k0)));
    c1 = lo1;
    c2 = _mm_xor_si128(_mm_xor_si128(hi0, c3), _mm_set1_epi32(static_cast<int>(k1)));
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  // Lanes are blocks; transpose so that each vector holds one block's four words (element order).
  __m128i t0 = _mm_unpacklo_epi32(c0, c1), t1 = _mm_unpacklo_epi32(c2, c3);  // b0: w0 w1, b1: w0 w1 / w2 w3
  __m128i t2 = _mm_unpackhi_epi32(c0, c1), t3 = _mm_unpackhi_epi32(c2, c3);  // b2, b3
  auto* out = reinterpret_cast<__m128i*>(words);
  _mm_storeu_si128(out + 0, _mm_unpacklo_epi64(t0, t1));
  _mm_storeu_si128(out + 1, _mm_unpackhi_epi64(t0, t1));
  _mm_storeu_si128(out + 2, _mm_unpacklo_epi64(t2, t3));
  _mm_storeu_si128(out + 3, _mm_unpackhi_epi64(t2, t3));
}

// The same eight lanes wide, for CPUs with AVX2 (chosen at run time: the build targets plain x86-64). The
// 256-bit unpacks work within each 128-bit half, so the halves are blocks 0-3 and 4-7 as in the SSE2 path.
__attribute__((target("avx2"))) inline void mul_hi_lo8(__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  const __m256i low_pairs = _mm256_unpacklo_epi32(even, odd);
  const __m256i high_pairs = _mm256_unpackhi_epi32(even, odd);
  lo = _mm256_unpacklo_epi64(low_pairs, high_pairs);
  hi = _mm256_unpackhi_epi64(low_pairs, high_pairs);
}

// Eight consecutive blocks starting at `first`, whose counters share their high 32 bits.
__attribute__((target("avx2"))) void philox_words8(uint64_t seed, uint64_t first, uint32_t* words) {
  __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(first))),
                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i c1 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(first >> 32)));
  __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int round = 0; round < 10; ++round) {
    __m256i hi0, lo0, hi1, lo1;
    mul_hi_lo8(c0, m0, hi0, lo0);
    mul_hi_lo8(c2, m1, hi1, lo1);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
    c1 = lo1;
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  const __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpacklo_epi32(c2, c3);
  const __m256i t2 = _mm256_unpackhi_epi32(c0, c1), t3 = _mm256_unpackhi_epi32(c2, c3);
  const __m256i b04 = _mm256_unpacklo_epi64(t0, t1), b15 = _mm256_unpackhi_epi64(t0, t1);
  const __m256i b26 = _mm256_unpacklo_epi64(t2, t3), b37 = _mm256_unpackhi_epi64(t2, t3);
  auto* out = reinterpret_cast<__m256i*>(words);
  _mm256_storeu_si256(out + 0, _mm256_permute2x128_si256(b04, b15, 0x20));  // blocks 0, 1
  _mm256_storeu_si256(out + 1, _mm256_permute2x128_si256(b26, b37, 0x20));  // blocks 2, 3
  _mm256_storeu_si256(out + 2, _mm256_permute2x128_si256(b04, b15, 0x31));  // blocks 4, 5
  _mm256_storeu_si256(out + 3, _mm256_permute2x128_si256(b26, b37, 0x31));  // blocks 6, 7
}

#endif

// Words of blocks [first, first + count), the same as philox_words_scalar: in vector lanes, eight then four
// at a time (so a tile's remainder exercises the SSE2 path on an AVX2 machine too), where a group of lanes
// shares the counter's high word (all but one group in 2^29); the rest block by block.
void philox_words(uint64_t seed, uint64_t first, int64_t count, uint32_t* words) {
  int64_t b = 0;
#if defined(__x86_64__)
  auto shares_high_word = [&](int64_t lanes) {
    const uint64_t block = first + static_cast<uint64_t>(b);
    return (block >> 32) == ((block + static_cast<uint64_t>(lanes - 1)) >> 32);
  };
  if (cpu_has_avx2())
    for (; b + 8 <= count && shares_high_word(8); b += 8)
      philox_words8(seed, first + static_cast<uint64_t>(b), words + 4 * b);
  for (; b + 4 <= count && shares_high_word(4); b += 4)
    philox_words4(seed, first + static_cast<uint64_t>(b), words + 4 * b);
#endif
  philox_words_scalar(seed, first + static_cast<uint64_t>(b), count - b, words + 4 * b);
}

// o[k] = x[k] * s where word k keeps its element (word >> 8 >= keep_from), else +0. The product's bits are
// ANDed with an all-ones or all-zeros mask (a dropped NaN or inf still gives 0): a select of floats would
// not vectorise (GCC keeps the branch, since the product may trap), an AND of integers does.
template <class T>
void apply_mask(const uint32_t* __restrict words, int64_t count, int32_t keep_from, const T* __restrict x,
                T s, T* __restrict o) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  static_assert(sizeof(Bits) == sizeof(T), "f32 or f64");
  for (int64_t k = 0; k < count; ++k) {
    const Bits keep = Bits(0) - static_cast<Bits>(static_cast<int32_t>(words[k] >> 8) >= keep_from);
    const T scaled = x[k] * s;
    Bits bits;
    std::memcpy(&bits, &scaled, sizeof(T));
    bits &= keep;
    std::memcpy(o + k, &bits, sizeof(T));
  }
}

// out = mask(state) * x * scale on a contiguous x.
Tensor dropout_apply_raw(const Tensor& x, PhiloxState state, float keep_threshold, double scale) {
  if (x.device().is_cpu() && is_half(x.dtype()))
    return dropout_apply_raw(x.to(DType::f32), state, keep_threshold, scale).to(x.dtype());
  Tensor out = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  if (x.device().is_cuda()) {
    cuda_kernels::dropout_apply(out, x, state, keep_threshold, scale);
    return out;
  }
  DGP_DISPATCH_FLOATING(x.dtype(), "dropout", [&] {
    const scalar_t* in = x.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    const scalar_t s = static_cast<scalar_t>(scale);
    const int64_t n = x.numel();
    // uniform_from_bits(w) >= keep_threshold, in integers: the uniform is (w >> 8) / 2^24 exactly, so it
    // reaches the threshold iff w >> 8 >= ceil(threshold * 2^24) (at most 2^24). A compare of 32-bit lanes
    // vectorises; the float conversion of an unsigned word does not in SSE2.
    const auto keep_from = static_cast<int32_t>(std::ceil(static_cast<double>(keep_threshold) * 16777216.0));
    // One Philox block gives the draws of four consecutive elements (block = offset + i/4, word = i%4);
    // blocks are independent, so they are split over the threads.
    parallel_for((n + 3) / 4, 1 << 12, [&](int64_t b0, int64_t b1) {
      uint32_t words[4 * kTileBlocks];
      for (int64_t t = b0; t < b1; t += kTileBlocks) {
        const int64_t blocks = std::min(kTileBlocks, b1 - t);
        philox_words(state.seed, state.offset + static_cast<uint64_t>(t), blocks, words);
        const int64_t first = 4 * t, count = std::min(4 * blocks, n - first);
        apply_mask(words, count, keep_from, in + first, s, o + first);
      }
    });
  });
  return out;
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  DGP_CHECK(x.defined(), "dropout: undefined input");
  DGP_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability p must be in [0,1], got " << p);
  DGP_CHECK(is_floating(x.dtype()), "dropout: expected a floating input, got " << dtype_name(x.dtype()));
  if (!training || p == 0.0) return x;  // identity: same tensor, same graph
  if (p == 1.0) return mul(x, 0.0);  // everything dropped; keeps the graph so the gradient is a defined zero

  Generator& g = gen ? *gen : default_generator();
  const int64_t n = x.numel();
  // Reserve whole blocks so the next draw from this generator never reuses a counter of this mask.
  PhiloxState state = g.reserve(static_cast<uint64_t>((n + 3) / 4));
  const float threshold = static_cast<float>(p);
  const double scale = 1.0 / (1.0 - p);
  Tensor out = dropout_apply_raw(x.detach().contiguous(), state, threshold, scale);
  if (needs_grad({x})) {
    record("dropout", {x}, out, [state, threshold, scale](const std::vector<Tensor>& grad) {
      return std::vector<Tensor>{dropout_apply_raw(grad[0].contiguous(), state, threshold, scale)};
    });
  }
  return out;
}

}  // namespace dgpipe::engine
