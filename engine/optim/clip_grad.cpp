// Gradient clipping. The norm is reduced on the gradients' device into one f64 accumulator and read back once
// (a read per gradient would stall the host on the device once per parameter). Per tensor, the reduction is
// the same as a host loop over the tensors would do (an f32 or f64 sum, then accumulated in f64 in parameter
// order), so the result does not depend on the device or on how parameters are split into tensors (beyond
// rounding).
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
  // On the first gradient's device (gradients elsewhere send their f64 0-d there): the 2-norm's squares
  // summed tensor by tensor in parameter order, and the max norm's per-tensor maxima (their max is exact in
  // any order).
  Tensor sum_sq;
  std::vector<Tensor> max_abs;
  for (size_t i = 0; i < params.size(); ++i) {
    DGP_CHECK(params[i].defined(), op << ": parameter " << i << " is an undefined tensor");
    Tensor g = params[i].grad();
    if (!g.defined() || g.numel() == 0) continue;
    DGP_CHECK(is_floating(g.dtype()),
              op << ": gradient of parameter " << i << " is " << dtype_name(g.dtype()));
    // Reduce in f32 at least (half gradients would overflow when squared), f64 stays f64.
    Tensor gf = g.dtype() == DType::f64 ? g : cast(g, DType::f32);
    Tensor r = cast(is_inf_norm(norm_type) ? max(abs(gf)) : sum(mul(gf, gf)), DType::f64);
    if (sum_sq.defined() || !max_abs.empty())
      r = r.to(sum_sq.defined() ? sum_sq.device() : max_abs.front().device());
    if (is_inf_norm(norm_type))
      max_abs.push_back(r);  // NaN wins in max(), as it does here
    else
      sum_sq = sum_sq.defined() ? add(sum_sq, r) : r;
  }
  if (is_inf_norm(norm_type)) return max_abs.empty() ? 0.0 : max(stack(max_abs, 0)).item();
  return sum_sq.defined() ? std::sqrt(sum_sq.item()) : 0.0;
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
  scale_grads_to_norm(params, max_norm, norm);
  return norm;
}

void scale_grads_to_norm(const std::vector<Tensor>& params, double max_norm, double norm) {
  double coef = max_norm / (norm + 1e-6);
  // PyTorch multiplies by min(coef, 1) unconditionally; skipping the multiply by exactly 1 is the same
  // result. A NaN coefficient (non-finite norm) propagates into the gradients as in PyTorch.
  if (coef >= 1.0) return;
  NoGradGuard no_grad;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined() || g.numel() == 0) continue;
    mul_(g, coef);
  }
}

}  // namespace dgpipe::engine
