#include "support/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "engine/cuda.h"

namespace dgpipe::testing {

using namespace dgpipe::engine;

Tensor random_leaf(const Shape& shape, double lo, double hi, uint64_t seed) {
  Generator gen(seed);
  Tensor u = rand(shape, TensorOptions(DType::f64), &gen);
  Tensor x = add(mul(u, hi - lo), lo).detach();
  x.requires_grad_(true);
  return x;
}

double max_rel_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> va = a.to_vector(), vb = b.to_vector();
  if (va.size() != vb.size()) return INFINITY;
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i)
    m = std::max(m, std::fabs(va[i] - vb[i]) / std::max(1.0, std::fabs(vb[i])));
  return m;
}

std::string no_cuda_reason() {
  return cuda::describe(cuda::device_status());
}

bool have_cuda() {
  return cuda_available();
}

std::string gradcheck(const Fn& f, const Inputs& inputs, GradcheckOptions opts) {
  // Analytic gradients.
  for (const Tensor& x : inputs) const_cast<Tensor&>(x).zero_grad();
  Tensor y = f(inputs);
  Generator gen(opts.seed);
  Tensor w = randn(y.shape(), TensorOptions(y.dtype(), y.device()), &gen);
  auto project = [&](const Tensor& out) {
    NoGradGuard ng;
    return sum(mul(out, w)).item();
  };
  if (!y.requires_grad()) return "output does not require grad";
  backward({y}, {w});
  std::ostringstream err;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.requires_grad()) continue;
    Tensor analytic = x.grad();
    if (!analytic.defined()) analytic = zeros_like(x);
    std::vector<double> a = analytic.to_vector();
    // Perturb the storage in place, element by element (x may be a non-contiguous view of its storage,
    // so we perturb a contiguous working copy and rebuild the inputs from it).
    Tensor work = x.detach().contiguous().clone();
    std::vector<Tensor> in(inputs.begin(), inputs.end());
    for (auto& t : in) t = t.detach();
    for (int64_t i = 0; i < work.numel(); ++i) {
      double* p = work.data<double>() + i;
      double orig = *p;
      *p = orig + opts.eps;
      in[k] = work.view(x.shape());
      double fp;
      {
        NoGradGuard ng;
        fp = project(f(in));
      }
      *p = orig - opts.eps;
      double fm;
      {
        NoGradGuard ng;
        fm = project(f(in));
      }
      *p = orig;
      double numeric = (fp - fm) / (2 * opts.eps);
      if (std::fabs(a[i] - numeric) > opts.atol + opts.rtol * std::fabs(numeric) || !std::isfinite(a[i])) {
        err << "input " << k << " (shape " << shape_str(x.shape()) << ") element " << i << ": analytic "
            << a[i] << " vs numeric " << numeric;
        return err.str();
      }
    }
  }
  return "";
}

}  // namespace dgpipe::testing
