// dropout: keeps element i of x (row-major order) iff philox_uniform(state, i) >= p, scaling kept elements by
// 1/(1-p) (the rule in engine/rng.h, shared with dropout.cu). Only the Philox state is saved: the backward
// pass regenerates the same mask and applies it to the gradient, so no mask tensor is stored.
#include <algorithm>

#include "engine/ops.h"
#include "engine/ops/cpu_loops.h"
#include "engine/ops/dropout_kernels.h"
#include "engine/parallel.h"

namespace dgpipe::engine {

namespace {

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
    // One Philox block gives the draws of four consecutive elements (block = offset + i/4, word = i%4);
    // blocks are independent, so they are split over the threads.
    parallel_for((n + 3) / 4, 1 << 12, [&](int64_t b0, int64_t b1) {
      for (int64_t base = b0 * 4; base < std::min(n, b1 * 4); base += 4) {
        uint32_t words[4];
        philox4x32(state.seed, state.offset + static_cast<uint64_t>(base) / 4, words);
        for (int64_t k = 0; k < 4 && base + k < n; ++k) {
          const bool keep = uniform_from_bits(words[k]) >= keep_threshold;
          o[base + k] = keep ? in[base + k] * s : scalar_t(0);
        }
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
