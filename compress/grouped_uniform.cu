// CUDA grouped uniform quantization (twin of grouped_uniform.cpp).
// Encode: 2 passes over x and a small kernel between them.
//   (1) group min/max as order-preserving keys, and the non-finite count. A thread's 8 elements usually lie
//   in
//       one segment (`inner` consecutive elements, one group), so the lanes of a warp that hold the same
//       group combine their keys with one warp reduction and one pair of atomics per group
//       (__match_any_sync); a thread whose elements cross a segment boundary updates per element.
//   (2) one thread per group turns its keys into (lo, step) in the body (and thread 0 writes the status
//   word); (3) fused quantize + bit-pack, the group of each element from its position (16-byte loads and
//   stores).
// Decode: one pass. No host synchronisation.
#include <cub/block/block_reduce.cuh>

#include "compress/codec_cuda.cuh"
#include "compress/grouped_uniform_kernels.h"

namespace dgpipe::compress::cuda_kernels {
namespace {

__global__ void grouped_minmax_kernel(InputValues x, int64_t n, int64_t groups, int64_t inner,
                                      uint32_t* lo_keys, uint32_t* hi_keys, uint32_t* bad_count) {
  using Reduce = cub::BlockReduce<uint32_t, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  float v[8];
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  load8(x, n, base, v);
  const bool any = base < n;
  const int64_t last = base + kPerThread <= n ? base + kPerThread - 1 : n - 1;
  const bool single = any && base / inner == last / inner;
  const int64_t g0 = any ? detail::element_group(base, groups, inner) : 0;
  uint32_t lo = 0xffffffffu, hi = 0u, bad = 0u;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    if (base + k >= n) break;
    const uint32_t key = float_to_key(v[k]);
    bad += is_finite_float(v[k]) ? 0u : 1u;
    if (single) {
      lo = min(lo, key);
      hi = max(hi, key);
    } else {
      const int64_t g = detail::element_group(base + k, groups, inner);
      atomicMin(&lo_keys[g], key);
      atomicMax(&hi_keys[g], key);
    }
  }
  // Every lane takes part in the match (a lane without a single group gets a tag no other lane has).
  const unsigned lane = threadIdx.x & 31u;
  const unsigned long long tag = single ? static_cast<unsigned long long>(g0) : (1ull << 63) | lane;
  const unsigned peers = __match_any_sync(0xffffffffu, tag);
  if (single) {
    const uint32_t warp_lo = __reduce_min_sync(peers, lo);
    const uint32_t warp_hi = __reduce_max_sync(peers, hi);
    if (lane == static_cast<unsigned>(__ffs(static_cast<int>(peers)) - 1)) {
      atomicMin(&lo_keys[g0], warp_lo);
      atomicMax(&hi_keys[g0], warp_hi);
    }
  }
  const uint32_t block_bad = Reduce(tmp).Sum(bad);
  if (threadIdx.x == 0 && block_bad) atomicAdd(bad_count, block_bad);
}

__global__ void grouped_stats_kernel(const uint32_t* lo_keys, const uint32_t* hi_keys,
                                     const uint32_t* bad_count, int64_t n, int64_t groups, int q_bits,
                                     uint8_t* body) {
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g == 0) {
    uint32_t* prelude = reinterpret_cast<uint32_t*>(body);
    prelude[0] = *bad_count;
    prelude[1] = 0;
  }
  if (g >= groups) return;
  float lo = 0.0f, hi = 0.0f;  // an empty tensor: every group (0, 0), as on the CPU
  if (n > 0) {
    lo = key_to_float(lo_keys[g]);
    hi = key_to_float(hi_keys[g]);
  }
  float* stats = reinterpret_cast<float*>(body + detail::group_stats_offset());
  stats[2 * g] = lo;
  stats[2 * g + 1] = quant_step(lo, hi, (1u << q_bits) - 1u);
}

__global__ void grouped_pack_kernel(InputValues x, int64_t n, int64_t groups, int64_t inner, uint8_t* body,
                                    uint64_t body_bytes, int q_bits) {
  __shared__ __align__(16) uint8_t stage[kThreads * 16];
  const float* stats = reinterpret_cast<const float*>(body + detail::group_stats_offset());
  float v[8];
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  load8(x, n, base, v);
  uint32_t codes[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    codes[k] = 0u;
    if (base + k < n) {
      const int64_t g = detail::element_group(base + k, groups, inner);
      codes[k] = uniform_code(v[k], stats[2 * g], stats[2 * g + 1], q_bits);
    }
  }
  const uint64_t off = detail::group_payload_offset(static_cast<int>(groups));
  store_tile(stage, codes, q_bits, body + off, body_bytes - off, blockIdx.x);
}

__global__ void grouped_decode_kernel(const uint8_t* __restrict__ body, uint64_t body_bytes,
                                      float* __restrict__ out, int64_t n, int64_t groups, int64_t inner,
                                      int q_bits) {
  const float* stats = reinterpret_cast<const float*>(body + detail::group_stats_offset());
  const uint64_t off = detail::group_payload_offset(static_cast<int>(groups));
  const uint8_t* payload = body + off;
  const uint64_t nbytes = body_bytes - off;
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  if (base >= n) return;
  uint8_t raw[16];
  load_code_bytes(payload, nbytes, base, q_bits, raw);
  float v[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int64_t g = detail::element_group(base + k < n ? base + k : n - 1, groups, inner);
    v[k] = dequant(get_bits(raw, 16, k, q_bits), stats[2 * g], stats[2 * g + 1]);
  }
  store8(out, n, base, v);
}

}  // namespace

void grouped_uniform_encode(const engine::Tensor& x, const engine::Tensor& body, int q_bits, int64_t groups,
                            int64_t inner) {
  const int64_t n = x.numel();
  // keys: lo[groups] (all ones = the largest key), hi[groups] (0), then the non-finite count (0)
  engine::Tensor scratch =
      engine::empty({2 * groups + 1}, engine::TensorOptions(engine::DType::i32, x.device()));
  uint32_t* lo_keys = static_cast<uint32_t*>(scratch.raw_data());
  uint32_t* hi_keys = lo_keys + groups;
  DGP_CUDA_CHECK(cudaMemsetAsync(lo_keys, 0xff, 4 * groups, stream()));
  DGP_CUDA_CHECK(cudaMemsetAsync(hi_keys, 0, 4 * (groups + 1), stream()));
  // Prelude, statistics and padding; the pack kernel writes every payload byte.
  DGP_CUDA_CHECK(
      cudaMemsetAsync(body.raw_data(), 0, detail::group_payload_offset(static_cast<int>(groups)), stream()));
  const InputValues xp = input_values(x, "uniform:Q/channel|row");
  uint8_t* bp = static_cast<uint8_t*>(body.raw_data());
  if (n > 0)
    grouped_minmax_kernel<<<tiles(n), kThreads, 0, stream()>>>(xp, n, groups, inner, lo_keys, hi_keys,
                                                               hi_keys + groups);
  const int64_t stat_blocks = groups > 0 ? (groups + kThreads - 1) / kThreads : 1;
  grouped_stats_kernel<<<stat_blocks, kThreads, 0, stream()>>>(lo_keys, hi_keys, hi_keys + groups, n, groups,
                                                               q_bits, bp);
  if (n > 0)
    grouped_pack_kernel<<<tiles(n), kThreads, 0, stream()>>>(xp, n, groups, inner, bp, body.nbytes(), q_bits);
  DGP_CUDA_CHECK(cudaGetLastError());
}

void grouped_uniform_decode(const engine::Tensor& body, const engine::Tensor& out, int q_bits, int64_t groups,
                            int64_t inner) {
  const int64_t n = out.numel();
  if (n == 0) return;
  grouped_decode_kernel<<<tiles(n), kThreads, 0, stream()>>>(
      static_cast<const uint8_t*>(body.raw_data()), body.nbytes(), static_cast<float*>(out.raw_data()), n,
      groups, inner, q_bits);
  DGP_CUDA_CHECK(cudaGetLastError());
}

}  // namespace dgpipe::compress::cuda_kernels
