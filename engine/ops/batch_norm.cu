// CUDA twin of batch normalisation (engine/ops/batch_norm.cpp) as plain kernels over contiguous [N, C, HW]:
// one block per channel reduces the statistics (two passes: mean, then squared deviations, in float or
// double), then an elementwise pass normalises. Backward: one block per channel reduces sum(dy) and sum(dy *
// xhat), then an elementwise pass writes dx. Running statistics may be stored in any floating dtype.
#include "engine/cuda/kernel_utils.cuh"
#include "engine/ops/batch_norm_kernels.h"

namespace dgpipe::engine::cuda_kernels {

using namespace cuda;  // the helpers of engine/cuda/kernel_utils.cuh and cuda_context.cuh

namespace {

constexpr int kThreads = 512;

__device__ double load_any(const void* p, int64_t i, DType t) {
  switch (t) {
    case DType::f32:
      return static_cast<const float*>(p)[i];
    case DType::f64:
      return static_cast<const double*>(p)[i];
    case DType::f16:
      return __half2float(static_cast<const __half*>(p)[i]);
    case DType::bf16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default:
      return 0;
  }
}
__device__ void store_any(void* p, int64_t i, DType t, double v) {
  switch (t) {
    case DType::f32:
      static_cast<float*>(p)[i] = static_cast<float>(v);
      break;
    case DType::f64:
      static_cast<double*>(p)[i] = v;
      break;
    case DType::f16:
      static_cast<__half*>(p)[i] = __float2half_rn(static_cast<float>(v));
      break;
    case DType::bf16:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(v));
      break;
    default:
      break;
  }
}

struct Running {
  void* mean = nullptr;
  void* var = nullptr;
  DType mean_dtype = DType::f32, var_dtype = DType::f32;
};

template <class T>
__global__ void bn_stats_kernel(T* __restrict__ save_mean, T* __restrict__ save_invstd,
                                const T* __restrict__ x, int64_t N, int64_t C, int64_t HW, double eps,
                                Running running, double momentum) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  int64_t c = blockIdx.x;
  int64_t count = N * HW;
  A s = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    int64_t n = i / HW, k = i % HW;
    s += to_acc(x[(n * C + c) * HW + k]);
  }
  A mean = block_sum(s, shared) / static_cast<A>(count);
  A sq = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    int64_t n = i / HW, k = i % HW;
    A d = to_acc(x[(n * C + c) * HW + k]) - mean;
    sq += d * d;
  }
  A m2 = block_sum(sq, shared);
  if (threadIdx.x == 0) {
    A var = m2 / static_cast<A>(count);
    save_mean[c] = from_acc<T>(mean);
    save_invstd[c] = from_acc<T>(A(1) / sqrt(var + static_cast<A>(eps)));
    if (running.mean) {
      double rm = load_any(running.mean, c, running.mean_dtype);
      store_any(running.mean, c, running.mean_dtype,
                (1.0 - momentum) * rm + momentum * static_cast<double>(mean));
    }
    if (running.var) {
      double unbiased =
          count > 1 ? static_cast<double>(m2) / static_cast<double>(count - 1) : static_cast<double>(var);
      double rv = load_any(running.var, c, running.var_dtype);
      store_any(running.var, c, running.var_dtype, (1.0 - momentum) * rv + momentum * unbiased);
    }
  }
}

// Eval statistics: mean = running_mean, invstd = 1/sqrt(running_var + eps), in the compute type.
template <class T>
__global__ void bn_running_to_stats(acc_t<T>* __restrict__ mean, acc_t<T>* __restrict__ invstd,
                                    Running running, int64_t C, double eps) {
  using A = acc_t<T>;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C;
       c += int64_t(gridDim.x) * blockDim.x) {
    mean[c] = static_cast<A>(load_any(running.mean, c, running.mean_dtype));
    invstd[c] =
        A(1) / sqrt(static_cast<A>(load_any(running.var, c, running.var_dtype)) + static_cast<A>(eps));
  }
}

template <class T, class S>
__global__ void bn_normalize_kernel(T* __restrict__ out, const T* __restrict__ x, const S* __restrict__ mean,
                                    const S* __restrict__ invstd, const T* __restrict__ w,
                                    const T* __restrict__ b, int64_t total, int64_t C, int64_t HW) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t c = (i / HW) % C;
    A v = (to_acc(x[i]) - static_cast<A>(to_acc(mean[c]))) * static_cast<A>(to_acc(invstd[c]));
    if (w) v *= to_acc(w[c]);
    if (b) v += to_acc(b[c]);
    out[i] = from_acc<T>(v);
  }
}

// Per channel: sum(dy) and sum(dy * xhat) in the accumulation type; writes grad_weight/grad_bias when wanted.
template <class T>
__global__ void bn_backward_reduce(acc_t<T>* __restrict__ sum_dy, acc_t<T>* __restrict__ sum_dy_xhat,
                                   T* __restrict__ grad_w, T* __restrict__ grad_b, const T* __restrict__ dy,
                                   const T* __restrict__ x, const T* __restrict__ mean,
                                   const T* __restrict__ invstd, int64_t N, int64_t C, int64_t HW) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  int64_t c = blockIdx.x;
  A mu = to_acc(mean[c]), rs = to_acc(invstd[c]);
  A s1 = 0, s2 = 0;
  for (int64_t i = threadIdx.x; i < N * HW; i += blockDim.x) {
    int64_t j = ((i / HW) * C + c) * HW + i % HW;
    A g = to_acc(dy[j]);
    s1 += g;
    s2 += g * (to_acc(x[j]) - mu) * rs;
  }
  s1 = block_sum(s1, shared);
  s2 = block_sum(s2, shared);
  if (threadIdx.x == 0) {
    sum_dy[c] = s1;
    sum_dy_xhat[c] = s2;
    if (grad_w) grad_w[c] = from_acc<T>(s2);
    if (grad_b) grad_b[c] = from_acc<T>(s1);
  }
}

template <class T>
__global__ void bn_backward_dx(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ x,
                               const T* __restrict__ mean, const T* __restrict__ invstd,
                               const T* __restrict__ w, const acc_t<T>* __restrict__ sum_dy,
                               const acc_t<T>* __restrict__ sum_dy_xhat, int64_t total, int64_t C, int64_t HW,
                               int64_t count, bool training) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t c = (i / HW) % C;
    A rs = to_acc(invstd[c]);
    A scale = rs * (w ? to_acc(w[c]) : A(1));
    A g = to_acc(dy[i]);
    if (training) {
      A xhat = (to_acc(x[i]) - to_acc(mean[c])) * rs;
      A inv_count = A(1) / static_cast<A>(count);
      g = g - sum_dy[c] * inv_count - xhat * sum_dy_xhat[c] * inv_count;
    }
    dx[i] = from_acc<T>(scale * g);
  }
}

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.raw_data()) : nullptr;
}

Running running_of(const Tensor& mean, const Tensor& var) {
  Running r;
  if (mean.defined()) {
    DGP_CHECK(mean.is_contiguous() && is_floating(mean.dtype()),
              "batch_norm2d: running_mean must be contiguous floating");
    r.mean = mean.raw_data();
    r.mean_dtype = mean.dtype();
  }
  if (var.defined()) {
    DGP_CHECK(var.is_contiguous() && is_floating(var.dtype()),
              "batch_norm2d: running_var must be contiguous floating");
    r.var = var.raw_data();
    r.var_dtype = var.dtype();
  }
  return r;
}

void geometry(const Tensor& x, int64_t& N, int64_t& C, int64_t& HW) {
  DGP_CHECK(x.dim() >= 2 && x.is_contiguous(),
            "batch_norm2d: cuda kernel expects a contiguous [N,C,...] input");
  N = x.size(0);
  C = x.size(1);
  HW = C > 0 && N > 0 ? x.numel() / (N * C) : 0;
}

}  // namespace

void batch_norm_forward_training(const Tensor& out, const Tensor& save_mean, const Tensor& save_invstd,
                                 const Tensor& x, const Tensor& weight, const Tensor& bias,
                                 const Tensor& running_mean, const Tensor& running_var, double momentum,
                                 double eps) {
  int64_t N, C, HW;
  geometry(x, N, C, HW);
  if (C == 0) return;
  TensorDeviceGuard g(out);
  cudaStream_t s = stream_of(out);
  Running running = running_of(running_mean, running_var);
  DGP_CUDA_DISPATCH_FLOATING(x.dtype(), "batch_norm2d", [&] {
    scalar_t* mp = static_cast<scalar_t*>(save_mean.raw_data());
    scalar_t* ip = static_cast<scalar_t*>(save_invstd.raw_data());
    const scalar_t* xp = static_cast<const scalar_t*>(x.raw_data());
    bn_stats_kernel<scalar_t>
        <<<static_cast<unsigned>(C), kThreads, 0, s>>>(mp, ip, xp, N, C, HW, eps, running, momentum);
    int64_t total = x.numel();
    if (total > 0)
      bn_normalize_kernel<scalar_t, scalar_t><<<grid_for(total, 256, out.device().index), 256, 0, s>>>(
          static_cast<scalar_t*>(out.raw_data()), xp, mp, ip, ptr_or_null<scalar_t>(weight),
          ptr_or_null<scalar_t>(bias), total, C, HW);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void batch_norm_forward_inference(const Tensor& out, const Tensor& x, const Tensor& weight,
                                  const Tensor& bias, const Tensor& running_mean, const Tensor& running_var,
                                  double eps) {
  int64_t N, C, HW;
  geometry(x, N, C, HW);
  DGP_CHECK(running_mean.defined() && running_var.defined(),
            "batch_norm2d: eval mode needs running_mean and running_var");
  if (C == 0 || x.numel() == 0) return;
  TensorDeviceGuard g(out);
  cudaStream_t s = stream_of(out);
  int dev = out.device().index;
  Running running = running_of(running_mean, running_var);
  DGP_CUDA_DISPATCH_FLOATING(x.dtype(), "batch_norm2d", [&] {
    using A = acc_t<scalar_t>;
    Scratch stats = scratch(sizeof(A) * 2 * C, dev);
    A* mean = static_cast<A*>(stats.get());
    A* invstd = mean + C;
    bn_running_to_stats<scalar_t><<<grid_for(C, 256, dev), 256, 0, s>>>(mean, invstd, running, C, eps);
    bn_normalize_kernel<scalar_t, A><<<grid_for(x.numel(), 256, dev), 256, 0, s>>>(
        static_cast<scalar_t*>(out.raw_data()), static_cast<const scalar_t*>(x.raw_data()), mean, invstd,
        ptr_or_null<scalar_t>(weight), ptr_or_null<scalar_t>(bias), x.numel(), C, HW);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void batch_norm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias,
                         const Tensor& grad_out, const Tensor& x, const Tensor& weight,
                         const Tensor& save_mean, const Tensor& save_invstd, bool training) {
  int64_t N, C, HW;
  geometry(x, N, C, HW);
  DGP_CHECK(grad_out.is_contiguous(), "batch_norm2d backward: grad_out must be contiguous");
  if (C == 0) return;
  TensorDeviceGuard g(x);
  cudaStream_t s = stream_of(x);
  int dev = x.device().index;
  DGP_CUDA_DISPATCH_FLOATING(x.dtype(), "batch_norm2d backward", [&] {
    using A = acc_t<scalar_t>;
    Scratch sums = scratch(sizeof(A) * 2 * C, dev);
    A* sum_dy = static_cast<A*>(sums.get());
    A* sum_dy_xhat = sum_dy + C;
    const scalar_t* dyp = static_cast<const scalar_t*>(grad_out.raw_data());
    const scalar_t* xp = static_cast<const scalar_t*>(x.raw_data());
    const scalar_t* mp = static_cast<const scalar_t*>(save_mean.raw_data());
    const scalar_t* ip = static_cast<const scalar_t*>(save_invstd.raw_data());
    bn_backward_reduce<scalar_t><<<static_cast<unsigned>(C), kThreads, 0, s>>>(
        sum_dy, sum_dy_xhat, grad_weight.defined() ? static_cast<scalar_t*>(grad_weight.raw_data()) : nullptr,
        grad_bias.defined() ? static_cast<scalar_t*>(grad_bias.raw_data()) : nullptr, dyp, xp, mp, ip, N, C,
        HW);
    if (grad_x.defined() && x.numel() > 0)
      bn_backward_dx<scalar_t><<<grid_for(x.numel(), 256, dev), 256, 0, s>>>(
          static_cast<scalar_t*>(grad_x.raw_data()), dyp, xp, mp, ip, ptr_or_null<scalar_t>(weight), sum_dy,
          sum_dy_xhat, x.numel(), C, HW, N * HW, training);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

}  // namespace dgpipe::engine::cuda_kernels
