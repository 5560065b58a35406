// CUDA twins of the row reductions of engine/ops/reduce.cpp over a contiguous [outer, inner] view.
// Accumulation is in float for f32/f16/bf16 and in double for f64. Three shapes of work:
//  - short rows (inner <= 1024): one warp per row;
//  - long rows: one block per row;
//  - few, very long rows (outer too small to fill the GPU): each row is cut into chunks reduced by separate
//    blocks into a float scratch buffer, then summed by a second pass.
// Sums over a middle dim of [outer, reduce, inner] (sum_middle: the bias gradient, a batch sum) read the
// input in place: 32 neighbouring columns per block row (coalesced), the reduced rows shared by the block's 8
// rows of threads, and for tall inputs split over several blocks into a scratch buffer plus a second pass.
#include "engine/cuda/kernel_utils.cuh"
#include "engine/ops/copy_kernels.h"
#include "engine/ops/reduce_kernels.h"

namespace dgpipe::engine::cuda_kernels {

using namespace cuda;  // the helpers of engine/cuda/kernel_utils.cuh and cuda_context.cuh

namespace {

template <class T>
struct SumAcc {
  using type = float;
};
template <>
struct SumAcc<double> {
  using type = double;
};

template <class T, class A>
__device__ __forceinline__ A row_partial_sum(const T* __restrict__ row, int64_t begin, int64_t end,
                                             int64_t step) {
  A acc = A(0);
  for (int64_t i = begin; i < end; i += step) acc += static_cast<A>(to_acc(row[i]));
  return acc;
}

template <class T>
__global__ void sum_warp_per_row(T* __restrict__ out, const T* __restrict__ x, int64_t outer, int64_t inner) {
  using A = typename SumAcc<T>::type;
  int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x & 31;
  if (row >= outer) return;
  A acc = row_partial_sum<T, A>(x + row * inner, lane, inner, 32);
  acc = warp_sum(acc);
  if (lane == 0) out[row] = from_acc<T>(static_cast<acc_t<T>>(acc));
}

// One block per (row, chunk). With chunks == 1 it writes the result; otherwise a float/double partial.
template <class T, class P>
__global__ void sum_block_per_row(P* __restrict__ partial, T* __restrict__ out, const T* __restrict__ x,
                                  int64_t inner, int64_t chunk_len, int chunks) {
  using A = typename SumAcc<T>::type;
  __shared__ A shared[32];
  int64_t row = blockIdx.x / chunks;
  int chunk = blockIdx.x % chunks;
  int64_t begin = chunk * chunk_len;
  int64_t end = min(inner, begin + chunk_len);
  A acc = row_partial_sum<T, A>(x + row * inner, begin + threadIdx.x, end, blockDim.x);
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) {
    if (chunks == 1)
      out[row] = from_acc<T>(static_cast<acc_t<T>>(acc));
    else
      partial[row * chunks + chunk] = static_cast<P>(acc);
  }
}

template <class T, class P>
__global__ void sum_partials(T* __restrict__ out, const P* __restrict__ partial, int64_t outer, int chunks) {
  int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x & 31;
  if (row >= outer) return;
  P acc = P(0);
  for (int i = lane; i < chunks; i += 32) acc += partial[row * chunks + i];
  acc = warp_sum(acc);
  if (lane == 0) out[row] = from_acc<T>(static_cast<acc_t<T>>(acc));
}

// Block (32 x 8): threadIdx.x walks 32 neighbouring columns k, threadIdx.y the reduced rows r; blockIdx.z
// is a chunk of rows. With chunks == 1 it writes out[o, k]; otherwise partial[chunk, o, k].
template <class T, class P>
__global__ void sum_middle_kernel(P* __restrict__ partial, T* __restrict__ out, const T* __restrict__ x,
                                  int64_t outer, int64_t reduce, int64_t inner, int64_t rows_per_chunk) {
  using A = typename SumAcc<T>::type;
  __shared__ A shared[8][33];
  const int64_t k = blockIdx.x * int64_t(32) + threadIdx.x;
  const int chunk = blockIdx.z, chunks = gridDim.z;
  const int64_t begin = chunk * rows_per_chunk;
  const int64_t end = min(reduce, begin + rows_per_chunk);
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    A acc = A(0);
    if (k < inner) {
      const T* column = x + o * reduce * inner + k;
      for (int64_t r = begin + threadIdx.y; r < end; r += blockDim.y)
        acc += static_cast<A>(to_acc(column[r * inner]));
    }
    shared[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && k < inner) {
      for (int j = 1; j < blockDim.y; ++j) acc += shared[j][threadIdx.x];
      if (chunks == 1)
        out[o * inner + k] = from_acc<T>(static_cast<acc_t<T>>(acc));
      else
        partial[(chunk * outer + o) * inner + k] = static_cast<P>(acc);
    }
    __syncthreads();
  }
}

template <class T, class P>
__global__ void sum_middle_chunks(T* __restrict__ out, const P* __restrict__ partial, int64_t n, int chunks) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    P acc = P(0);
    for (int c = 0; c < chunks; ++c) acc += partial[c * n + i];
    out[i] = from_acc<T>(static_cast<acc_t<T>>(acc));
  }
}

// ---- max / min with index ----

template <class A>
struct ValIdx {
  A v;
  int64_t i;
};

// The CPU keeps the first NaN, else the first best value: `b` replaces `a` when it is a NaN seen before any
// NaN in a, or strictly better, or equally good with a smaller index.
template <class A>
__device__ __forceinline__ ValIdx<A> pick(ValIdx<A> a, ValIdx<A> b, bool is_max) {
  if (b.i < 0) return a;
  if (a.i < 0) return b;
  bool an = isnan(static_cast<double>(a.v)), bn = isnan(static_cast<double>(b.v));
  if (an || bn) {
    if (an && bn) return a.i < b.i ? a : b;
    return an ? a : b;
  }
  if (a.v == b.v) return a.i < b.i ? a : b;
  return (is_max ? b.v > a.v : b.v < a.v) ? b : a;
}

template <class T>
__global__ void maxmin_block_per_row(T* __restrict__ values, int64_t* __restrict__ indices,
                                     const T* __restrict__ x, int64_t inner, bool is_max) {
  using A = acc_t<T>;
  __shared__ A sv[32];
  __shared__ int64_t si[32];
  const T* row = x + blockIdx.x * inner;
  ValIdx<A> best{A(0), -1};
  for (int64_t i = threadIdx.x; i < inner; i += blockDim.x)
    best = pick(best, ValIdx<A>{to_acc(row[i]), i}, is_max);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    ValIdx<A> other{__shfl_xor_sync(0xffffffffu, best.v, o), __shfl_xor_sync(0xffffffffu, best.i, o)};
    best = pick(best, other, is_max);
  }
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sv[warp] = best.v;
    si[warp] = best.i;
  }
  __syncthreads();
  if (warp == 0) {
    int nwarps = blockDim.x >> 5;
    best = lane < nwarps ? ValIdx<A>{sv[lane], si[lane]} : ValIdx<A>{A(0), -1};
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      ValIdx<A> other{__shfl_xor_sync(0xffffffffu, best.v, o), __shfl_xor_sync(0xffffffffu, best.i, o)};
      best = pick(best, other, is_max);
    }
    if (lane == 0) {
      values[blockIdx.x] = from_acc<T>(best.v);
      indices[blockIdx.x] = best.i;
    }
  }
}

template <class T>
__global__ void maxmin_thread_per_row(T* __restrict__ values, int64_t* __restrict__ indices,
                                      const T* __restrict__ x, int64_t outer, int64_t inner, bool is_max) {
  using A = acc_t<T>;
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < outer;
       r += int64_t(gridDim.x) * blockDim.x) {
    const T* row = x + r * inner;
    ValIdx<A> best{to_acc(row[0]), 0};
    for (int64_t i = 1; i < inner; ++i) best = pick(best, ValIdx<A>{to_acc(row[i]), i}, is_max);
    values[r] = from_acc<T>(best.v);
    indices[r] = best.i;
  }
}

}  // namespace

void sum_lastdim(const Tensor& out, const Tensor& x2d) {
  DGP_CHECK(x2d.dim() == 2 && x2d.is_contiguous() && out.is_contiguous(),
            "sum: cuda kernel expects a contiguous 2-D input");
  int64_t outer = x2d.size(0), inner = x2d.size(1);
  if (outer == 0) return;
  TensorDeviceGuard g(out);
  cudaStream_t s = stream_of(out);
  int dev = out.device().index;
  if (inner == 0) {
    fill(out, 0.0);
    return;
  }
  DGP_CUDA_DISPATCH_FLOATING(x2d.dtype(), "sum", [&] {
    using P = typename SumAcc<scalar_t>::type;
    const scalar_t* xp = static_cast<const scalar_t*>(x2d.raw_data());
    scalar_t* op = static_cast<scalar_t*>(out.raw_data());
    if (inner <= 1024) {
      int64_t blocks = (outer + 7) / 8;
      sum_warp_per_row<scalar_t><<<static_cast<unsigned>(blocks), 256, 0, s>>>(op, xp, outer, inner);
    } else {
      // Enough blocks for ~4 waves; split rows only when there are too few of them.
      int64_t want_blocks = static_cast<int64_t>(sm_count(dev)) * 4;
      int chunks = 1;
      if (outer < want_blocks) {
        int64_t c = (want_blocks + outer - 1) / outer;
        int64_t max_c = (inner + 4095) / 4096;  // at least 4096 elements per chunk
        chunks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({c, max_c, 1024})));
      }
      int64_t chunk_len = (inner + chunks - 1) / chunks;
      if (chunks == 1) {
        sum_block_per_row<scalar_t, P>
            <<<static_cast<unsigned>(outer), 512, 0, s>>>(nullptr, op, xp, inner, chunk_len, 1);
      } else {
        Scratch partial = scratch(sizeof(P) * outer * chunks, dev);
        P* pp = static_cast<P*>(partial.get());
        sum_block_per_row<scalar_t, P>
            <<<static_cast<unsigned>(outer * chunks), 512, 0, s>>>(pp, op, xp, inner, chunk_len, chunks);
        sum_partials<scalar_t, P>
            <<<static_cast<unsigned>((outer + 7) / 8), 256, 0, s>>>(op, pp, outer, chunks);
      }
    }
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void sum_middle(const Tensor& out, const Tensor& x, int64_t outer, int64_t reduce, int64_t inner) {
  DGP_CHECK(
      x.is_contiguous() && out.is_contiguous() && x.numel() == outer * reduce * inner &&
          out.numel() == outer * inner,
      "sum: cuda kernel expects a contiguous [" << outer << ", " << reduce << ", " << inner << "] input");
  if (out.numel() == 0) return;
  TensorDeviceGuard g(out);
  if (reduce == 0) {
    fill(out, 0.0);
    return;
  }
  cudaStream_t s = stream_of(out);
  int dev = out.device().index;
  const int64_t column_blocks = (inner + 31) / 32;
  const int64_t outer_blocks = std::min<int64_t>(outer, 65535);
  // Enough blocks for ~4 waves; split the reduced rows only when the columns alone are too few, and keep at
  // least 64 rows per chunk.
  const int64_t want = static_cast<int64_t>(sm_count(dev)) * 4;
  int64_t chunks = 1;
  if (column_blocks * outer_blocks < want)
    chunks = std::max<int64_t>(
        1, std::min<int64_t>({(want + column_blocks * outer_blocks - 1) / (column_blocks * outer_blocks),
                              (reduce + 63) / 64, 1024}));
  const int64_t rows_per_chunk = (reduce + chunks - 1) / chunks;
  chunks = (reduce + rows_per_chunk - 1) / rows_per_chunk;
  const dim3 block(32, 8);
  const dim3 grid(static_cast<unsigned>(column_blocks), static_cast<unsigned>(outer_blocks),
                  static_cast<unsigned>(chunks));
  DGP_CUDA_DISPATCH_FLOATING(x.dtype(), "sum", [&] {
    using P = typename SumAcc<scalar_t>::type;
    const scalar_t* xp = static_cast<const scalar_t*>(x.raw_data());
    scalar_t* op = static_cast<scalar_t*>(out.raw_data());
    if (chunks == 1) {
      sum_middle_kernel<scalar_t, P>
          <<<grid, block, 0, s>>>(nullptr, op, xp, outer, reduce, inner, rows_per_chunk);
    } else {
      Scratch partial = scratch(sizeof(P) * chunks * outer * inner, dev);
      P* pp = static_cast<P*>(partial.get());
      sum_middle_kernel<scalar_t, P><<<grid, block, 0, s>>>(pp, op, xp, outer, reduce, inner, rows_per_chunk);
      const int64_t n = outer * inner;
      sum_middle_chunks<scalar_t, P>
          <<<grid_for(n, 256, dev), 256, 0, s>>>(op, pp, n, static_cast<int>(chunks));
    }
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void maxmin_lastdim(const Tensor& values, const Tensor& indices, const Tensor& x2d, bool is_max) {
  DGP_CHECK(x2d.dim() == 2 && x2d.is_contiguous(), "max/min: cuda kernel expects a contiguous 2-D input");
  int64_t outer = x2d.size(0), inner = x2d.size(1);
  DGP_CHECK(inner > 0, (is_max ? "max" : "min") << ": reduction over an empty dimension");
  if (outer == 0) return;
  TensorDeviceGuard g(values);
  cudaStream_t s = stream_of(values);
  int dev = values.device().index;
  DGP_CUDA_DISPATCH_FLOATING(x2d.dtype(), (is_max ? "max" : "min"), [&] {
    const scalar_t* xp = static_cast<const scalar_t*>(x2d.raw_data());
    scalar_t* vp = static_cast<scalar_t*>(values.raw_data());
    int64_t* ip = static_cast<int64_t*>(indices.raw_data());
    if (inner <= 16 && outer >= 4096) {
      maxmin_thread_per_row<scalar_t>
          <<<grid_for(outer, 256, dev), 256, 0, s>>>(vp, ip, xp, outer, inner, is_max);
    } else {
      int threads = inner >= 512 ? 512 : (inner >= 128 ? 128 : 32);
      maxmin_block_per_row<scalar_t>
          <<<static_cast<unsigned>(outer), threads, 0, s>>>(vp, ip, xp, inner, is_max);
    }
  });
  DGP_CUDA_CHECK_LAUNCH();
}

}  // namespace dgpipe::engine::cuda_kernels
