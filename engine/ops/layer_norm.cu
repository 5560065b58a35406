// CUDA twin of layer normalisation (engine/ops/layer_norm.cpp) over rows of [rows, cols].
// Forward and dx: one warp per row (cols <= 1024) or one block per row, statistics in float (double for f64).
// dweight/dbias are column sums over all rows: blocks of 32 columns x 8 row-lanes write per-chunk partials, a
// second pass adds the chunks, so the reduction uses the whole GPU even when cols is small.
#include "engine/cuda/kernel_utils.cuh"
#include "engine/ops/layer_norm_kernels.h"

namespace dgpipe::engine::cuda_kernels {

using namespace cuda;  // the helpers of engine/cuda/kernel_utils.cuh and cuda_context.cuh

namespace {

template <bool kBlock, class A>
__device__ __forceinline__ A group_sum(A v, A* shared) {
  if constexpr (kBlock)
    return block_sum(v, shared);
  else
    return warp_sum(v);
}

template <class T, bool kBlock>
__global__ void layer_norm_forward_kernel(T* __restrict__ y, acc_t<T>* __restrict__ mean_out,
                                          acc_t<T>* __restrict__ rstd_out, const T* __restrict__ x,
                                          const T* __restrict__ w, const T* __restrict__ b, int64_t rows,
                                          int64_t cols, acc_t<T> eps) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  int64_t row = kBlock ? int64_t(blockIdx.x) : blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  int rank = kBlock ? threadIdx.x : (threadIdx.x & 31);
  int step = kBlock ? blockDim.x : 32;
  const T* xr = x + row * cols;
  T* yr = y + row * cols;
  A s = 0;
  for (int64_t i = rank; i < cols; i += step) s += to_acc(xr[i]);
  A mean = group_sum<kBlock>(s, shared) / static_cast<A>(cols);
  A sq = 0;
  for (int64_t i = rank; i < cols; i += step) {
    A d = to_acc(xr[i]) - mean;
    sq += d * d;
  }
  A var = group_sum<kBlock>(sq, shared) / static_cast<A>(cols);
  A rstd = A(1) / sqrt(var + eps);
  for (int64_t i = rank; i < cols; i += step) {
    A v = (to_acc(xr[i]) - mean) * rstd;
    if (w) v *= to_acc(w[i]);
    if (b) v += to_acc(b[i]);
    yr[i] = from_acc<T>(v);
  }
  if (rank == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w.
template <class T, bool kBlock>
__global__ void layer_norm_dx_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ x,
                                     const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd,
                                     const T* __restrict__ w, int64_t rows, int64_t cols) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  int64_t row = kBlock ? int64_t(blockIdx.x) : blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  int rank = kBlock ? threadIdx.x : (threadIdx.x & 31);
  int step = kBlock ? blockDim.x : 32;
  const T* xr = x + row * cols;
  const T* dyr = dy + row * cols;
  T* dxr = dx + row * cols;
  A mu = mean[row], rs = rstd[row];
  A sg = 0, sgx = 0;
  for (int64_t i = rank; i < cols; i += step) {
    A g = to_acc(dyr[i]) * (w ? to_acc(w[i]) : A(1));
    A xhat = (to_acc(xr[i]) - mu) * rs;
    sg += g;
    sgx += g * xhat;
  }
  A mg = group_sum<kBlock>(sg, shared) / static_cast<A>(cols);
  A mgx = group_sum<kBlock>(sgx, shared) / static_cast<A>(cols);
  for (int64_t i = rank; i < cols; i += step) {
    A g = to_acc(dyr[i]) * (w ? to_acc(w[i]) : A(1));
    A xhat = (to_acc(xr[i]) - mu) * rs;
    dxr[i] = from_acc<T>(rs * (g - mg - xhat * mgx));
  }
}

constexpr int kColTile = 32, kRowLanes = 8;

template <class T>
__global__ void layer_norm_param_partials(acc_t<T>* __restrict__ pw, acc_t<T>* __restrict__ pb,
                                          const T* __restrict__ dy, const T* __restrict__ x,
                                          const acc_t<T>* __restrict__ mean,
                                          const acc_t<T>* __restrict__ rstd, int64_t rows, int64_t cols,
                                          int64_t rows_per_chunk) {
  using A = acc_t<T>;
  __shared__ A sw[kRowLanes][kColTile];
  __shared__ A sb[kRowLanes][kColTile];
  int64_t c = blockIdx.x * int64_t(kColTile) + threadIdx.x;
  int64_t r0 = blockIdx.y * rows_per_chunk;
  int64_t r1 = min(rows, r0 + rows_per_chunk);
  A aw = 0, ab = 0;
  if (c < cols) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      A g = to_acc(dy[r * cols + c]);
      aw += g * (to_acc(x[r * cols + c]) - mean[r]) * rstd[r];
      ab += g;
    }
  }
  sw[threadIdx.y][threadIdx.x] = aw;
  sb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    for (int k = 1; k < kRowLanes; ++k) {
      aw += sw[k][threadIdx.x];
      ab += sb[k][threadIdx.x];
    }
    if (pw) pw[blockIdx.y * cols + c] = aw;
    if (pb) pb[blockIdx.y * cols + c] = ab;
  }
}

template <class T>
__global__ void layer_norm_param_final(T* __restrict__ dw, T* __restrict__ db,
                                       const acc_t<T>* __restrict__ pw, const acc_t<T>* __restrict__ pb,
                                       int64_t cols, int chunks) {
  using A = acc_t<T>;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < cols;
       c += int64_t(gridDim.x) * blockDim.x) {
    A aw = 0, ab = 0;
    for (int k = 0; k < chunks; ++k) {
      if (pw) aw += pw[k * cols + c];
      if (pb) ab += pb[k * cols + c];
    }
    if (dw) dw[c] = from_acc<T>(aw);
    if (db) db[c] = from_acc<T>(ab);
  }
}

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.raw_data()) : nullptr;
}

}  // namespace

void layer_norm_forward(const Tensor& y, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                        const Tensor& weight, const Tensor& bias, int64_t rows, int64_t cols, double eps) {
  DGP_CHECK(x.is_contiguous() && y.is_contiguous(), "layer_norm: cuda kernel expects contiguous tensors");
  if (rows == 0 || cols == 0) return;
  TensorDeviceGuard g(y);
  cudaStream_t s = stream_of(y);
  DGP_CUDA_DISPATCH_FLOATING(x.dtype(), "layer_norm", [&] {
    using A = acc_t<scalar_t>;
    DGP_CHECK(mean.dtype() == (sizeof(A) == 8 ? DType::f64 : DType::f32),
              "layer_norm: statistics dtype mismatch");
    scalar_t* yp = static_cast<scalar_t*>(y.raw_data());
    const scalar_t* xp = static_cast<const scalar_t*>(x.raw_data());
    A* mp = static_cast<A*>(mean.raw_data());
    A* rp = static_cast<A*>(rstd.raw_data());
    const scalar_t* wp = ptr_or_null<scalar_t>(weight);
    const scalar_t* bp = ptr_or_null<scalar_t>(bias);
    if (cols <= 1024)
      layer_norm_forward_kernel<scalar_t, false><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, s>>>(
          yp, mp, rp, xp, wp, bp, rows, cols, static_cast<A>(eps));
    else
      layer_norm_forward_kernel<scalar_t, true><<<static_cast<unsigned>(rows), 512, 0, s>>>(
          yp, mp, rp, xp, wp, bp, rows, cols, static_cast<A>(eps));
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void layer_norm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dbias, const Tensor& dy,
                         const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& weight,
                         int64_t rows, int64_t cols) {
  DGP_CHECK(x.is_contiguous() && dy.is_contiguous() && dx.is_contiguous(),
            "layer_norm backward: cuda kernel expects contiguous tensors");
  if (cols == 0) return;
  TensorDeviceGuard g(dx);
  cudaStream_t s = stream_of(dx);
  int dev = dx.device().index;
  DGP_CUDA_DISPATCH_FLOATING(x.dtype(), "layer_norm backward", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* xp = static_cast<const scalar_t*>(x.raw_data());
    const scalar_t* dyp = static_cast<const scalar_t*>(dy.raw_data());
    const A* mp = static_cast<const A*>(mean.raw_data());
    const A* rp = static_cast<const A*>(rstd.raw_data());
    const scalar_t* wp = ptr_or_null<scalar_t>(weight);
    if (rows > 0) {
      scalar_t* dxp = static_cast<scalar_t*>(dx.raw_data());
      if (cols <= 1024)
        layer_norm_dx_kernel<scalar_t, false>
            <<<static_cast<unsigned>((rows + 7) / 8), 256, 0, s>>>(dxp, dyp, xp, mp, rp, wp, rows, cols);
      else
        layer_norm_dx_kernel<scalar_t, true>
            <<<static_cast<unsigned>(rows), 512, 0, s>>>(dxp, dyp, xp, mp, rp, wp, rows, cols);
      DGP_CUDA_CHECK_LAUNCH();
    }
    if (!dweight.defined() && !dbias.defined()) return;
    int64_t col_tiles = (cols + kColTile - 1) / kColTile;
    int64_t want =
        std::max<int64_t>(1, static_cast<int64_t>(sm_count(dev)) * 4 / std::max<int64_t>(col_tiles, 1));
    int chunks = static_cast<int>(std::min<int64_t>({want, std::max<int64_t>(rows / 32, 1), 512}));
    int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
    if (rows_per_chunk == 0) rows_per_chunk = 1;
    Scratch pw =
        dweight.defined() ? scratch(sizeof(A) * chunks * cols, dev) : Scratch(nullptr, ScratchDeleter{dev});
    Scratch pb =
        dbias.defined() ? scratch(sizeof(A) * chunks * cols, dev) : Scratch(nullptr, ScratchDeleter{dev});
    dim3 grid(static_cast<unsigned>(col_tiles), static_cast<unsigned>(chunks));
    dim3 block(kColTile, kRowLanes);
    layer_norm_param_partials<scalar_t><<<grid, block, 0, s>>>(
        static_cast<A*>(pw.get()), static_cast<A*>(pb.get()), dyp, xp, mp, rp, rows, cols, rows_per_chunk);
    layer_norm_param_final<scalar_t><<<grid_for(cols, 256, dev), 256, 0, s>>>(
        dweight.defined() ? static_cast<scalar_t*>(dweight.raw_data()) : nullptr,
        dbias.defined() ? static_cast<scalar_t*>(dbias.raw_data()) : nullptr, static_cast<const A*>(pw.get()),
        static_cast<const A*>(pb.get()), cols, chunks);
    DGP_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace dgpipe::engine::cuda_kernels
