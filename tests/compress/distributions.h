// Test inputs for the codec property tests: the distributions the issue names, deterministic (Philox).
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

}  // namespace dgpipe::testing
