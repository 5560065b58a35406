// Test inputs for the codec property tests: the distributions the issue names, deterministic (Philox), and
// matrices of known spectrum for the low-rank codecs.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/rng.h"

namespace dgpipe::testing {

enum class Dist { normal, laplace, post_relu, all_equal, tiny, huge };

inline const char* dist_name(Dist d) {
  switch (d) {
    case Dist::normal:
      return "normal";
    case Dist::laplace:
      return "laplace";
    case Dist::post_relu:
      return "post_relu";
    case Dist::all_equal:
      return "all_equal";
    case Dist::tiny:
      return "tiny";
    case Dist::huge:
      return "huge";
  }
  return "?";
}

inline std::vector<Dist> all_dists() {
  return {Dist::normal, Dist::laplace, Dist::post_relu, Dist::all_equal, Dist::tiny, Dist::huge};
}

// Shape used for a distribution: tiny has 3 elements (fewer than most group counts); others are a small
// boundary.
inline engine::Shape dist_shape(Dist d) {
  if (d == Dist::tiny) return {3};
  return {4, 8, 6, 5};  // 960 elements, 4-D like a CNN boundary
}

inline engine::Tensor make_input(Dist d, uint64_t seed = 11, engine::Shape shape = {}) {
  if (shape.empty()) shape = dist_shape(d);
  const int64_t n = engine::shape_numel(shape);
  engine::PhiloxState st{seed, 0};
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float z = engine::philox_normal(st, static_cast<uint64_t>(i));
    const float u = engine::philox_uniform(engine::PhiloxState{seed + 1, 0}, static_cast<uint64_t>(i));
    switch (d) {
      case Dist::normal:
        v[i] = z;
        break;
      case Dist::laplace: {
        float c = u - 0.5f;
        v[i] = -(c < 0 ? -1.0f : 1.0f) * std::log(std::max(1e-12f, 1.0f - 2.0f * std::fabs(c)));
        break;
      }
      case Dist::post_relu:
        v[i] = z > 0 ? z : 0.0f;
        break;
      case Dist::all_equal:
        v[i] = 0.375f;
        break;
      case Dist::tiny:
        v[i] = z;
        break;
      case Dist::huge:
        v[i] = z * 1e30f;
        break;
    }
  }
  return engine::from_vector(v, shape);
}

// ---- low-rank inputs (power / svd) ----

// b matrices m x n = U diag(sigma) V^T with random orthonormal U, V (QR of Gaussians via Gram-Schmidt).
inline engine::Tensor known_spectrum(int64_t b, int64_t m, int64_t n, const std::vector<double>& sigma,
                                     uint64_t seed) {
  auto orth = [](std::vector<double>& a, int64_t rows, int64_t cols) {
    for (int64_t c = 0; c < cols; ++c) {
      for (int pass = 0; pass < 2; ++pass)
        for (int64_t k = 0; k < c; ++k) {
          double d = 0;
          for (int64_t r = 0; r < rows; ++r) d += a[r * cols + c] * a[r * cols + k];
          for (int64_t r = 0; r < rows; ++r) a[r * cols + c] -= d * a[r * cols + k];
        }
      double nn = 0;
      for (int64_t r = 0; r < rows; ++r) nn += a[r * cols + c] * a[r * cols + c];
      for (int64_t r = 0; r < rows; ++r) a[r * cols + c] /= std::sqrt(nn);
    }
  };
  const int64_t k = static_cast<int64_t>(sigma.size());
  std::vector<double> out(b * m * n, 0.0);
  for (int64_t bi = 0; bi < b; ++bi) {
    std::vector<double> u =
        make_input(Dist::normal, seed + 2 * bi, {m, k}).to(engine::DType::f64).to_vector();
    std::vector<double> v =
        make_input(Dist::normal, seed + 2 * bi + 1, {n, k}).to(engine::DType::f64).to_vector();
    orth(u, m, k);
    orth(v, n, k);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t t = 0; t < k; ++t) s += u[i * k + t] * sigma[t] * v[j * k + t];
        out[bi * m * n + i * n + j] = s;
      }
  }
  return engine::from_vector(out, {b, m, n});
}

// sum_i (a_i - b_i)^2 on host copies.
inline double squared_error(const engine::Tensor& a, const engine::Tensor& b) {
  std::vector<double> x = a.to(engine::Device::cpu()).to_vector(),
                      y = b.to(engine::Device::cpu()).to_vector();
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += (x[i] - y[i]) * (x[i] - y[i]);
  return s;
}

// ||a - b||_F / ||b||_F on host copies.
inline double relative_diff(const engine::Tensor& a, const engine::Tensor& b) {
  std::vector<double> x = a.to(engine::Device::cpu()).to_vector(),
                      y = b.to(engine::Device::cpu()).to_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) num += (x[i] - y[i]) * (x[i] - y[i]), den += y[i] * y[i];
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace dgpipe::testing
