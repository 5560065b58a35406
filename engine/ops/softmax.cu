// CUDA twins of softmax / log_softmax and the fused cross-entropy (engine/ops/softmax.cpp).
// A softmax over the middle dim of [outer, size, inner] runs one row per warp (short rows) or per block (long
// rows) when inner == 1, and one thread per (outer, inner) column otherwise (coalesced across inner).
// Statistics are kept in float (double for f64 storage).
#include "engine/cuda/kernel_utils.cuh"
#include "engine/ops/softmax_kernels.h"

namespace dgpipe::engine::cuda_kernels {

using namespace cuda;  // the helpers of engine/cuda/kernel_utils.cuh and cuda_context.cuh

namespace {

// A row group: one warp (kBlock = false) or the whole block (kBlock = true).
template <bool kBlock, class A>
struct Group {
  A* shared;
  __device__ int rank() const { return kBlock ? threadIdx.x : (threadIdx.x & 31); }
  __device__ int size() const { return kBlock ? blockDim.x : 32; }
  __device__ A sum(A v) const {
    if constexpr (kBlock)
      return block_sum(v, shared);
    else
      return warp_sum(v);
  }
  __device__ A max(A v) const {
    if constexpr (kBlock)
      return block_max(v, shared);
    else
      return warp_max(v);
  }
};

template <bool kBlock>
__device__ __forceinline__ int64_t group_row() {
  return kBlock ? int64_t(blockIdx.x) : blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
}

template <class T, bool kBlock>
__global__ void softmax_rows(T* __restrict__ y, const T* __restrict__ x, int64_t rows, int64_t size,
                             bool log) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  Group<kBlock, A> g{shared};
  int64_t row = group_row<kBlock>();
  if (row >= rows) return;  // whole warps/blocks leave together
  const T* xr = x + row * size;
  T* yr = y + row * size;
  A m = -INFINITY;
  for (int64_t i = g.rank(); i < size; i += g.size()) m = fmax(m, to_acc(xr[i]));
  m = g.max(m);
  A s = 0;
  for (int64_t i = g.rank(); i < size; i += g.size()) s += exp(to_acc(xr[i]) - m);
  s = g.sum(s);
  A lse = m + ::log(s);
  for (int64_t i = g.rank(); i < size; i += g.size()) {
    A v = to_acc(xr[i]);
    yr[i] = from_acc<T>(log ? v - lse : exp(v - m) / s);
  }
}

template <class T>
__global__ void softmax_columns(T* __restrict__ y, const T* __restrict__ x, int64_t outer, int64_t size,
                                int64_t inner, bool log) {
  using A = acc_t<T>;
  int64_t cols = outer * inner;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < cols;
       c += int64_t(gridDim.x) * blockDim.x) {
    int64_t o = c / inner, i = c % inner;
    const T* xc = x + o * size * inner + i;
    T* yc = y + o * size * inner + i;
    A m = -INFINITY;
    for (int64_t k = 0; k < size; ++k) m = fmax(m, to_acc(xc[k * inner]));
    A s = 0;
    for (int64_t k = 0; k < size; ++k) s += exp(to_acc(xc[k * inner]) - m);
    A lse = m + ::log(s);
    for (int64_t k = 0; k < size; ++k) {
      A v = to_acc(xc[k * inner]);
      yc[k * inner] = from_acc<T>(log ? v - lse : exp(v - m) / s);
    }
  }
}

template <class T, bool kBlock>
__global__ void softmax_backward_rows(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ y,
                                      int64_t rows, int64_t size, bool log) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  Group<kBlock, A> g{shared};
  int64_t row = group_row<kBlock>();
  if (row >= rows) return;
  const T* dyr = dy + row * size;
  const T* yr = y + row * size;
  T* dxr = dx + row * size;
  A dot = 0;
  for (int64_t i = g.rank(); i < size; i += g.size())
    dot += log ? to_acc(dyr[i]) : to_acc(dyr[i]) * to_acc(yr[i]);
  dot = g.sum(dot);
  for (int64_t i = g.rank(); i < size; i += g.size()) {
    A d = to_acc(dyr[i]), v = to_acc(yr[i]);
    dxr[i] = from_acc<T>(log ? d - exp(v) * dot : v * (d - dot));
  }
}

template <class T>
__global__ void softmax_backward_columns(T* __restrict__ dx, const T* __restrict__ dy,
                                         const T* __restrict__ y, int64_t outer, int64_t size, int64_t inner,
                                         bool log) {
  using A = acc_t<T>;
  int64_t cols = outer * inner;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < cols;
       c += int64_t(gridDim.x) * blockDim.x) {
    int64_t base = (c / inner) * size * inner + c % inner;
    A dot = 0;
    for (int64_t k = 0; k < size; ++k) {
      int64_t j = base + k * inner;
      dot += log ? to_acc(dy[j]) : to_acc(dy[j]) * to_acc(y[j]);
    }
    for (int64_t k = 0; k < size; ++k) {
      int64_t j = base + k * inner;
      A d = to_acc(dy[j]), v = to_acc(y[j]);
      dx[j] = from_acc<T>(log ? d - exp(v) * dot : v * (d - dot));
    }
  }
}

// ---- cross-entropy: one block per row ----

template <class T>
__global__ void cross_entropy_forward_kernel(acc_t<T>* __restrict__ row_loss, acc_t<T>* __restrict__ row_lse,
                                             const T* __restrict__ x, const int64_t* __restrict__ target,
                                             int64_t c, acc_t<T> eps, int64_t ignore_index) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  Group<true, A> g{shared};
  int64_t row = blockIdx.x;
  const T* xr = x + row * c;
  A m = -INFINITY;
  for (int64_t i = threadIdx.x; i < c; i += blockDim.x) m = fmax(m, to_acc(xr[i]));
  m = g.max(m);
  A s = 0, total = 0;
  for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
    A v = to_acc(xr[i]);
    s += exp(v - m);
    total += v;
  }
  s = g.sum(s);
  total = g.sum(total);
  if (threadIdx.x == 0) {
    A lse = m + ::log(s);
    row_lse[row] = lse;
    int64_t t = target[row];
    A loss;
    if (t == ignore_index) {
      loss = 0;
    } else if (t < 0 || t >= c) {
      loss = NAN;  // reported as a NaN loss: raising would need a host sync
    } else {
      A nll = lse - to_acc(xr[t]);
      A smooth = lse - total / static_cast<A>(c);  // mean_c(lse - x_c)
      loss = (A(1) - eps) * nll + eps * smooth;
    }
    row_loss[row] = loss;
  }
}

template <class T>
__global__ void cross_entropy_backward_kernel(T* __restrict__ dx, const T* __restrict__ x,
                                              const acc_t<T>* __restrict__ row_lse,
                                              const int64_t* __restrict__ target,
                                              const acc_t<T>* __restrict__ scale, int64_t n, int64_t c,
                                              acc_t<T> eps, int64_t ignore_index) {
  using A = acc_t<T>;
  int64_t total = n * c;
  A sc = *scale;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < total;
       j += int64_t(gridDim.x) * blockDim.x) {
    int64_t row = j / c, k = j % c;
    int64_t t = target[row];
    if (t == ignore_index) {
      dx[j] = from_acc<T>(A(0));
      continue;
    }
    A q = (k == t ? A(1) - eps : A(0)) + eps / static_cast<A>(c);
    dx[j] = from_acc<T>(sc * (exp(to_acc(x[j]) - row_lse[row]) - q));
  }
}

template <class T>
void launch_softmax(const Tensor& y, const Tensor& x, int64_t outer, int64_t size, int64_t inner, bool log,
                    cudaStream_t s, int dev) {
  T* yp = static_cast<T*>(y.raw_data());
  const T* xp = static_cast<const T*>(x.raw_data());
  if (inner == 1) {
    if (size <= 1024) {
      softmax_rows<T, false><<<static_cast<unsigned>((outer + 7) / 8), 256, 0, s>>>(yp, xp, outer, size, log);
    } else {
      softmax_rows<T, true><<<static_cast<unsigned>(outer), 512, 0, s>>>(yp, xp, outer, size, log);
    }
  } else {
    softmax_columns<T><<<grid_for(outer * inner, 256, dev), 256, 0, s>>>(yp, xp, outer, size, inner, log);
  }
}

template <class T>
void launch_softmax_backward(const Tensor& dx, const Tensor& dy, const Tensor& y, int64_t outer, int64_t size,
                             int64_t inner, bool log, cudaStream_t s, int dev) {
  T* dxp = static_cast<T*>(dx.raw_data());
  const T* dyp = static_cast<const T*>(dy.raw_data());
  const T* yp = static_cast<const T*>(y.raw_data());
  if (inner == 1) {
    if (size <= 1024) {
      softmax_backward_rows<T, false>
          <<<static_cast<unsigned>((outer + 7) / 8), 256, 0, s>>>(dxp, dyp, yp, outer, size, log);
    } else {
      softmax_backward_rows<T, true>
          <<<static_cast<unsigned>(outer), 512, 0, s>>>(dxp, dyp, yp, outer, size, log);
    }
  } else {
    softmax_backward_columns<T>
        <<<grid_for(outer * inner, 256, dev), 256, 0, s>>>(dxp, dyp, yp, outer, size, inner, log);
  }
}

DType acc_dtype(DType t) {
  return t == DType::f64 ? DType::f64 : DType::f32;
}

}  // namespace

void softmax_forward(const Tensor& y, const Tensor& x, int64_t outer, int64_t dim_size, int64_t inner,
                     bool log) {
  DGP_CHECK(x.is_contiguous() && y.is_contiguous(), "softmax: cuda kernel expects contiguous tensors");
  if (outer * dim_size * inner == 0) return;
  TensorDeviceGuard g(y);
  cudaStream_t s = stream_of(y);
  DGP_CUDA_DISPATCH_FLOATING(x.dtype(), (log ? "log_softmax" : "softmax"), [&] {
    launch_softmax<scalar_t>(y, x, outer, dim_size, inner, log, s, y.device().index);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void softmax_backward(const Tensor& dx, const Tensor& dy, const Tensor& y, int64_t outer, int64_t dim_size,
                      int64_t inner, bool log) {
  DGP_CHECK(dx.is_contiguous() && dy.is_contiguous() && y.is_contiguous(),
            "softmax backward: cuda kernel expects contiguous tensors");
  if (outer * dim_size * inner == 0) return;
  TensorDeviceGuard g(dx);
  cudaStream_t s = stream_of(dx);
  DGP_CUDA_DISPATCH_FLOATING(dx.dtype(), (log ? "log_softmax backward" : "softmax backward"), [&] {
    launch_softmax_backward<scalar_t>(dx, dy, y, outer, dim_size, inner, log, s, dx.device().index);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void cross_entropy_forward(const Tensor& row_loss, const Tensor& row_lse, const Tensor& logits,
                           const Tensor& target, double label_smoothing, int64_t ignore_index) {
  DGP_CHECK(
      logits.dim() == 2 && logits.is_contiguous() && target.is_contiguous() && target.dtype() == DType::i64,
      "cross_entropy: cuda kernel expects contiguous [N,C] logits and i64 targets");
  DGP_CHECK(row_loss.dtype() == acc_dtype(logits.dtype()) && row_lse.dtype() == row_loss.dtype(),
            "cross_entropy: row statistics must be " << dtype_name(acc_dtype(logits.dtype())));
  int64_t n = logits.size(0), c = logits.size(1);
  if (n == 0) return;
  TensorDeviceGuard g(logits);
  cudaStream_t s = stream_of(logits);
  int threads = c >= 512 ? 512 : (c >= 128 ? 128 : 32);
  DGP_CUDA_DISPATCH_FLOATING(logits.dtype(), "cross_entropy", [&] {
    using A = acc_t<scalar_t>;
    cross_entropy_forward_kernel<scalar_t><<<static_cast<unsigned>(n), threads, 0, s>>>(
        static_cast<A*>(row_loss.raw_data()), static_cast<A*>(row_lse.raw_data()),
        static_cast<const scalar_t*>(logits.raw_data()), static_cast<const int64_t*>(target.raw_data()), c,
        static_cast<A>(label_smoothing), ignore_index);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void cross_entropy_backward(const Tensor& dlogits, const Tensor& logits, const Tensor& row_lse,
                            const Tensor& target, const Tensor& scale, double label_smoothing,
                            int64_t ignore_index) {
  DGP_CHECK(
      dlogits.is_contiguous() && logits.is_contiguous() && row_lse.is_contiguous() && target.is_contiguous(),
      "cross_entropy backward: cuda kernel expects contiguous tensors");
  DGP_CHECK(scale.numel() == 1 && scale.dtype() == acc_dtype(logits.dtype()) && scale.is_cuda(),
            "cross_entropy backward: scale must be a one-element " << dtype_name(acc_dtype(logits.dtype()))
                                                                   << " cuda tensor");
  int64_t n = logits.size(0), c = logits.size(1);
  if (n * c == 0) return;
  TensorDeviceGuard g(dlogits);
  cudaStream_t s = stream_of(dlogits);
  DGP_CUDA_DISPATCH_FLOATING(logits.dtype(), "cross_entropy backward", [&] {
    using A = acc_t<scalar_t>;
    cross_entropy_backward_kernel<scalar_t><<<grid_for(n * c, 256, dlogits.device().index), 256, 0, s>>>(
        static_cast<scalar_t*>(dlogits.raw_data()), static_cast<const scalar_t*>(logits.raw_data()),
        static_cast<const A*>(row_lse.raw_data()), static_cast<const int64_t*>(target.raw_data()),
        static_cast<const A*>(scale.raw_data()), n, c, static_cast<A>(label_smoothing), ignore_index);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

}  // namespace dgpipe::engine::cuda_kernels
