// CUDA fast quantization (twin of fastquant.cpp). Passes over x: the sample gather (n_s <= 8192 reads), then
// (1) group assignment + per-group min/max (block-private in shared memory, one global atomic per group and
// block) fused with the NaN/Inf count, and (2) the fused group/quantize/pack pass. The sample is sorted by
// one block with a bitonic network in shared memory (8192 keys = 32 KiB). No host synchronisation.
#include "compress/codec_cuda.cuh"
#include "compress/fastquant_kernels.h"
#include "engine/ops.h"

namespace dgpipe::compress::cuda_kernels {
namespace {

constexpr int kMaxGroups = 256;
constexpr int kSample = static_cast<int>(detail::kFastQuantSample);

struct FastState {
  uint32_t bound_key[kMaxGroups];  // K - 1 boundaries
  uint32_t min_key[kMaxGroups];
  uint32_t max_key[kMaxGroups];
  uint32_t nonfinite;
};

__global__ void sample_sort_kernel(InputValues x, int64_t n, int64_t ns, int groups, FastState* st) {
  __shared__ uint32_t keys[kSample];
  int padded = 1;
  while (padded < ns) padded <<= 1;
  for (int j = threadIdx.x; j < padded; j += blockDim.x) {
    if (j < ns) {
      const int64_t i =
          static_cast<int64_t>((static_cast<unsigned long long>(j) * static_cast<unsigned long long>(n)) /
                               static_cast<unsigned long long>(ns));
      keys[j] = float_to_key(x.at(i));
    } else {
      keys[j] = 0xffffffffu;  // sorts last
    }
  }
  __syncthreads();
  for (int size = 2; size <= padded; size <<= 1)
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int j = threadIdx.x; j < padded; j += blockDim.x) {
        const int partner = j ^ stride;
        if (partner > j) {
          const bool ascending = (j & size) == 0;
          const uint32_t a = keys[j], b = keys[partner];
          if ((a > b) == ascending) {
            keys[j] = b;
            keys[partner] = a;
          }
        }
      }
      __syncthreads();
    }
  for (int g = 1 + threadIdx.x; g < groups; g += blockDim.x) {
    int64_t r = (static_cast<int64_t>(g) * ns + groups - 1) / groups - 1;
    st->bound_key[g - 1] = keys[r < 0 ? 0 : r];
  }
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    st->min_key[g] = 0xffffffffu;
    st->max_key[g] = 0u;
  }
  if (threadIdx.x == 0) st->nonfinite = 0;
}

// #{g : bound_g < key}
__device__ __forceinline__ int fast_group(const uint32_t* bounds, int nb, uint32_t key) {
  int lo = 0, hi = nb;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (bounds[mid] < key)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

__global__ void fast_minmax_kernel(InputValues x, int64_t n, int groups, FastState* st) {
  __shared__ uint32_t bounds[kMaxGroups], mn[kMaxGroups], mx[kMaxGroups];
  __shared__ uint32_t bad;
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    if (g + 1 < groups) bounds[g] = st->bound_key[g];
    mn[g] = 0xffffffffu;
    mx[g] = 0u;
  }
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  float v[8];
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  load8(x, n, base, v);
  uint32_t mybad = 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    if (base + k >= n) break;
    const uint32_t key = float_to_key(v[k]);
    const int g = fast_group(bounds, groups - 1, key);
    atomicMin(&mn[g], key);
    atomicMax(&mx[g], key);
    mybad += is_finite_float(v[k]) ? 0u : 1u;
  }
  if (mybad) atomicAdd(&bad, mybad);
  __syncthreads();
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    if (mn[g] != 0xffffffffu) atomicMin(&st->min_key[g], mn[g]);
    if (mx[g] != 0u) atomicMax(&st->max_key[g], mx[g]);
  }
  if (threadIdx.x == 0 && bad) atomicAdd(&st->nonfinite, bad);
}

__global__ void fast_stats_kernel(const FastState* st, int groups, int q_bits, uint8_t* body) {
  if (threadIdx.x == 0) {
    reinterpret_cast<uint32_t*>(body)[0] = st->nonfinite;
    reinterpret_cast<uint32_t*>(body)[1] = 0;
  }
  float* stats = reinterpret_cast<float*>(body + kPreludeBytes);
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    float lo = 0.0f, step = 0.0f;
    if (st->min_key[g] <= st->max_key[g]) {  // non-empty group
      lo = key_to_float(st->min_key[g]);
      step = quant_step(lo, key_to_float(st->max_key[g]), (1u << q_bits) - 1u);
    }
    stats[2 * g] = lo;
    stats[2 * g + 1] = step;
  }
}

__global__ void fast_pack_kernel(InputValues x, int64_t n, uint8_t* body, uint64_t body_bytes,
                                 const FastState* st, int q_bits, int s_bits) {
  __shared__ __align__(16) uint8_t stage[kThreads * 16];
  __shared__ float lo[kMaxGroups], step[kMaxGroups];
  __shared__ uint32_t bounds[kMaxGroups];
  const int groups = 1 << s_bits;
  load_group_stats(body, groups, lo, step);
  for (int g = threadIdx.x; g + 1 < groups; g += blockDim.x) bounds[g] = st->bound_key[g];
  __syncthreads();
  float v[8];
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  load8(x, n, base, v);
  uint32_t codes[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    codes[k] = 0u;
    if (base + k < n) {
      const int g = fast_group(bounds, groups - 1, float_to_key(v[k]));
      codes[k] = (static_cast<uint32_t>(g) << q_bits) | group_value_code(v[k], lo[g], step[g], q_bits);
    }
  }
  const uint64_t off = detail::group_payload_offset(groups);
  store_tile(stage, codes, q_bits + s_bits, body + off, body_bytes - off, blockIdx.x);
}

}  // namespace

void fastquant_encode(const engine::Tensor& x, const engine::Tensor& body, int q_bits, int s_bits) {
  const int64_t n = x.numel();
  const int groups = 1 << s_bits;
  const int64_t ns = detail::fastquant_sample_size(n);
  engine::Tensor scratch = engine::empty({static_cast<int64_t>(sizeof(FastState))},
                                         engine::TensorOptions(engine::DType::u8, x.device()));
  FastState* st = static_cast<FastState*>(scratch.raw_data());
  const InputValues xp = input_values(x, "fastquant");
  uint8_t* bp = static_cast<uint8_t*>(body.raw_data());
  cudaStream_t s = stream();
  DGP_CUDA_CHECK(cudaMemsetAsync(bp, 0, detail::group_payload_offset(groups), s));
  if (n == 0) return;
  sample_sort_kernel<<<1, 1024, 0, s>>>(xp, n, ns, groups, st);
  fast_minmax_kernel<<<tiles(n), kThreads, 0, s>>>(xp, n, groups, st);
  fast_stats_kernel<<<1, 256, 0, s>>>(st, groups, q_bits, bp);
  fast_pack_kernel<<<tiles(n), kThreads, 0, s>>>(xp, n, bp, body.nbytes(), st, q_bits, s_bits);
  DGP_CUDA_CHECK(cudaGetLastError());
}

}  // namespace dgpipe::compress::cuda_kernels
