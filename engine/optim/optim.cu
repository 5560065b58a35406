// Fused CUDA twins of the optimizer updates (engine/optim/optim_kernels.h holds the per-element math shared
// with the CPU loops). One pass over param, grad and the state buffers per update: SGD moves 3-4 arrays,
// AdamW 4 reads + 3 writes, instead of the dozen passes the same update takes as separate elementwise ops.
#include "engine/cuda/kernel_utils.cuh"
#include "engine/optim/optim_kernels.h"

namespace dgpipe::engine {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void sgd_kernel(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ buf, int64_t n, T lr,
                           T weight_decay, T momentum, T dampening, bool nesterov, bool first_step) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    T unused = T(0);
    T& b = buf ? buf[i] : unused;
    sgd_update_element<T>(param[i], grad[i], b, lr, weight_decay, momentum, dampening, nesterov, first_step);
  }
}

template <class T>
__global__ void adamw_kernel(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg,
                             T* __restrict__ exp_avg_sq, int64_t n, T decay, T beta1, T beta2, T eps, T step_size,
                             T bc2_sqrt) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    T p = param[i], m = exp_avg[i], v = exp_avg_sq[i];
    adamw_update_element<T>(p, grad[i], m, v, decay, beta1, beta2, eps, step_size, bc2_sqrt);
    param[i] = p;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
  }
}

void check_operand(const Tensor& param, const Tensor& t, const char* what, const char* op) {
  DGP_CHECK(t.device() == param.device(), op << ": " << what << " on " << t.device().str() << ", parameter on "
                                              << param.device().str());
  DGP_CHECK(t.dtype() == param.dtype(), op << ": " << what << " is " << dtype_name(t.dtype()) << ", parameter is "
                                           << dtype_name(param.dtype()));
  DGP_CHECK(t.numel() == param.numel() && t.is_contiguous(),
            op << ": " << what << " " << shape_str(t.shape()) << " must be contiguous with the parameter's "
               << param.numel() << " elements");
}

}  // namespace
}  // namespace cuda

namespace cuda_ops {

using namespace cuda;

void sgd_step(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, const SGDStepArgs& a) {
  DGP_CHECK(param.is_contiguous(), "sgd_step: parameter must be contiguous");
  check_operand(param, grad, "gradient", "sgd_step");
  if (momentum_buffer.defined()) check_operand(param, momentum_buffer, "momentum buffer", "sgd_step");
  DGP_CHECK(a.momentum == 0.0 || momentum_buffer.defined(), "sgd_step: momentum needs a momentum buffer");
  int64_t n = param.numel();
  if (n == 0) return;
  TensorDeviceGuard g(param);
  cudaStream_t s = stream_of(param);
  unsigned grid = grid_for(n, kThreads, param.device().index);
  auto launch = [&](auto zero) {
    using T = decltype(zero);
    sgd_kernel<T><<<grid, kThreads, 0, s>>>(
        static_cast<T*>(param.raw_data()), static_cast<const T*>(grad.raw_data()),
        momentum_buffer.defined() ? static_cast<T*>(momentum_buffer.raw_data()) : nullptr, n, T(a.lr),
        T(a.weight_decay), T(a.momentum), T(a.dampening), a.nesterov, a.first_step);
  };
  if (param.dtype() == DType::f32)
    launch(0.0f);
  else if (param.dtype() == DType::f64)
    launch(0.0);
  else
    DGP_FAIL("sgd_step: unsupported dtype " << dtype_name(param.dtype()) << " (f32/f64 master weights)");
  DGP_CUDA_CHECK_LAUNCH();
}

void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                const AdamWStepArgs& a) {
  DGP_CHECK(param.is_contiguous(), "adamw_step: parameter must be contiguous");
  check_operand(param, grad, "gradient", "adamw_step");
  check_operand(param, exp_avg, "exp_avg", "adamw_step");
  check_operand(param, exp_avg_sq, "exp_avg_sq", "adamw_step");
  int64_t n = param.numel();
  if (n == 0) return;
  TensorDeviceGuard g(param);
  cudaStream_t s = stream_of(param);
  unsigned grid = grid_for(n, kThreads, param.device().index);
  const AdamWScalars sc = adamw_scalars(a);
  auto launch = [&](auto zero) {
    using T = decltype(zero);
    adamw_kernel<T><<<grid, kThreads, 0, s>>>(
        static_cast<T*>(param.raw_data()), static_cast<const T*>(grad.raw_data()), static_cast<T*>(exp_avg.raw_data()),
        static_cast<T*>(exp_avg_sq.raw_data()), n, T(sc.decay_factor), T(a.beta1), T(a.beta2), T(a.eps),
        T(sc.step_size), T(sc.bias_correction2_sqrt));
  };
  if (param.dtype() == DType::f32)
    launch(0.0f);
  else if (param.dtype() == DType::f64)
    launch(0.0);
  else
    DGP_FAIL("adamw_step: unsupported dtype " << dtype_name(param.dtype()) << " (f32/f64 master weights)");
  DGP_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda_ops
}  // namespace dgpipe::engine
