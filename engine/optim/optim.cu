// Fused single-pass optimizer updates on the GPU (engine/optim/optim_kernels.h): each element of the
// parameter, gradient and state is read once and written once, with exactly the per-element math of the CPU
// loops.
#include "engine/cuda/kernel_utils.cuh"
#include "engine/optim/optim_kernels.h"

namespace dgpipe::engine::cuda_kernels {

using namespace cuda;  // the helpers of engine/cuda/kernel_utils.cuh and cuda_context.cuh

namespace {

template <class T>
__global__ void sgd_kernel(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ buf, int64_t n,
                           T lr, T wd, T momentum, T dampening, bool nesterov, bool first_step) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    T unused = T(0);
    T& b = buf ? buf[i] : unused;
    sgd_update_element<T>(param[i], grad[i], b, lr, wd, momentum, dampening, nesterov, first_step);
  }
}

template <class T>
__global__ void adamw_kernel(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ m,
                             T* __restrict__ v, int64_t n, T decay, T b1, T b2, T eps, T step_size,
                             T bc2_sqrt) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    adamw_update_element<T>(param[i], grad[i], m[i], v[i], decay, b1, b2, eps, step_size, bc2_sqrt);
}

void check_operand(const Tensor& p, const Tensor& t, const char* what, const char* op) {
  DGP_CHECK(t.defined() && t.is_contiguous() && t.device() == p.device() && t.dtype() == p.dtype() &&
                t.numel() == p.numel(),
            op << ": " << what << " must be a contiguous " << dtype_name(p.dtype()) << " tensor of "
               << p.numel() << " elements on " << p.device().str());
}

}  // namespace

void sgd_step(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, const SGDStepArgs& a) {
  DGP_CHECK(param.is_contiguous(), "SGD (cuda): parameter must be contiguous");
  check_operand(param, grad, "gradient", "SGD (cuda)");
  bool use_buf = a.momentum != 0.0;
  if (use_buf) check_operand(param, momentum_buffer, "momentum buffer", "SGD (cuda)");
  int64_t n = param.numel();
  if (n == 0) return;
  TensorDeviceGuard g(param);
  cudaStream_t s = stream_of(param);
  unsigned grid = grid_for(n, 256, param.device().index);
  if (param.dtype() == DType::f32) {
    sgd_kernel<float><<<grid, 256, 0, s>>>(
        static_cast<float*>(param.raw_data()), static_cast<const float*>(grad.raw_data()),
        use_buf ? static_cast<float*>(momentum_buffer.raw_data()) : nullptr, n, float(a.lr),
        float(a.weight_decay), float(a.momentum), float(a.dampening), a.nesterov, a.first_step);
  } else if (param.dtype() == DType::f64) {
    sgd_kernel<double><<<grid, 256, 0, s>>>(
        static_cast<double*>(param.raw_data()), static_cast<const double*>(grad.raw_data()),
        use_buf ? static_cast<double*>(momentum_buffer.raw_data()) : nullptr, n, a.lr, a.weight_decay,
        a.momentum, a.dampening, a.nesterov, a.first_step);
  } else {
    DGP_FAIL(
        "SGD (cuda): parameters must be f32 or f64 (keep fp32 master weights under mixed precision), got "
        << dtype_name(param.dtype()));
  }
  DGP_CUDA_CHECK_LAUNCH();
}

void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                const AdamWStepArgs& a) {
  DGP_CHECK(param.is_contiguous(), "AdamW (cuda): parameter must be contiguous");
  check_operand(param, grad, "gradient", "AdamW (cuda)");
  check_operand(param, exp_avg, "exp_avg", "AdamW (cuda)");
  check_operand(param, exp_avg_sq, "exp_avg_sq", "AdamW (cuda)");
  int64_t n = param.numel();
  if (n == 0) return;
  AdamWScalars sc = adamw_scalars(a);
  TensorDeviceGuard g(param);
  cudaStream_t s = stream_of(param);
  unsigned grid = grid_for(n, 256, param.device().index);
  if (param.dtype() == DType::f32) {
    adamw_kernel<float><<<grid, 256, 0, s>>>(
        static_cast<float*>(param.raw_data()), static_cast<const float*>(grad.raw_data()),
        static_cast<float*>(exp_avg.raw_data()), static_cast<float*>(exp_avg_sq.raw_data()), n,
        float(sc.decay_factor), float(a.beta1), float(a.beta2), float(a.eps), float(sc.step_size),
        float(sc.bias_correction2_sqrt));
  } else if (param.dtype() == DType::f64) {
    adamw_kernel<double><<<grid, 256, 0, s>>>(
        static_cast<double*>(param.raw_data()), static_cast<const double*>(grad.raw_data()),
        static_cast<double*>(exp_avg.raw_data()), static_cast<double*>(exp_avg_sq.raw_data()), n,
        sc.decay_factor, a.beta1, a.beta2, a.eps, sc.step_size, sc.bias_correction2_sqrt);
  } else {
    DGP_FAIL(
        "AdamW (cuda): parameters must be f32 or f64 (keep fp32 master weights under mixed precision), got "
        << dtype_name(param.dtype()));
  }
  DGP_CUDA_CHECK_LAUNCH();
}

}  // namespace dgpipe::engine::cuda_kernels
