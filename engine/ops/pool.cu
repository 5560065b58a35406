// CUDA twins of the 2-D pooling ops (engine/ops/pool.cpp), as plain kernels: one thread per output element
// going forward; going backward, average pools gather (one thread per input element sums the windows that
// cover it, no atomics) and max pooling scatters to the saved argmax with atomics (windows may overlap).
#include "engine/cuda/kernel_utils.cuh"
#include "engine/ops/pool_kernels.h"

namespace dgpipe::engine::cuda_kernels {

using namespace cuda;  // the helpers of engine/cuda/kernel_utils.cuh and cuda_context.cuh

namespace {

struct Geo {
  int64_t planes, H, W, Ho, Wo, k, s, p;
};

Geo geometry(const Tensor& in, const Tensor& out, int64_t k, int64_t s, int64_t p) {
  return Geo{in.size(0) * in.size(1), in.size(2), in.size(3), out.size(2), out.size(3), k, s, p};
}

__device__ __forceinline__ int64_t adaptive_start(int64_t o, int64_t out, int64_t in) {
  return (o * in) / out;
}
__device__ __forceinline__ int64_t adaptive_end(int64_t o, int64_t out, int64_t in) {
  return ((o + 1) * in + out - 1) / out;
}

template <class T>
__global__ void max_pool_forward_kernel(T* __restrict__ out, int64_t* __restrict__ indices,
                                        const T* __restrict__ x, Geo g) {
  using A = acc_t<T>;
  int64_t total = g.planes * g.Ho * g.Wo;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t ow = i % g.Wo, oh = (i / g.Wo) % g.Ho, plane = i / (g.Wo * g.Ho);
    const T* xp = x + plane * g.H * g.W;
    int64_t h0 = max(oh * g.s - g.p, int64_t(0)), h1 = min(oh * g.s - g.p + g.k, g.H);
    int64_t w0 = max(ow * g.s - g.p, int64_t(0)), w1 = min(ow * g.s - g.p + g.k, g.W);
    A best = -INFINITY;
    int64_t best_index = h0 * g.W + w0;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) {
        A v = to_acc(xp[h * g.W + w]);
        if (v > best || isnan(static_cast<double>(v))) {  // NaN wins, as on the CPU
          best = v;
          best_index = h * g.W + w;
        }
      }
    out[i] = from_acc<T>(best);
    indices[i] = best_index;
  }
}

template <class T>
__global__ void max_pool_backward_kernel(T* __restrict__ gin, const T* __restrict__ gout,
                                         const int64_t* __restrict__ indices, int64_t planes,
                                         int64_t in_plane, int64_t out_plane) {
  int64_t total = planes * out_plane;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t plane = i / out_plane;
    atomicAdd(gin + plane * in_plane + indices[i], gout[i]);
  }
}

template <class T>
__global__ void avg_pool_forward_kernel(T* __restrict__ out, const T* __restrict__ x, Geo g) {
  using A = acc_t<T>;
  int64_t total = g.planes * g.Ho * g.Wo;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t ow = i % g.Wo, oh = (i / g.Wo) % g.Ho, plane = i / (g.Wo * g.Ho);
    const T* xp = x + plane * g.H * g.W;
    int64_t h0 = oh * g.s - g.p, w0 = ow * g.s - g.p;
    int64_t h1 = min(h0 + g.k, g.H + g.p), w1 = min(w0 + g.k, g.W + g.p);
    int64_t divisor = (h1 - h0) * (w1 - w0);
    h0 = max(h0, int64_t(0));
    w0 = max(w0, int64_t(0));
    h1 = min(h1, g.H);
    w1 = min(w1, g.W);
    A acc = 0;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) acc += to_acc(xp[h * g.W + w]);
    out[i] = from_acc<T>(acc / static_cast<A>(divisor));
  }
}

template <class T>
__global__ void avg_pool_backward_kernel(T* __restrict__ gin, const T* __restrict__ gout, Geo g) {
  using A = acc_t<T>;
  int64_t total = g.planes * g.H * g.W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t w = i % g.W, h = (i / g.W) % g.H, plane = i / (g.W * g.H);
    const T* gp = gout + plane * g.Ho * g.Wo;
    // Outputs whose window [o*s - p, o*s - p + k) contains h.
    int64_t oh_lo = max(int64_t(0), (h + g.p - g.k + g.s) / g.s), oh_hi = min(g.Ho - 1, (h + g.p) / g.s);
    int64_t ow_lo = max(int64_t(0), (w + g.p - g.k + g.s) / g.s), ow_hi = min(g.Wo - 1, (w + g.p) / g.s);
    if (h + g.p - g.k + 1 < 0) oh_lo = 0;
    if (w + g.p - g.k + 1 < 0) ow_lo = 0;
    A acc = 0;
    for (int64_t oh = oh_lo; oh <= oh_hi; ++oh) {
      int64_t h0 = oh * g.s - g.p, h1 = min(h0 + g.k, g.H + g.p);
      if (h < h0 || h >= h1) continue;
      for (int64_t ow = ow_lo; ow <= ow_hi; ++ow) {
        int64_t w0 = ow * g.s - g.p, w1 = min(w0 + g.k, g.W + g.p);
        if (w < w0 || w >= w1) continue;
        acc += to_acc(gp[oh * g.Wo + ow]) / static_cast<A>((h1 - h0) * (w1 - w0));
      }
    }
    gin[i] = from_acc<T>(acc);
  }
}

template <class T>
__global__ void adaptive_forward_kernel(T* __restrict__ out, const T* __restrict__ x, Geo g) {
  using A = acc_t<T>;
  int64_t total = g.planes * g.Ho * g.Wo;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t ow = i % g.Wo, oh = (i / g.Wo) % g.Ho, plane = i / (g.Wo * g.Ho);
    const T* xp = x + plane * g.H * g.W;
    int64_t h0 = adaptive_start(oh, g.Ho, g.H), h1 = adaptive_end(oh, g.Ho, g.H);
    int64_t w0 = adaptive_start(ow, g.Wo, g.W), w1 = adaptive_end(ow, g.Wo, g.W);
    A acc = 0;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) acc += to_acc(xp[h * g.W + w]);
    out[i] = from_acc<T>(acc / static_cast<A>((h1 - h0) * (w1 - w0)));
  }
}

template <class T>
__global__ void adaptive_backward_kernel(T* __restrict__ gin, const T* __restrict__ gout, Geo g) {
  using A = acc_t<T>;
  int64_t total = g.planes * g.H * g.W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t w = i % g.W, h = (i / g.W) % g.H, plane = i / (g.W * g.H);
    const T* gp = gout + plane * g.Ho * g.Wo;
    // Cells overlapping h lie around h*Ho/H; a margin of one covers the rounding of start/end.
    int64_t oh_lo = max(int64_t(0), h * g.Ho / g.H - 1), oh_hi = min(g.Ho - 1, (h + 1) * g.Ho / g.H + 1);
    int64_t ow_lo = max(int64_t(0), w * g.Wo / g.W - 1), ow_hi = min(g.Wo - 1, (w + 1) * g.Wo / g.W + 1);
    A acc = 0;
    for (int64_t oh = oh_lo; oh <= oh_hi; ++oh) {
      int64_t h0 = adaptive_start(oh, g.Ho, g.H), h1 = adaptive_end(oh, g.Ho, g.H);
      if (h < h0 || h >= h1) continue;
      for (int64_t ow = ow_lo; ow <= ow_hi; ++ow) {
        int64_t w0 = adaptive_start(ow, g.Wo, g.W), w1 = adaptive_end(ow, g.Wo, g.W);
        if (w < w0 || w >= w1) continue;
        acc += to_acc(gp[oh * g.Wo + ow]) / static_cast<A>((h1 - h0) * (w1 - w0));
      }
    }
    gin[i] = from_acc<T>(acc);
  }
}

void check_nchw(const Tensor& t, const char* op) {
  DGP_CHECK(t.dim() == 4 && t.is_contiguous(),
            op << ": cuda kernel expects a contiguous NCHW tensor, got " << shape_str(t.shape()));
}

}  // namespace

void max_pool2d_forward(const Tensor& out, const Tensor& indices, const Tensor& x, int64_t kernel,
                        int64_t stride, int64_t padding) {
  check_nchw(x, "max_pool2d");
  check_nchw(out, "max_pool2d");
  Geo g = geometry(x, out, kernel, stride, padding);
  int64_t total = out.numel();
  if (total == 0) return;
  TensorDeviceGuard dg(out);
  cudaStream_t s = stream_of(out);
  DGP_CUDA_DISPATCH_FLOATING(x.dtype(), "max_pool2d", [&] {
    max_pool_forward_kernel<scalar_t><<<grid_for(total, 256, out.device().index), 256, 0, s>>>(
        static_cast<scalar_t*>(out.raw_data()), static_cast<int64_t*>(indices.raw_data()),
        static_cast<const scalar_t*>(x.raw_data()), g);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void max_pool2d_backward(const Tensor& grad_input, const Tensor& grad_out, const Tensor& indices) {
  check_nchw(grad_input, "max_pool2d backward");
  check_nchw(grad_out, "max_pool2d backward");
  DGP_CHECK(indices.is_contiguous() && indices.dtype() == DType::i64, "max_pool2d backward: bad indices");
  TensorDeviceGuard dg(grad_input);
  cudaStream_t s = stream_of(grad_input);
  if (grad_input.numel() == 0) return;
  DGP_CUDA_CHECK(cudaMemsetAsync(grad_input.raw_data(), 0, grad_input.nbytes(), s));
  int64_t planes = grad_out.size(0) * grad_out.size(1);
  int64_t in_plane = grad_input.size(2) * grad_input.size(3), out_plane = grad_out.size(2) * grad_out.size(3);
  if (planes * out_plane == 0) return;
  DGP_CUDA_DISPATCH_FLOATING(grad_out.dtype(), "max_pool2d backward", [&] {
    max_pool_backward_kernel<scalar_t>
        <<<grid_for(planes * out_plane, 256, grad_input.device().index), 256, 0, s>>>(
            static_cast<scalar_t*>(grad_input.raw_data()), static_cast<const scalar_t*>(grad_out.raw_data()),
            static_cast<const int64_t*>(indices.raw_data()), planes, in_plane, out_plane);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void avg_pool2d_forward(const Tensor& out, const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  check_nchw(x, "avg_pool2d");
  check_nchw(out, "avg_pool2d");
  Geo g = geometry(x, out, kernel, stride, padding);
  int64_t total = out.numel();
  if (total == 0) return;
  TensorDeviceGuard dg(out);
  cudaStream_t s = stream_of(out);
  DGP_CUDA_DISPATCH_FLOATING(x.dtype(), "avg_pool2d", [&] {
    avg_pool_forward_kernel<scalar_t><<<grid_for(total, 256, out.device().index), 256, 0, s>>>(
        static_cast<scalar_t*>(out.raw_data()), static_cast<const scalar_t*>(x.raw_data()), g);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void avg_pool2d_backward(const Tensor& grad_input, const Tensor& grad_out, int64_t kernel, int64_t stride,
                         int64_t padding) {
  check_nchw(grad_input, "avg_pool2d backward");
  check_nchw(grad_out, "avg_pool2d backward");
  Geo g = geometry(grad_input, grad_out, kernel, stride, padding);
  int64_t total = grad_input.numel();
  if (total == 0) return;
  TensorDeviceGuard dg(grad_input);
  cudaStream_t s = stream_of(grad_input);
  DGP_CUDA_DISPATCH_FLOATING(grad_out.dtype(), "avg_pool2d backward", [&] {
    avg_pool_backward_kernel<scalar_t><<<grid_for(total, 256, grad_input.device().index), 256, 0, s>>>(
        static_cast<scalar_t*>(grad_input.raw_data()), static_cast<const scalar_t*>(grad_out.raw_data()), g);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void adaptive_avg_pool2d_forward(const Tensor& out, const Tensor& x) {
  check_nchw(x, "adaptive_avg_pool2d");
  check_nchw(out, "adaptive_avg_pool2d");
  Geo g = geometry(x, out, 0, 1, 0);
  int64_t total = out.numel();
  if (total == 0) return;
  TensorDeviceGuard dg(out);
  cudaStream_t s = stream_of(out);
  DGP_CUDA_DISPATCH_FLOATING(x.dtype(), "adaptive_avg_pool2d", [&] {
    adaptive_forward_kernel<scalar_t><<<grid_for(total, 256, out.device().index), 256, 0, s>>>(
        static_cast<scalar_t*>(out.raw_data()), static_cast<const scalar_t*>(x.raw_data()), g);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void adaptive_avg_pool2d_backward(const Tensor& grad_input, const Tensor& grad_out) {
  check_nchw(grad_input, "adaptive_avg_pool2d backward");
  check_nchw(grad_out, "adaptive_avg_pool2d backward");
  Geo g = geometry(grad_input, grad_out, 0, 1, 0);
  int64_t total = grad_input.numel();
  if (total == 0) return;
  TensorDeviceGuard dg(grad_input);
  cudaStream_t s = stream_of(grad_input);
  DGP_CUDA_DISPATCH_FLOATING(grad_out.dtype(), "adaptive_avg_pool2d backward", [&] {
    adaptive_backward_kernel<scalar_t><<<grid_for(total, 256, grad_input.device().index), 256, 0, s>>>(
        static_cast<scalar_t*>(grad_input.raw_data()), static_cast<const scalar_t*>(grad_out.raw_data()), g);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

}  // namespace dgpipe::engine::cuda_kernels
