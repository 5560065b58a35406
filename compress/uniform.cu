// CUDA uniform quantization (twin of uniform.cpp) and the decoder shared by uniform / sortquant / fastquant.
// Encode: 2 passes over x — (1) min/max as order-preserving keys + non-finite count, warp-reduced then one
// atomic per block; (2) fused quantize + bit-pack (16-byte loads, 16-byte stores). A 1-thread kernel between
// them turns the keys into (lo, step) in the body. No host synchronisation.
#include <cub/block/block_reduce.cuh>

#include "compress/codec_cuda.cuh"
#include "compress/uniform_kernels.h"
#include "engine/ops.h"

namespace dgpipe::compress::cuda_kernels {
namespace {

struct MinMaxCount {
  uint32_t lo, hi, bad;
};

__global__ void minmax_kernel(InputValues x, int64_t n, uint32_t* scratch) {
  using Reduce = cub::BlockReduce<uint32_t, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  float v[8];
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  load8(x, n, base, v);
  uint32_t lo = 0xffffffffu, hi = 0u, bad = 0u;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    if (base + k >= n) break;
    const uint32_t key = float_to_key(v[k]);
    lo = min(lo, key);
    hi = max(hi, key);
    bad += is_finite_float(v[k]) ? 0u : 1u;
  }
  uint32_t blo = Reduce(tmp).Reduce(lo, MinOp());
  __syncthreads();
  uint32_t bhi = Reduce(tmp).Reduce(hi, MaxOp());
  __syncthreads();
  uint32_t bbad = Reduce(tmp).Sum(bad);
  if (threadIdx.x == 0) {
    atomicMin(&scratch[0], blo);
    atomicMax(&scratch[1], bhi);
    if (bbad) atomicAdd(&scratch[2], bbad);
  }
}

__global__ void uniform_stats_kernel(const uint32_t* scratch, int64_t n, int q_bits, uint8_t* body) {
  uint32_t* prelude = reinterpret_cast<uint32_t*>(body);
  prelude[0] = scratch[2];
  prelude[1] = 0;
  float lo = 0.0f, hi = 0.0f;
  if (n > 0) {
    lo = key_to_float(scratch[0]);
    hi = key_to_float(scratch[1]);
  }
  float* stats = reinterpret_cast<float*>(body + kPreludeBytes);
  stats[0] = lo;
  stats[1] = quant_step(lo, hi, (1u << q_bits) - 1u);
}

__global__ void uniform_pack_kernel(InputValues x, int64_t n, uint8_t* body, uint64_t body_bytes,
                                    int q_bits) {
  __shared__ __align__(16) uint8_t stage[kThreads * 16];
  const float* stats = reinterpret_cast<const float*>(body + kPreludeBytes);
  const float lo = stats[0], step = stats[1];
  float v[8];
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  load8(x, n, base, v);
  uint32_t codes[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) codes[k] = base + k < n ? uniform_code(v[k], lo, step, q_bits) : 0u;
  const uint64_t off = detail::group_payload_offset(1);
  store_tile(stage, codes, q_bits, body + off, body_bytes - off, blockIdx.x);
}

__global__ void group_decode_kernel(const uint8_t* __restrict__ body, uint64_t body_bytes,
                                    float* __restrict__ out, int64_t n, int q_bits, int s_bits) {
  __shared__ float lo[256], step[256];
  const int groups = 1 << s_bits;
  load_group_stats(body, groups, lo, step);
  __syncthreads();
  const int bits = q_bits + s_bits;
  const uint64_t off = detail::group_payload_offset(groups);
  const uint8_t* payload = body + off;
  const uint64_t nbytes = body_bytes - off;
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  if (base >= n) return;
  // The thread's 8 codes are exactly `bits` bytes starting at base/8*bits.
  uint8_t raw[16];
  const uint64_t start = static_cast<uint64_t>(base / 8) * bits;
#pragma unroll
  for (int b = 0; b < 16; ++b) raw[b] = (b < bits && start + b < nbytes) ? payload[start + b] : 0;
  const uint32_t qmask = (1u << q_bits) - 1u;
  float v[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const uint32_t code = get_bits(raw, 16, k, bits);
    const uint32_t g = code >> q_bits;
    v[k] = dequant(code & qmask, lo[g], step[g]);
  }
  if (base + 8 <= n && (reinterpret_cast<uintptr_t>(out + base) & 15) == 0) {
    reinterpret_cast<float4*>(out + base)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(out + base)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    for (int k = 0; k < 8 && base + k < n; ++k) out[base + k] = v[k];
  }
}

}  // namespace

void uniform_encode(const engine::Tensor& x, const engine::Tensor& body, int q_bits) {
  const int64_t n = x.numel();
  engine::Tensor scratch = engine::empty({4}, engine::TensorOptions(engine::DType::i32, x.device()));
  uint32_t* s = static_cast<uint32_t*>(scratch.raw_data());
  // lo = all ones (max key), hi = 0, bad = 0
  DGP_CUDA_CHECK(cudaMemsetAsync(s, 0xff, 4, stream()));
  DGP_CUDA_CHECK(cudaMemsetAsync(s + 1, 0, 12, stream()));
  // Prelude, stats and padding; the pack kernel writes every payload byte.
  DGP_CUDA_CHECK(cudaMemsetAsync(body.raw_data(), 0, detail::group_payload_offset(1), stream()));
  const InputValues xp = input_values(x, "uniform");
  uint8_t* bp = static_cast<uint8_t*>(body.raw_data());
  if (n > 0) minmax_kernel<<<tiles(n), kThreads, 0, stream()>>>(xp, n, s);
  uniform_stats_kernel<<<1, 1, 0, stream()>>>(s, n, q_bits, bp);
  if (n > 0) uniform_pack_kernel<<<tiles(n), kThreads, 0, stream()>>>(xp, n, bp, body.nbytes(), q_bits);
  DGP_CUDA_CHECK(cudaGetLastError());
}

void group_decode(const engine::Tensor& body, const engine::Tensor& out, int q_bits, int s_bits) {
  const int64_t n = out.numel();
  if (n == 0) return;
  group_decode_kernel<<<tiles(n), kThreads, 0, stream()>>>(static_cast<const uint8_t*>(body.raw_data()),
                                                           body.nbytes(), static_cast<float*>(out.raw_data()),
                                                           n, q_bits, s_bits);
  DGP_CUDA_CHECK(cudaGetLastError());
}

}  // namespace dgpipe::compress::cuda_kernels
