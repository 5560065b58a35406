// Gradient clipping. The norm is accumulated in double on the host from per-tensor reductions, so the
// result does not depend on how parameters are split into tensors (beyond rounding).
#include "engine/optim/clip_grad.h"

#include <cmath>
#include <limits>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace dgpipe::engine {

namespace {
bool is_inf_norm(double norm_type) {
  return std::isinf(norm_type) && norm_type > 0;
}

double total_norm(const std::vector<Tensor>& params, double norm_type, const char* op) {
  DGP_CHECK(norm_type == 2.0 || is_inf_norm(norm_type),
            op << ": norm_type " << norm_type << " is not supported (use 2 or infinity)");
  NoGradGuard no_grad;
  double acc = 0.0;
  for (size_t i = 0; i < params.size(); ++i) {
    DGP_CHECK(params[i].defined(), op << ": parameter " << i << " is an undefined tensor");
    Tensor g = params[i].grad();
    if (!g.defined() || g.numel() == 0) continue;
    DGP_CHECK(is_floating(g.dtype()),
              op << ": gradient of parameter " << i << " is " << dtype_name(g.dtype()));
    // Reduce in f32 at least (half gradients would overflow when squared), f64 stays f64.
    Tensor gf = g.dtype() == DType::f64 ? g : cast(g, DType::f32);
    if (is_inf_norm(norm_type)) {
      double m = max(abs(gf)).item();
      if (std::isnan(m)) return m;
      acc = std::max(acc, m);
    } else {
      acc += sum(mul(gf, gf)).item();
    }
  }
  return is_inf_norm(norm_type) ? acc : std::sqrt(acc);
}
}  // namespace

double grad_norm(const std::vector<Tensor>& params, double norm_type) {
  return total_norm(params, norm_type, "grad_norm");
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type,
                      bool error_if_nonfinite) {
  DGP_CHECK(max_norm >= 0.0, "clip_grad_norm: max_norm " << max_norm << " must be >= 0");
  double norm = total_norm(params, norm_type, "clip_grad_norm");
  DGP_CHECK(!error_if_nonfinite || std::isfinite(norm),
            "clip_grad_norm: the total norm of the gradients is " << norm << " (non-finite)");
  double coef = max_norm / (norm + 1e-6);
  // PyTorch multiplies by min(coef, 1) unconditionally; skipping the multiply by exactly 1 is the same
  // result. A NaN coefficient (non-finite norm) propagates into the gradients as in PyTorch.
  if (!(coef >= 1.0)) {
    NoGradGuard no_grad;
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (!g.defined() || g.numel() == 0) continue;
      mul_(g, coef);
    }
  }
  return norm;
}

}  // namespace dgpipe::engine
