// The lane kernels are written once on GCC's generic vector types and instantiated 4 lanes wide (SSE2) and,
// inside functions compiled for AVX2, 8 lanes wide. No scalar twin exists: tails go through a padded
// 4-lane vector, so every element sees the same operations (see vec_math.h).
//
// exp(x): x = n ln2 + r with n = round(x / ln2) (by the 1.5 * 2^23 addition, exact in float) and
// |r| <= ln2 / 2, r computed with ln2 split in a short high part (n * hi is exact) and a low part; e^r by
// its Taylor polynomial to degree 7 (truncation below 6e-9 relative); 2^n applied as two powers of two so
// that n = 128 (overflow to inf) and n = -150 (underflow to 0) come out right without a special case.
//
// erf(z), z >= 0: below 1.5, z * P(z^2) with P of degree 8 (a Chebyshev fit of erf(sqrt(w)) / sqrt(w) on
// w in [0, 2.25], error 8e-10); from 1.5, 1 - exp(-z^2) * Q(1/z) with Q of degree 5 (a Chebyshev fit of
// exp(z^2) erfc(z) in t = 1/z on [1/4, 2/3], error 1.5e-7 relative, 1.6e-8 in erf); z is capped at 4, where
// erf rounds to 1 in float. Both pieces are computed and the lanes pick one.
#include "engine/ops/vec_math.h"
#include "engine/cpu_features.h"

#include <cstring>

namespace dgpipe::engine::cpu {

namespace {

typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x4 __attribute__((vector_size(16)));
typedef uint32_t u32x4 __attribute__((vector_size(16)));

#define DGP_LANES inline __attribute__((always_inline))

// The 8-lane instances are always inlined into the AVX2 functions below, so no 32-byte vector ever crosses
// a call of the baseline ABI that this warning is about.
#pragma GCC diagnostic ignored "-Wpsabi"

// The bits of one vector as another of the same size (the exponent arithmetic of exp_lanes).
template <class To, class From>
DGP_LANES To bits_as(const From& v) {
  static_assert(sizeof(To) == sizeof(From), "same size");
  To t;
  std::memcpy(&t, &v, sizeof(To));
  return t;
}

template <class F>
DGP_LANES F splat(float v) {
  return F{} + v;
}

// exp of every lane, as described at the top of the file. I and U are the signed and unsigned integer
// vectors of F's width.
template <class F, class I, class U>
DGP_LANES F exp_lanes(const F& x_in) {
  F x = x_in;
  x = x < -104.0f ? splat<F>(-104.0f) : x;  // comparisons are false for NaN, so NaN passes through
  x = x > 89.0f ? splat<F>(89.0f) : x;
  const F magic = splat<F>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const F t = x * 1.44269504f + magic;
  const F n = t - magic;
  const F r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  F p = r * (1.0f / 5040.0f) + (1.0f / 720.0f);
  p = p * r + (1.0f / 120.0f);
  p = p * r + (1.0f / 24.0f);
  p = p * r + (1.0f / 6.0f);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const I k = bits_as<I>(t) - bits_as<I>(magic);  // n as an integer
  const I k1 = k >> 1;
  const U e1 = (bits_as<U>(k1) + 127u) << 23;
  const U e2 = (bits_as<U>(k) - bits_as<U>(k1) + 127u) << 23;
  return p * bits_as<F>(e1) * bits_as<F>(e2);
}

// erf of every lane, as described at the top of the file; e must be exp(-z * z).
template <class F, class I>
DGP_LANES F erf_lanes(const F& z, const F& e) {
  const I negative = z < 0.0f;
  F a = negative ? -z : z;
  a = a > 4.0f ? splat<F>(4.0f) : a;
  const F w = a * a;
  F p = w * 6.20587286e-07f + -1.13288734e-05f;
  p = p * w + 0.000113096765f;
  p = p * w + -0.000845462724f;
  p = p * w + 0.00521691935f;
  p = p * w + -0.0268631484f;
  p = p * w + 0.112837262f;
  p = p * w + -0.376126349f;
  p = p * w + 1.12837923f;
  const F small = a * p;
  const F t = 1.0f / (a < 1.0f ? splat<F>(1.0f) : a);  // a < 1 lanes take `small`; keep t finite there
  F q = t * -0.102467641f + 0.323156655f;
  q = q * t + -0.366745114f;
  q = q * t + 0.00791386515f;
  q = q * t + 0.564769506f;
  q = q * t + -0.000119540411f;
  const F large = 1.0f - e * q;
  const F r = a < 1.5f ? small : large;
  return negative ? -r : r;
}

// e^(-x^2 / 2), the shared factor of the GELU's erf tail and the normal pdf, as exp(-z * z) with z =
// x/sqrt 2.
template <class F>
DGP_LANES F scaled(const F& x) {
  return x * 0.707106781f;
}

template <class F, class I, class U>
DGP_LANES F gelu_lanes(const F& x) {
  const F z = scaled(x);
  const F e = exp_lanes<F, I, U>(-(z * z));
  return x * 0.5f * (1.0f + erf_lanes<F, I>(z, e));
}

template <class F, class I, class U>
DGP_LANES F gelu_backward_lanes(const F& g, const F& x) {
  const F z = scaled(x);
  const F e = exp_lanes<F, I, U>(-(z * z));
  const F cdf = 0.5f * (1.0f + erf_lanes<F, I>(z, e));
  const F pdf = e * 0.398942280f;
  return g * (cdf + x * pdf);
}

template <class F>
DGP_LANES F load(const float* p) {
  F v;
  std::memcpy(&v, p, sizeof(F));
  return v;
}

template <class F>
DGP_LANES void store(float* p, const F& v) {
  std::memcpy(p, &v, sizeof(F));
}

// Runs `lanes(i)` (which handles elements [i, i + W) of every array) over [begin, end) in steps of W = F's
// width; returns where it stopped.
template <class F, class Lanes>
DGP_LANES int64_t run(int64_t begin, int64_t end, Lanes&& lanes) {
  constexpr int64_t width = sizeof(F) / sizeof(float);
  int64_t i = begin;
  for (; i + width <= end; i += width) lanes(i);
  return i;
}

#if defined(__x86_64__)
typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));

// Plain loops, no lambdas: a lambda's body is a function of its own, compiled for the baseline target.
__attribute__((target("avx2"))) int64_t exp_shifted8(const float* x, int64_t n, float shift, float* y) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) store(y + i, exp_lanes<f32x8, i32x8, u32x8>(load<f32x8>(x + i) - shift));
  return i;
}

__attribute__((target("avx2"))) int64_t gelu_forward8(const float* x, int64_t n, float* y) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) store(y + i, gelu_lanes<f32x8, i32x8, u32x8>(load<f32x8>(x + i)));
  return i;
}

__attribute__((target("avx2"))) int64_t gelu_backward8(const float* g, const float* x, int64_t n,
                                                       float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    store(out + i, gelu_backward_lanes<f32x8, i32x8, u32x8>(load<f32x8>(g + i), load<f32x8>(x + i)));
  return i;
}
#endif

// Elements [i, n), fewer than 4, through one zero-padded 4-lane vector.
template <class Lanes>
void padded_tail(int64_t i, int64_t n, const float* const* in, int inputs, float* out, Lanes&& lanes) {
  if (i >= n) return;
  const size_t bytes = static_cast<size_t>(n - i) * sizeof(float);
  float buf[2][4] = {};
  for (int k = 0; k < inputs; ++k) std::memcpy(buf[k], in[k] + i, bytes);
  float res[4];
  store(res, lanes(load<f32x4>(buf[0]), load<f32x4>(buf[1])));
  std::memcpy(out + i, res, bytes);
}

}  // namespace

void exp_shifted(const float* x, int64_t n, float shift, float* y) {
  int64_t i = 0;
#if defined(__x86_64__)
  if (cpu_has_avx2()) i = exp_shifted8(x, n, shift, y);
#endif
  auto lanes = [shift](f32x4 v, f32x4) { return exp_lanes<f32x4, i32x4, u32x4>(v - shift); };
  i = run<f32x4>(i, n, [&](int64_t j) { store(y + j, lanes(load<f32x4>(x + j), f32x4{})); });
  const float* in[1] = {x};
  padded_tail(i, n, in, 1, y, lanes);
}

void gelu_forward(const float* x, int64_t n, float* y) {
  int64_t i = 0;
#if defined(__x86_64__)
  if (cpu_has_avx2()) i = gelu_forward8(x, n, y);
#endif
  auto lanes = [](f32x4 v, f32x4) { return gelu_lanes<f32x4, i32x4, u32x4>(v); };
  i = run<f32x4>(i, n, [&](int64_t j) { store(y + j, lanes(load<f32x4>(x + j), f32x4{})); });
  const float* in[1] = {x};
  padded_tail(i, n, in, 1, y, lanes);
}

void gelu_backward(const float* g, const float* x, int64_t n, float* out) {
  int64_t i = 0;
#if defined(__x86_64__)
  if (cpu_has_avx2()) i = gelu_backward8(g, x, n, out);
#endif
  auto lanes = [](f32x4 gv, f32x4 xv) { return gelu_backward_lanes<f32x4, i32x4, u32x4>(gv, xv); };
  i = run<f32x4>(i, n, [&](int64_t j) { store(out + j, lanes(load<f32x4>(g + j), load<f32x4>(x + j))); });
  const float* in[2] = {g, x};
  padded_tail(i, n, in, 2, out, lanes);
}

}  // namespace dgpipe::engine::cpu
