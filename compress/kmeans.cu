// CUDA 1-D k-means (twin of kmeans.cpp): the same init, Lloyd iterations and final assignment, on the device.
//
//  init      the strided sample (n_s = min(N, 65536) gathered reads) is sorted with CUB's radix sort and the
//            centroids are its (2j+1)/2K quantiles, as on the CPU;
//  iteration one pass over x: nearest centroid by binary search over the K - 1 double midpoints (in shared
//  memory
//            for K <= 1024), sums in double and counts accumulated per block in shared memory
//            (warp-aggregated when lanes of a warp hit the same cluster, as post-ReLU zeros do) and flushed
//            with one atomic per cluster and block; then a one-block kernel divides, measures the largest
//            move, sorts the K centroids (bitonic, shared memory), recomputes the midpoints and raises a
//            `done` flag on the device when no centroid moved by more than 1e-6 of the sample range. All I
//            iterations are launched up front; after `done` they return at once, so the host never waits.
//            Memory: the K-entry state plus the sample, O(N_s + K).
//  final     f32 centroids into the body, then one pass: binary search over the f32 midpoints, the CPU's
//            distance check at the boundary, B-bit codes packed 8 per thread (16-byte stores) and NaN/Inf
//            counted.
// Passes over x: (iterations run) + 1. Why results can differ from the CPU in the last bits: the CPU adds
// each cluster's members in index order, the GPU in an order set by its atomics, so the double sums (and
// therefore the centroids) can differ by a few units in the last place of a double. That changes the f32
// centroids only when a double lands next to an f32 rounding boundary, flips a code only for an element
// within that distance of a midpoint, and changes the iteration count only when the largest move is within
// rounding of the threshold.
#include <cub/device/device_radix_sort.cuh>

#include "compress/codec_cuda.cuh"
#include "compress/kmeans_kernels.h"
#include "engine/ops.h"

namespace dgpipe::compress::cuda_kernels {
namespace {

constexpr int kMaxCentroids = 4096;     // B <= 12
constexpr int kSharedCentroids = 1024;  // per-block shared sums up to this K
constexpr int64_t kMaxSample = 65536;   // as kmeans.cpp

struct KMeansState {
  double c[kMaxCentroids];
  double mids[kMaxCentroids];
  double sum[kMaxCentroids];
  unsigned long long count[kMaxCentroids];
  float fmids[kMaxCentroids];
  double range;
  int done;
};

__global__ void kmeans_sample_kernel(InputValues x, int64_t n, int64_t ns, float* __restrict__ sample) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < ns) sample[j] = x.at((j * n) / ns);
}

__global__ void kmeans_init_kernel(KMeansState* st, const float* __restrict__ sorted, int64_t ns, int k) {
  for (int j = threadIdx.x; j < k; j += blockDim.x) {
    int64_t at = ((2 * static_cast<int64_t>(j) + 1) * ns) / (2 * k);
    st->c[j] = sorted[at < ns - 1 ? at : ns - 1];
    st->sum[j] = 0.0;
    st->count[j] = 0;
  }
  __syncthreads();
  for (int j = threadIdx.x; j + 1 < k; j += blockDim.x) st->mids[j] = 0.5 * (st->c[j] + st->c[j + 1]);
  if (threadIdx.x == 0) {
    st->range = static_cast<double>(sorted[ns - 1]) - static_cast<double>(sorted[0]);
    st->done = 0;
  }
}

// #{j < count : mids[j] <= v} (std::upper_bound), for double and float midpoints.
template <class T>
__device__ __forceinline__ int upper_bound_index(const T* mids, int count, T v) {
  int lo = 0, hi = count;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (mids[mid] <= v)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

__device__ __forceinline__ void atomic_add_count(unsigned* p, unsigned v) {
  atomicAdd(p, v);
}
__device__ __forceinline__ void atomic_add_count(unsigned long long* p, unsigned v) {
  atomicAdd(p, static_cast<unsigned long long>(v));
}

// Adds v to cluster c (c < 0: inactive lane). The whole warp calls it. When lanes share a cluster, the leader
// of each set of peers adds their sum and count once, so a heavily repeated value does not serialise on one
// address.
template <class CountT>
__device__ __forceinline__ void add_to_cluster(int c, double v, double* sums, CountT* counts) {
  const unsigned peers = __match_any_sync(0xffffffffu, c);
  if (__all_sync(0xffffffffu, __popc(peers) == 1)) {
    if (c >= 0) {
      atomicAdd(&sums[c], v);
      atomic_add_count(&counts[c], 1u);
    }
    return;
  }
  double acc = 0.0;
  for (int src = 0; src < 32; ++src) {
    const double other = __shfl_sync(0xffffffffu, v, src);
    if ((peers >> src) & 1u) acc += other;
  }
  if (c >= 0 && (threadIdx.x & 31) == __ffs(peers) - 1) {
    atomicAdd(&sums[c], acc);
    atomic_add_count(&counts[c], static_cast<unsigned>(__popc(peers)));
  }
}

// One Lloyd assignment pass (grid-stride over tiles; every thread of a block runs the same number of rounds).
template <bool kShared>
__global__ void kmeans_assign_kernel(InputValues x, int64_t n, KMeansState* st, int k) {
  if (st->done) return;  // converged in an earlier iteration (uniform across the grid)
  __shared__ double sh_mids[kShared ? kSharedCentroids : 1], sh_sum[kShared ? kSharedCentroids : 1];
  __shared__ unsigned sh_count[kShared ? kSharedCentroids : 1];
  if (kShared) {
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
      sh_mids[j] = j + 1 < k ? st->mids[j] : 0.0;
      sh_sum[j] = 0.0;
      sh_count[j] = 0;
    }
    __syncthreads();
  }
  const double* mids = kShared ? sh_mids : st->mids;
  const int64_t ntiles = (n + kTileElems - 1) / kTileElems;
  for (int64_t tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
    float v[8];
    const int64_t base = (tile * kThreads + threadIdx.x) * kPerThread;
    load8(x, n, base, v);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const bool in = base + j < n;
      const double value = in ? static_cast<double>(v[j]) : 0.0;
      const int c = in ? upper_bound_index(mids, k - 1, value) : -1;
      if (kShared)
        add_to_cluster(c, value, sh_sum, sh_count);
      else
        add_to_cluster(c, value, st->sum, st->count);
    }
  }
  if (kShared) {
    __syncthreads();
    for (int j = threadIdx.x; j < k; j += blockDim.x)
      if (sh_count[j]) {
        atomicAdd(&st->sum[j], sh_sum[j]);
        atomicAdd(&st->count[j], static_cast<unsigned long long>(sh_count[j]));
      }
  }
}

// New centroids, largest move, sort, midpoints, convergence flag. One block of 1024 threads.
__global__ void kmeans_update_kernel(KMeansState* st, int k) {
  if (st->done) return;
  __shared__ double cs[kMaxCentroids];
  __shared__ double warp_max[32];
  double moved = 0.0;
  for (int j = threadIdx.x; j < k; j += blockDim.x) {
    double c = st->c[j];
    const unsigned long long cnt = st->count[j];
    if (cnt) {  // an empty cluster keeps its centroid
      const double nc = st->sum[j] / static_cast<double>(cnt);
      moved = fmax(moved, fabs(nc - c));
      c = nc;
    }
    cs[j] = c;
    st->sum[j] = 0.0;
    st->count[j] = 0;
  }
  for (int off = 16; off > 0; off >>= 1) moved = fmax(moved, __shfl_xor_sync(0xffffffffu, moved, off));
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = moved;
  // Bitonic sort of cs (k is a power of two); Lloyd keeps 1-D centroids ordered, this guards rounding as the
  // CPU's std::sort does.
  for (int size = 2; size <= k; size <<= 1)
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      __syncthreads();
      for (int i = threadIdx.x; i < k; i += blockDim.x) {
        const int partner = i ^ stride;
        if (partner > i) {
          const bool ascending = (i & size) == 0;
          const double a = cs[i], b = cs[partner];
          if ((a > b) == ascending) {
            cs[i] = b;
            cs[partner] = a;
          }
        }
      }
    }
  __syncthreads();
  for (int j = threadIdx.x; j < k; j += blockDim.x) {
    st->c[j] = cs[j];
    if (j + 1 < k) st->mids[j] = 0.5 * (cs[j] + cs[j + 1]);
  }
  if (threadIdx.x == 0) {
    double m = 0.0;
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) m = fmax(m, warp_max[w]);
    if (m <= 1e-6 * st->range) st->done = 1;
  }
}

// f32 centroids into the body and f32 midpoints for the final assignment.
__global__ void kmeans_finalize_kernel(KMeansState* st, int k, uint8_t* body) {
  float* cf = reinterpret_cast<float*>(body + kPreludeBytes);
  for (int j = threadIdx.x; j < k; j += blockDim.x) {
    const float a = static_cast<float>(st->c[j]);
    cf[j] = a;
    if (j + 1 < k) st->fmids[j] = fmul(0.5f, fadd(a, static_cast<float>(st->c[j + 1])));
  }
}

__global__ void kmeans_pack_kernel(InputValues x, int64_t n, const KMeansState* st, int k, int bits,
                                   uint8_t* body, uint64_t body_bytes, uint64_t payload_offset) {
  __shared__ float cf[kMaxCentroids], fm[kMaxCentroids];
  __shared__ __align__(16) uint8_t stage[kThreads * 16];
  __shared__ unsigned sh_bad;
  const float* body_c = reinterpret_cast<const float*>(body + kPreludeBytes);
  for (int j = threadIdx.x; j < k; j += blockDim.x) {
    cf[j] = body_c[j];
    fm[j] = j + 1 < k ? st->fmids[j] : 0.0f;
  }
  if (threadIdx.x == 0) sh_bad = 0;
  __syncthreads();
  float v[8];
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  load8(x, n, base, v);
  uint32_t codes[8];
  unsigned bad = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    codes[j] = 0;
    if (base + j >= n) continue;
    const float value = v[j];
    bad += is_finite_float(value) ? 0u : 1u;
    int c = upper_bound_index(fm, k - 1, value);
    // Midpoints are rounded; settle the boundary case by the actual distances (as the CPU does).
    if (c > 0 && fabsf(fsub(value, cf[c - 1])) < fabsf(fsub(value, cf[c]))) --c;
    if (c + 1 < k && fabsf(fsub(value, cf[c + 1])) < fabsf(fsub(value, cf[c]))) ++c;
    codes[j] = static_cast<uint32_t>(c);
  }
  if (bad) atomicAdd(&sh_bad, bad);
  store_tile(stage, codes, bits, body + payload_offset, body_bytes - payload_offset, blockIdx.x);
  __syncthreads();
  if (threadIdx.x == 0 && sh_bad) atomicAdd(reinterpret_cast<uint32_t*>(body), sh_bad);
}

__global__ void kmeans_decode_kernel(const uint8_t* __restrict__ body, uint64_t body_bytes,
                                     float* __restrict__ out, int64_t n, int bits, uint64_t payload_offset) {
  __shared__ float cf[kMaxCentroids];
  const int k = 1 << bits;
  const float* body_c = reinterpret_cast<const float*>(body + kPreludeBytes);
  for (int j = threadIdx.x; j < k; j += blockDim.x) cf[j] = body_c[j];
  __syncthreads();
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  if (base >= n) return;
  // The thread's 8 codes are exactly `bits` bytes starting at base/8*bits.
  const uint8_t* payload = body + payload_offset;
  const uint64_t nbytes = body_bytes - payload_offset;
  const uint64_t start = static_cast<uint64_t>(base / 8) * bits;
  uint8_t raw[16];
#pragma unroll
  for (int b = 0; b < 16; ++b) raw[b] = (b < bits && start + b < nbytes) ? payload[start + b] : 0;
  float v[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] = cf[get_bits(raw, 16, j, bits)];
  if (base + 8 <= n && (reinterpret_cast<uintptr_t>(out + base) & 15) == 0) {
    reinterpret_cast<float4*>(out + base)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(out + base)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    for (int j = 0; j < 8 && base + j < n; ++j) out[base + j] = v[j];
  }
}

}  // namespace

void kmeans_encode(const engine::Tensor& x, const engine::Tensor& body, int bits, int iters) {
  DGP_CHECK(bits >= 1 && bits <= 12, "kmeans CUDA encode: bits " << bits << " outside [1, 12]");
  const int64_t n = x.numel();
  const int k = 1 << bits;
  const uint64_t payload_offset = detail::kmeans_payload_offset(k);
  cudaStream_t s = stream();
  uint8_t* bp = static_cast<uint8_t*>(body.raw_data());
  // Prelude (status word, accumulated by the pack kernel), centroids (written by finalize) and pad.
  DGP_CUDA_CHECK(cudaMemsetAsync(bp, 0, payload_offset, s));
  if (n == 0) return;  // the CPU reference sends zero centroids and no codes
  const int64_t ns = n < kMaxSample ? n : kMaxSample;
  size_t sort_bytes = 0;
  DGP_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(nullptr, sort_bytes, static_cast<const float*>(nullptr),
                                                static_cast<float*>(nullptr), ns, 0, 32, s));
  auto round256 = [](size_t v) { return (v + 255) & ~size_t(255); };
  const size_t state_bytes = round256(sizeof(KMeansState));
  const size_t sample_bytes = round256(static_cast<size_t>(ns) * sizeof(float));
  engine::Tensor scratch = engine::empty({static_cast<int64_t>(state_bytes + 2 * sample_bytes + sort_bytes)},
                                         engine::TensorOptions(engine::DType::u8, x.device()));
  uint8_t* sp = static_cast<uint8_t*>(scratch.raw_data());
  KMeansState* st = reinterpret_cast<KMeansState*>(sp);
  float* sample = reinterpret_cast<float*>(sp + state_bytes);
  float* sorted = reinterpret_cast<float*>(sp + state_bytes + sample_bytes);
  void* sort_tmp = sp + state_bytes + 2 * sample_bytes;
  const InputValues xp = input_values(x, "kmeans");

  kmeans_sample_kernel<<<static_cast<unsigned>((ns + kThreads - 1) / kThreads), kThreads, 0, s>>>(xp, n, ns,
                                                                                                  sample);
  DGP_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(sort_tmp, sort_bytes, sample, sorted, ns, 0, 32, s));
  kmeans_init_kernel<<<1, 1024, 0, s>>>(st, sorted, ns, k);
  const int64_t ntiles = tiles(n);
  const int sms = engine::cuda::sm_count(x.device().index);
  // Shared sums flush one atomic per cluster and block: keep the grid near two blocks per SM.
  const int64_t cap = static_cast<int64_t>(sms) * (k <= kSharedCentroids ? 2 : 4);
  const unsigned grid = static_cast<unsigned>(ntiles < cap ? ntiles : cap);
  for (int it = 0; it < iters; ++it) {
    if (k <= kSharedCentroids)
      kmeans_assign_kernel<true><<<grid, kThreads, 0, s>>>(xp, n, st, k);
    else
      kmeans_assign_kernel<false><<<grid, kThreads, 0, s>>>(xp, n, st, k);
    kmeans_update_kernel<<<1, 1024, 0, s>>>(st, k);
  }
  kmeans_finalize_kernel<<<1, 1024, 0, s>>>(st, k, bp);
  kmeans_pack_kernel<<<ntiles, kThreads, 0, s>>>(xp, n, st, k, bits, bp, body.nbytes(), payload_offset);
  DGP_CUDA_CHECK(cudaGetLastError());
}

void kmeans_decode(const engine::Tensor& body, const engine::Tensor& out, int bits) {
  const int64_t n = out.numel();
  if (n == 0) return;
  kmeans_decode_kernel<<<tiles(n), kThreads, 0, stream()>>>(
      static_cast<const uint8_t*>(body.raw_data()), body.nbytes(), static_cast<float*>(out.raw_data()), n,
      bits, detail::kmeans_payload_offset(1 << bits));
  DGP_CUDA_CHECK(cudaGetLastError());
}

}  // namespace dgpipe::compress::cuda_kernels
