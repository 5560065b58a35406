// CUDA twin of batch normalisation (engine/ops/batch_norm.cpp) as plain kernels over contiguous [N, C, HW].
// Statistics: each channel's N*HW values are cut into chunks, one block each (so a layer with few channels
// and large images still fills the GPU); a block reduces its chunk with Welford's update (count, mean,
// squared deviations: no cancellation), and one warp per channel merges the chunks and writes mean and invstd
// in the accumulation type (f32 for halves) and the running statistics. An elementwise pass normalises.
// Backward: the same chunks reduce sum(dy) and sum(dy * xhat), one warp per channel adds them up, and an
// elementwise pass writes dx. Running statistics may be stored in any floating dtype.
#include "engine/cuda/kernel_utils.cuh"
#include "engine/ops/batch_norm_kernels.h"

namespace dgpipe::engine::cuda_kernels {

using namespace cuda;  // the helpers of engine/cuda/kernel_utils.cuh and cuda_context.cuh

namespace {

constexpr int kThreads = 256;

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

// ---- statistics: Welford over chunks of N*H*W, merged per channel ----

// Count, mean and sum of squared deviations of some values (Welford). Two parts merge exactly (Chan et al.):
// no cancellation however large the mean is against the spread.
template <class A>
struct Welford {
  A mean;
  A m2;
  int64_t n;
  static __device__ __forceinline__ Welford empty() { return Welford{A(0), A(0), 0}; }
  __device__ __forceinline__ void add(A v) {
    ++n;
    const A d = v - mean;
    mean += d / static_cast<A>(n);
    m2 += d * (v - mean);
  }
  __device__ __forceinline__ void merge(const Welford& o) {
    if (o.n == 0) return;
    if (n == 0) {
      *this = o;
      return;
    }
    const int64_t total = n + o.n;
    const A d = o.mean - mean;
    const A wb = static_cast<A>(o.n) / static_cast<A>(total);
    mean += d * wb;
    m2 += o.m2 + d * d * static_cast<A>(n) * wb;
    n = total;
  }
};

template <class A>
__device__ __forceinline__ Welford<A> warp_merge(Welford<A> w) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Welford<A> other = Welford<A>::empty();
    other.mean = __shfl_xor_sync(0xffffffffu, w.mean, o);
    other.m2 = __shfl_xor_sync(0xffffffffu, w.m2, o);
    other.n = __shfl_xor_sync(0xffffffffu, w.n, o);
    w.merge(other);
  }
  return w;
}

// Block (channel c, chunk s) of a [N, C, HW] input: Welford over the chunk's share of channel c's N*HW values
// (flat index i -> n = i / HW, k = i % HW), one part per block.
template <class T>
__global__ void bn_stats_partial(Welford<acc_t<T>>* __restrict__ parts, const T* __restrict__ x, int64_t C,
                                 FastDivmod hw, uint32_t count, uint32_t chunk, int chunks) {
  using A = acc_t<T>;
  __shared__ Welford<A> shared[32];
  const int64_t c = blockIdx.x / chunks;
  const uint32_t s = blockIdx.x % chunks;
  const uint32_t end = min(count, (s + 1) * chunk);
  Welford<A> w = Welford<A>::empty();
  for (uint32_t i = s * chunk + threadIdx.x; i < end; i += blockDim.x) {
    const uint32_t n = hw.div(i), k = i - n * hw.divisor;
    w.add(to_acc(x[(n * C + c) * int64_t(hw.divisor) + k]));
  }
  w = warp_merge(w);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) shared[warp] = w;
  __syncthreads();
  if (warp == 0) {
    w = lane < int(blockDim.x >> 5) ? shared[lane] : Welford<A>::empty();
    w = warp_merge(w);
    if (lane == 0) parts[blockIdx.x] = w;
  }
}

// One warp per channel merges its chunks' parts, writes mean and invstd (biased variance) and updates the
// running statistics (unbiased variance).
template <class A>
__global__ void bn_stats_finish(A* __restrict__ save_mean, A* __restrict__ save_invstd,
                                const Welford<A>* __restrict__ parts, int64_t C, int chunks, double eps,
                                Running running, double momentum) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (c >= C) return;
  Welford<A> w = Welford<A>::empty();
  for (int s = lane; s < chunks; s += 32) w.merge(parts[c * chunks + s]);
  w = warp_merge(w);
  if (lane != 0) return;
  const A var = w.m2 / static_cast<A>(w.n);
  save_mean[c] = w.mean;
  save_invstd[c] = A(1) / sqrt(var + static_cast<A>(eps));
  if (running.mean) {
    const double rm = load_any(running.mean, c, running.mean_dtype);
    store_any(running.mean, c, running.mean_dtype,
              (1.0 - momentum) * rm + momentum * static_cast<double>(w.mean));
  }
  if (running.var) {
    const double unbiased =
        w.n > 1 ? static_cast<double>(w.m2) / static_cast<double>(w.n - 1) : static_cast<double>(var);
    const double rv = load_any(running.var, c, running.var_dtype);
    store_any(running.var, c, running.var_dtype, (1.0 - momentum) * rv + momentum * unbiased);
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

// Block (channel c, chunk s): sum(dy) and sum(dy * xhat) over the chunk, in the accumulation type.
template <class T>
__global__ void bn_backward_partial(acc_t<T>* __restrict__ parts, const T* __restrict__ dy,
                                    const T* __restrict__ x, const acc_t<T>* __restrict__ mean,
                                    const acc_t<T>* __restrict__ invstd, int64_t C, FastDivmod hw,
                                    uint32_t count, uint32_t chunk, int chunks) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  const int64_t c = blockIdx.x / chunks;
  const uint32_t s = blockIdx.x % chunks;
  const uint32_t end = min(count, (s + 1) * chunk);
  const A mu = mean[c], rs = invstd[c];
  A s1 = 0, s2 = 0;
  for (uint32_t i = s * chunk + threadIdx.x; i < end; i += blockDim.x) {
    const uint32_t n = hw.div(i), k = i - n * hw.divisor;
    const int64_t j = (n * C + c) * int64_t(hw.divisor) + k;
    const A g = to_acc(dy[j]);
    s1 += g;
    s2 += g * (to_acc(x[j]) - mu) * rs;
  }
  s1 = block_sum(s1, shared);
  s2 = block_sum(s2, shared);
  if (threadIdx.x == 0) {
    parts[2 * blockIdx.x] = s1;
    parts[2 * blockIdx.x + 1] = s2;
  }
}

// One warp per channel sums its chunks: sum_dy, sum_dy_xhat, and grad_weight / grad_bias when wanted.
template <class T>
__global__ void bn_backward_finish(acc_t<T>* __restrict__ sum_dy, acc_t<T>* __restrict__ sum_dy_xhat,
                                   T* __restrict__ grad_w, T* __restrict__ grad_b,
                                   const acc_t<T>* __restrict__ parts, int64_t C, int chunks) {
  using A = acc_t<T>;
  const int64_t c = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (c >= C) return;
  A s1 = 0, s2 = 0;
  for (int s = lane; s < chunks; s += 32) {
    s1 += parts[2 * (c * chunks + s)];
    s2 += parts[2 * (c * chunks + s) + 1];
  }
  s1 = warp_sum(s1);
  s2 = warp_sum(s2);
  if (lane == 0) {
    sum_dy[c] = s1;
    sum_dy_xhat[c] = s2;
    if (grad_w) grad_w[c] = from_acc<T>(s2);
    if (grad_b) grad_b[c] = from_acc<T>(s1);
  }
}

template <class T>
__global__ void bn_backward_dx(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ x,
                               const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ invstd,
                               const T* __restrict__ w, const acc_t<T>* __restrict__ sum_dy,
                               const acc_t<T>* __restrict__ sum_dy_xhat, int64_t total, int64_t C, int64_t HW,
                               int64_t count, bool training) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t c = (i / HW) % C;
    A rs = invstd[c];
    A scale = rs * (w ? to_acc(w[c]) : A(1));
    A g = to_acc(dy[i]);
    if (training) {
      A xhat = (to_acc(x[i]) - mean[c]) * rs;
      A inv_count = A(1) / static_cast<A>(count);
      g = g - sum_dy[c] * inv_count - xhat * sum_dy_xhat[c] * inv_count;
    }
    dx[i] = from_acc<T>(scale * g);
  }
}

// mean / invstd are kept in the accumulation type: f32 for f16/bf16 inputs (a half invstd of a
// small-variance channel would lose most of its digits), the input's own type otherwise.
template <class T>
void check_stats_dtype(const Tensor& mean, const Tensor& invstd) {
  const DType want = sizeof(acc_t<T>) == 8 ? DType::f64 : DType::f32;
  DGP_CHECK(mean.dtype() == want && invstd.dtype() == want && mean.is_contiguous() && invstd.is_contiguous(),
            "batch_norm2d: cuda kernels keep mean/invstd as contiguous " << dtype_name(want) << ", got "
                                                                         << dtype_name(mean.dtype()));
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

// How each channel's N*HW values are cut into chunks, one block each: enough blocks for several waves in all
// (a layer with few channels still fills the GPU), at least 4 values per thread, at most 1024 chunks.
struct Chunking {
  FastDivmod hw;
  uint32_t count = 0;  // values per channel
  uint32_t chunk = 0;  // values per block
  int chunks = 1;      // blocks per channel
};

Chunking chunking(int64_t N, int64_t C, int64_t HW, int device) {
  const int64_t count = N * HW;
  DGP_CHECK(count < (int64_t(1) << 31),
            "batch_norm2d: " << count << " values per channel; the cuda kernels take fewer than 2^31");
  Chunking k;
  k.hw = FastDivmod(static_cast<uint32_t>(std::max<int64_t>(HW, 1)));
  k.count = static_cast<uint32_t>(count);
  const int64_t want = static_cast<int64_t>(sm_count(device)) * 8;
  const int64_t per_channel = std::max<int64_t>(
      1, std::min<int64_t>({(want + C - 1) / C, (count + 4 * kThreads - 1) / (4 * kThreads), 1024}));
  const int64_t chunk = std::max<int64_t>(1, (count + per_channel - 1) / per_channel);
  k.chunk = static_cast<uint32_t>(chunk);
  k.chunks = static_cast<int>(std::max<int64_t>(1, (count + chunk - 1) / chunk));
  return k;
}

unsigned warps_grid(int64_t C) {
  return static_cast<unsigned>((C + 7) / 8);  // 256 threads: 8 channels per block
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
  int dev = out.device().index;
  Running running = running_of(running_mean, running_var);
  DGP_CUDA_DISPATCH_FLOATING(x.dtype(), "batch_norm2d", [&] {
    using A = acc_t<scalar_t>;
    check_stats_dtype<scalar_t>(save_mean, save_invstd);
    A* mp = static_cast<A*>(save_mean.raw_data());
    A* ip = static_cast<A*>(save_invstd.raw_data());
    const scalar_t* xp = static_cast<const scalar_t*>(x.raw_data());
    const Chunking k = chunking(N, C, HW, dev);
    Scratch parts = scratch(sizeof(Welford<A>) * C * k.chunks, dev);
    Welford<A>* pp = static_cast<Welford<A>*>(parts.get());
    bn_stats_partial<scalar_t><<<static_cast<unsigned>(C * k.chunks), kThreads, 0, s>>>(
        pp, xp, C, k.hw, k.count, k.chunk, k.chunks);
    bn_stats_finish<A><<<warps_grid(C), 256, 0, s>>>(mp, ip, pp, C, k.chunks, eps, running, momentum);
    int64_t total = x.numel();
    if (total > 0)
      bn_normalize_kernel<scalar_t, A><<<grid_for(total, 256, dev), 256, 0, s>>>(
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
    check_stats_dtype<scalar_t>(save_mean, save_invstd);
    const A* mp = static_cast<const A*>(save_mean.raw_data());
    const A* ip = static_cast<const A*>(save_invstd.raw_data());
    const Chunking k = chunking(N, C, HW, dev);
    Scratch parts = scratch(sizeof(A) * 2 * C * k.chunks, dev);
    A* pp = static_cast<A*>(parts.get());
    bn_backward_partial<scalar_t><<<static_cast<unsigned>(C * k.chunks), kThreads, 0, s>>>(
        pp, dyp, xp, mp, ip, C, k.hw, k.count, k.chunk, k.chunks);
    bn_backward_finish<scalar_t><<<warps_grid(C), 256, 0, s>>>(
        sum_dy, sum_dy_xhat, grad_weight.defined() ? static_cast<scalar_t*>(grad_weight.raw_data()) : nullptr,
        grad_bias.defined() ? static_cast<scalar_t*>(grad_bias.raw_data()) : nullptr, pp, C, k.chunks);
    if (grad_x.defined() && x.numel() > 0)
      bn_backward_dx<scalar_t><<<grid_for(x.numel(), 256, dev), 256, 0, s>>>(
          static_cast<scalar_t*>(grad_x.raw_data()), dyp, xp, mp, ip, ptr_or_null<scalar_t>(weight), sum_dy,
          sum_dy_xhat, x.numel(), C, HW, N * HW, training);
  });
  DGP_CUDA_CHECK_LAUNCH();
}

}  // namespace dgpipe::engine::cuda_kernels
