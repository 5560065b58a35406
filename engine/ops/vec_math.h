// Float exp and GELU for the CPU loops of softmax and the GELU ops, several elements at a time: 8 vector
// lanes where the CPU has AVX2 (checked at run time: the build targets plain x86-64), else 4 (SSE2, or the
// compiler's generic vectors elsewhere). Each element goes through the same sequence of float operations
// whichever path, array length or position it lands on (a tail shorter than a vector is padded, never done
// by scalar code), so results are the same bits at any thread count and on any CPU of the build's target.
//
// Accuracy (tests/engine/test_vec_math.cpp checks it against the double-precision library functions):
//  exp: within 1 ulp of the correctly rounded value over the normal range (a million-point sweep; the
//       polynomial's own error is below 6e-9 relative); below about -103.9 it is 0, above 88.72 +inf, as in
//       the library, and NaN stays NaN.
//  erf (inside GELU): the fits' error is below 2e-8 absolute, less than the rounding of 1 + erf in float;
//       GELU and its derivative are within 2.5e-7 * max(1, |x|) of the double-precision formulas.
#pragma once
#include <cstdint>

namespace dgpipe::engine::cpu {

// y[i] = exp(x[i] - shift). x and y may be the same array.
void exp_shifted(const float* x, int64_t n, float shift, float* y);

// y[i] = x[i] * 0.5 * (1 + erf(x[i] / sqrt(2))), the exact (not tanh) GELU.
void gelu_forward(const float* x, int64_t n, float* y);

// out[i] = g[i] * gelu'(x[i]) = g[i] * (cdf(x[i]) + x[i] * pdf(x[i])), cdf and pdf of the standard normal.
void gelu_backward(const float* g, const float* x, int64_t n, float* out);

}  // namespace dgpipe::engine::cpu
