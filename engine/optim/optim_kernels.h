// Per-parameter update rules of the optimizers, written once over raw arrays so that the CPU loop
// (optimizer .cpp files) and the fused CUDA kernels (optim.cu) compute exactly the same math.
// No CUDA headers are needed here: CPU-only code includes this file.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/host_device.h"
#include "engine/tensor.h"

namespace dgpipe::engine {

// Hyper-parameters of one SGD update of one parameter tensor (PyTorch torch.optim.SGD semantics).
struct SGDStepArgs {
  double lr = 0.0;
  double weight_decay = 0.0;
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  bool first_step = false;  // the momentum buffer is not initialised yet: it becomes a copy of the gradient
};

// Hyper-parameters of one AdamW update (PyTorch torch.optim.AdamW semantics). `step` counts this update
// (1 on the first one) and drives the bias corrections.
struct AdamWStepArgs {
  double lr = 0.0;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  int64_t step = 1;
};

// Scalars an AdamW update needs that do not depend on the element: computed once per tensor in double.
struct AdamWScalars {
  double decay_factor;           // 1 - lr * weight_decay (decoupled decay)
  double step_size;              // lr / (1 - beta1^step)
  double bias_correction2_sqrt;  // sqrt(1 - beta2^step)
};
inline AdamWScalars adamw_scalars(const AdamWStepArgs& a) {
  double bc1 = 1.0 - std::pow(a.beta1, static_cast<double>(a.step));
  double bc2 = 1.0 - std::pow(a.beta2, static_cast<double>(a.step));
  return {1.0 - a.lr * a.weight_decay, a.lr / bc1, std::sqrt(bc2)};
}

// One SGD element: g <- grad + wd*p; buf <- first ? g : momentum*buf + (1-dampening)*g;
// g <- nesterov ? g + momentum*buf : buf; p <- p - lr*g. `buf` is ignored when momentum is 0.
template <class T>
DGP_HD void sgd_update_element(T& p, T grad, T& buf, T lr, T weight_decay, T momentum, T dampening,
                               bool nesterov, bool first_step) {
  T g = grad;
  if (weight_decay != T(0)) g += weight_decay * p;
  if (momentum != T(0)) {
    buf = first_step ? g : momentum * buf + (T(1) - dampening) * g;
    g = nesterov ? g + momentum * buf : buf;
  }
  p -= lr * g;
}

// One AdamW element: p <- p*(1-lr*wd); m <- m + (1-b1)(g-m); v <- b2*v + (1-b2)g^2;
// p <- p - step_size * m / (sqrt(v)/sqrt(bc2) + eps). eps sits outside the square root, as in PyTorch.
template <class T>
DGP_HD void adamw_update_element(T& p, T grad, T& exp_avg, T& exp_avg_sq, T decay_factor, T beta1, T beta2,
                                 T eps, T step_size, T bias_correction2_sqrt) {
  p *= decay_factor;
  exp_avg += (T(1) - beta1) * (grad - exp_avg);  // PyTorch's lerp form
  exp_avg_sq = beta2 * exp_avg_sq + (T(1) - beta2) * grad * grad;
  T denom = std::sqrt(exp_avg_sq) / bias_correction2_sqrt + eps;
  p -= step_size * exp_avg / denom;
}

// CPU loops over contiguous arrays of n elements.
template <class T>
void sgd_step_cpu(T* param, const T* grad, T* momentum_buffer, int64_t n, const SGDStepArgs& a) {
  const T lr = T(a.lr), wd = T(a.weight_decay), mom = T(a.momentum), damp = T(a.dampening);
  T unused = T(0);
  for (int64_t i = 0; i < n; ++i) {
    T& buf = momentum_buffer ? momentum_buffer[i] : unused;
    sgd_update_element<T>(param[i], grad[i], buf, lr, wd, mom, damp, a.nesterov, a.first_step);
  }
}

template <class T>
void adamw_step_cpu(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n, const AdamWStepArgs& a) {
  const AdamWScalars s = adamw_scalars(a);
  const T decay = T(s.decay_factor), b1 = T(a.beta1), b2 = T(a.beta2), eps = T(a.eps),
          step_size = T(s.step_size), bc2_sqrt = T(s.bias_correction2_sqrt);
  for (int64_t i = 0; i < n; ++i)
    adamw_update_element<T>(param[i], grad[i], exp_avg[i], exp_avg_sq[i], decay, b1, b2, eps, step_size,
                            bc2_sqrt);
}

// CUDA launchers (engine/optim/optim.cu): fused single-pass updates of contiguous f32/f64 tensors on one
// device, on the current stream. momentum_buffer may be undefined when momentum is 0.
namespace cuda_kernels {
void sgd_step(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer,
              const SGDStepArgs& args);
void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                const AdamWStepArgs& args);
}  // namespace cuda_kernels

}  // namespace dgpipe::engine
