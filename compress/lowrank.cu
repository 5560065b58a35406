// CUDA low-rank codecs (twin of lowrank.cpp): the same algorithm, batched over the b matrices of the view.
//
// GEMMs are batched strided cuBLAS calls on the engine's current stream (engine::cuda_kernels::bmm, which
// follows the engine's TF32 setting). Orthonormalisation is one block per matrix: modified Gram-Schmidt
// applied twice, the projections onto earlier columns taken 32 at a time (one block reduction per 32 dot
// products, the working column in a double scratch vector, like the CPU's), and a collapsed column re-drawn
// from the same Philox stream the CPU uses. The randomized SVD's small l x l eigenproblem (l = r + min(r, 8)
// <= 72) is a cyclic Jacobi in shared memory, one block per matrix, in the CPU's rotation order; B B^T is
// formed in double by cuBLAS. The power iteration's warm-start state P stays on the device between calls.
// Non-finite inputs are counted into the status word by one extra read of A. Passes over A: power 2I + 1 GEMM
// reads + 1 check; svd 2I + 3 GEMM reads + 1 check. No host synchronisation. Results match the CPU reference
// to float rounding (GEMM summation order and FMA differ), not bit for bit.
#include "compress/codec_cuda.cuh"
#include "compress/lowrank_kernels.h"
#include "engine/cuda/kernel_utils.cuh"
#include "engine/ops.h"
#include "engine/ops/copy_kernels.h"
#include "engine/ops/matmul_kernels.h"
#include "engine/rng.h"

namespace dgpipe::compress::cuda_kernels {
namespace {

using engine::Tensor;

constexpr int kOrthThreads = 256;
constexpr int kOrthWarps = kOrthThreads / 32;
constexpr int kChunk = 32;

// Element i of the Philox normal stream `seed` (offset 0): engine::philox_normal, shared with the CPU.
__device__ __forceinline__ float philox_normal_at(uint64_t seed, uint64_t i) {
  return engine::philox_normal(engine::PhiloxState{seed, 0}, i);
}

// Sum over the block (kOrthThreads threads); every thread gets the total.
__device__ double block_sum(double v, double* scratch /* kOrthWarps + 1 */) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  __syncthreads();  // scratch may still be read by a previous call
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  double total = 0.0;
#pragma unroll
  for (int w = 0; w < kOrthWarps; ++w) total += scratch[w];
  return total;
}

// In place, column by column, the CPU's orthonormalize() on the matrix of block `blockIdx.x` ([rows x cols],
// row-major, batch stride rows*cols). seed of matrix bi = seed0 + bi * seed_stride.
__global__ void __launch_bounds__(kOrthThreads)
    orthonormalize_kernel(float* __restrict__ a_all, int64_t rows, int64_t cols, double* __restrict__ col_all,
                          uint64_t seed0, uint64_t seed_stride) {
  __shared__ double red[kOrthWarps][kChunk];
  __shared__ double dots[kChunk];
  __shared__ double sum_scratch[kOrthWarps + 1];
  const int64_t bi = blockIdx.x;
  float* a = a_all + bi * rows * cols;
  double* col = col_all + bi * rows;
  const uint64_t seed = seed0 + static_cast<uint64_t>(bi) * seed_stride;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t c = 0; c < cols; ++c) {
    double ss = 0.0;
    for (int64_t r = threadIdx.x; r < rows; r += kOrthThreads) {
      const double v = a[r * cols + c];
      col[r] = v;
      ss += v * v;
    }
    double norm0 = sqrt(block_sum(ss, sum_scratch));
    for (int attempt = 0; attempt < 2; ++attempt) {
      for (int pass = 0; pass < 2; ++pass)
        for (int64_t k0 = 0; k0 < c; k0 += kChunk) {
          const int kc = static_cast<int>(c - k0 < kChunk ? c - k0 : kChunk);
          double part[kChunk];
#pragma unroll
          for (int kk = 0; kk < kChunk; ++kk) part[kk] = 0.0;
          for (int64_t r = threadIdx.x; r < rows; r += kOrthThreads) {
            const double cr = col[r];
            const float* row = a + r * cols + k0;
#pragma unroll
            for (int kk = 0; kk < kChunk; ++kk)
              if (kk < kc) part[kk] += cr * static_cast<double>(row[kk]);
          }
          // Transpose-reduce: afterwards lane l holds the warp's total of part[l] (31 shuffles for 32 sums).
#pragma unroll
          for (int off = 16; off >= 1; off >>= 1) {
            const bool upper = (lane & off) != 0;
#pragma unroll
            for (int i = 0; i < 16; ++i)
              if (i < off) {
                const double send = upper ? part[i] : part[i + off];
                const double keep = upper ? part[i + off] : part[i];
                part[i] = keep + __shfl_xor_sync(0xffffffffu, send, off);
              }
          }
          red[warp][lane] = part[0];
          __syncthreads();
          if (threadIdx.x < kChunk) {
            double d = 0.0;
#pragma unroll
            for (int w = 0; w < kOrthWarps; ++w) d += red[w][threadIdx.x];
            dots[threadIdx.x] = d;
          }
          __syncthreads();
          for (int64_t r = threadIdx.x; r < rows; r += kOrthThreads) {
            double cr = col[r];
            const float* row = a + r * cols + k0;
            for (int kk = 0; kk < kc; ++kk) cr -= dots[kk] * static_cast<double>(row[kk]);
            col[r] = cr;
          }
          __syncthreads();  // dots and red are rewritten by the next chunk
        }
      double nn = 0.0;
      for (int64_t r = threadIdx.x; r < rows; r += kOrthThreads) nn += col[r] * col[r];
      const double norm = sqrt(block_sum(nn, sum_scratch));
      if (norm > 1e-6 * norm0 && norm > 1e-30) {
        for (int64_t r = threadIdx.x; r < rows; r += kOrthThreads)
          a[r * cols + c] = static_cast<float>(col[r] / norm);
        break;
      }
      if (attempt == 1 || c >= rows) {
        for (int64_t r = threadIdx.x; r < rows; r += kOrthThreads) a[r * cols + c] = 0.0f;
        break;
      }
      // Collapsed column (rank deficiency): re-draw it from the CPU's Philox stream and project again.
      const uint64_t column_seed = seed + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(c + 1);
      double s2 = 0.0;
      for (int64_t r = threadIdx.x; r < rows; r += kOrthThreads) {
        const double v = philox_normal_at(column_seed, static_cast<uint64_t>(r));
        col[r] = v;
        s2 += v * v;
      }
      norm0 = sqrt(block_sum(s2, sum_scratch));
    }
    __syncthreads();  // column c is final before column c + 1 reads it
  }
}

void orthonormalize(const Tensor& m, double* col_scratch, uint64_t seed0, uint64_t seed_stride) {
  const int64_t b = m.size(0), rows = m.size(1), cols = m.size(2);
  orthonormalize_kernel<<<static_cast<unsigned>(b), kOrthThreads, 0, stream()>>>(
      static_cast<float*>(m.raw_data()), rows, cols, col_scratch, seed0, seed_stride);
  DGP_CUDA_CHECK(cudaGetLastError());
}

// Gaussian sketch: element i of matrix bi is philox_normal({seed0 + bi * seed_stride, 0}, i).
__global__ void sketch_kernel(float* __restrict__ out, int64_t per_matrix, int64_t total, uint64_t seed0,
                              uint64_t seed_stride) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t bi = e / per_matrix, i = e % per_matrix;
    out[e] = philox_normal_at(seed0 + static_cast<uint64_t>(bi) * seed_stride, static_cast<uint64_t>(i));
  }
}

__global__ void count_nonfinite_kernel(const float* __restrict__ a, int64_t n, uint32_t* status) {
  unsigned bad = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    bad += is_finite_float(a[i]) ? 0u : 1u;
  for (int off = 16; off > 0; off >>= 1) bad += __shfl_xor_sync(0xffffffffu, bad, off);
  if ((threadIdx.x & 31) == 0 && bad) atomicAdd(status, bad);
}

// Launched with kOrthThreads threads (block_sum). Cyclic Jacobi on the l x l symmetric G of block bi (double,
// in shared memory), the CPU's rotation order; writes the eigenvectors of the r largest eigenvalues
// (descending; equal eigenvalues by index) as W [l x r] f32.
__global__ void jacobi_top_kernel(const double* __restrict__ g_all, int l, int r, float* __restrict__ w_all) {
  extern __shared__ double shared[];
  __shared__ double sum_scratch[kOrthWarps + 1];
  double* g = shared;
  double* vec = shared + l * l;
  double* vals = vec + l * l;
  const int64_t bi = blockIdx.x;
  const double* gin = g_all + bi * l * l;
  for (int i = threadIdx.x; i < l * l; i += blockDim.x) {
    g[i] = gin[i];
    vec[i] = (i / l == i % l) ? 1.0 : 0.0;
  }
  __syncthreads();
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0.0;
    for (int i = threadIdx.x; i < l * l; i += blockDim.x) {
      const int p = i / l, q = i % l;
      if (q > p) off += g[i] * g[i];
    }
    if (block_sum(off, sum_scratch) < 1e-30) break;
    for (int p = 0; p < l; ++p)
      for (int q = p + 1; q < l; ++q) {
        const double apq = g[p * l + q];
        if (fabs(apq) < 1e-300) continue;  // every thread read the same value: uniform
        const double theta = (g[q * l + q] - g[p * l + p]) / (2 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1));
        const double c = 1 / sqrt(t * t + 1), s = t * c;
        __syncthreads();  // all reads of g[p][q], g[p][p], g[q][q] happen before the rotation writes
        for (int k = threadIdx.x; k < l; k += blockDim.x) {
          const double gkp = g[k * l + p], gkq = g[k * l + q];
          g[k * l + p] = c * gkp - s * gkq;
          g[k * l + q] = s * gkp + c * gkq;
          const double vkp = vec[k * l + p], vkq = vec[k * l + q];
          vec[k * l + p] = c * vkp - s * vkq;
          vec[k * l + q] = s * vkp + c * vkq;
        }
        __syncthreads();
        for (int k = threadIdx.x; k < l; k += blockDim.x) {
          const double gpk = g[p * l + k], gqk = g[q * l + k];
          g[p * l + k] = c * gpk - s * gqk;
          g[q * l + k] = s * gpk + c * gqk;
        }
        __syncthreads();
      }
  }
  for (int i = threadIdx.x; i < l; i += blockDim.x) vals[i] = g[i * l + i];
  __syncthreads();
  float* w = w_all + bi * l * r;
  for (int i = threadIdx.x; i < l; i += blockDim.x) {
    int rank = 0;
    for (int j = 0; j < l; ++j) rank += (vals[j] > vals[i] || (vals[j] == vals[i] && j < i)) ? 1 : 0;
    if (rank < r)
      for (int k = 0; k < l; ++k) w[k * r + rank] = static_cast<float>(vec[k * l + i]);
  }
}

struct LowRankViews {
  Tensor l, r;  // [b, m, r], [b, n, r] views of the body
};

LowRankViews body_views(const Tensor& body, int64_t b, int64_t m, int64_t n, int64_t r) {
  return {detail::typed_view(body, detail::lowrank_l_offset(), engine::DType::f32, {b, m, r}),
          detail::typed_view(body, detail::lowrank_l_offset() + 4ull * static_cast<uint64_t>(b * m * r),
                             engine::DType::f32, {b, n, r})};
}

// Zeroes the prelude and counts NaN/Inf of a into its status word.
void write_status(const Tensor& a, const Tensor& body) {
  cudaStream_t s = stream();
  uint32_t* status = static_cast<uint32_t*>(body.raw_data());
  DGP_CUDA_CHECK(cudaMemsetAsync(status, 0, detail::lowrank_l_offset(), s));
  const int64_t n = a.numel();
  const unsigned grid = engine::cuda::grid_for(n, kThreads, a.device().index);
  count_nonfinite_kernel<<<grid, kThreads, 0, s>>>(static_cast<const float*>(a.raw_data()), n, status);
  DGP_CUDA_CHECK(cudaGetLastError());
}

Tensor col_scratch(int64_t b, int64_t rows, engine::Device device) {
  return engine::empty({b, rows}, engine::TensorOptions(engine::DType::f64, device));
}

}  // namespace

void power_init_state(const Tensor& state, int64_t r) {
  engine::cuda_kernels::philox_fill(state, engine::PhiloxState{0x90e3u + static_cast<uint64_t>(r), 0}, true);
}

void power_encode(const Tensor& a, const Tensor& state, const Tensor& body, int64_t r, int iters,
                  uint64_t call) {
  const int64_t b = a.size(0), m = a.size(1), n = a.size(2);
  write_status(a, body);
  LowRankViews v = body_views(body, b, m, n, r);
  Tensor at = a.transpose(1, 2);
  Tensor scratch = col_scratch(b, m > n ? m : n, a.device());
  double* col = static_cast<double*>(scratch.raw_data());
  for (int it = 0; it < iters; ++it) {
    orthonormalize(state, col, 0x5151u + call * 1315423911ull, 1);
    engine::cuda_kernels::bmm(v.l, a, state);  // Q = A P
    orthonormalize(v.l, col, 0xa11ceu + call * 2654435761ull, 1);
    engine::cuda_kernels::bmm(state, at, v.l);  // P = A^T Q
  }
  DGP_CUDA_CHECK(
      cudaMemcpyAsync(v.r.raw_data(), state.raw_data(), state.nbytes(), cudaMemcpyDeviceToDevice, stream()));
}

void svd_encode(const Tensor& a, const Tensor& body, int64_t r, int iters, uint64_t call) {
  const int64_t b = a.size(0), m = a.size(1), n = a.size(2);
  int64_t l = r + (r < 8 ? r : 8);
  l = l < m ? l : m;
  l = l < n ? l : n;
  DGP_CHECK(r <= kSvdMaxCudaRank && l <= kSvdMaxCudaRank + 8,
            "svd CUDA encode: rank " << r << " above " << kSvdMaxCudaRank);
  write_status(a, body);
  const engine::Device dev = a.device();
  const engine::TensorOptions f32(engine::DType::f32, dev);
  LowRankViews v = body_views(body, b, m, n, r);
  Tensor at = a.transpose(1, 2);
  Tensor y = engine::empty({b, m, l}, f32), z = engine::empty({b, n, l}, f32);
  Tensor scratch = col_scratch(b, m > n ? m : n, dev);
  double* col = static_cast<double*>(scratch.raw_data());
  cudaStream_t s = stream();
  const uint64_t seed = 0x5dd0u + call * 0x100000001b3ull, stride = 7919u;
  // Omega [b, n, l] goes into z, which is free until the first A^T Y.
  sketch_kernel<<<engine::cuda::grid_for(z.numel(), kThreads, dev.index), kThreads, 0, s>>>(
      static_cast<float*>(z.raw_data()), n * l, z.numel(), seed, stride);
  DGP_CUDA_CHECK(cudaGetLastError());
  engine::cuda_kernels::bmm(y, a, z);  // Y = A Omega
  for (int it = 0; it < iters; ++it) {
    orthonormalize(y, col, seed + 1 + it, stride);
    engine::cuda_kernels::bmm(z, at, y);  // Z = A^T Y
    orthonormalize(z, col, seed + 101 + it, stride);
    engine::cuda_kernels::bmm(y, a, z);  // Y = A Z
  }
  orthonormalize(y, col, seed + 999, stride);  // Q
  engine::cuda_kernels::bmm(z, at, y);         // B^T = A^T Q
  // G = B B^T in double, as the CPU forms it.
  Tensor zd = z.to(engine::DType::f64);
  Tensor g = engine::empty({b, l, l}, engine::TensorOptions(engine::DType::f64, dev));
  engine::cuda_kernels::bmm(g, zd.transpose(1, 2), zd);
  Tensor w = engine::empty({b, l, r}, f32);
  const size_t shared_bytes = (2 * static_cast<size_t>(l) * l + l) * sizeof(double);
  DGP_CUDA_CHECK(cudaFuncSetAttribute(jacobi_top_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(shared_bytes)));
  jacobi_top_kernel<<<static_cast<unsigned>(b), kOrthThreads, shared_bytes, s>>>(
      static_cast<const double*>(g.raw_data()), static_cast<int>(l), static_cast<int>(r),
      static_cast<float*>(w.raw_data()));
  DGP_CUDA_CHECK(cudaGetLastError());
  engine::cuda_kernels::bmm(v.l, y, w);  // L = Q W
  engine::cuda_kernels::bmm(v.r, z, w);  // R = B^T W
}

void lowrank_decode(const Tensor& body, const Tensor& out, int64_t r) {
  const int64_t b = out.size(0), m = out.size(1), n = out.size(2);
  if (out.numel() == 0) return;
  LowRankViews v = body_views(body, b, m, n, r);
  engine::cuda_kernels::bmm(out, v.l, v.r.transpose(1, 2));
}

}  // namespace dgpipe::compress::cuda_kernels
