// CUDA top-k (twin of topk.cpp): radix select of the k-th largest magnitude, then an order-preserving
// compaction.
//
// Keys are the bit patterns of |x| (31 bits; for non-negative floats the unsigned order is the float order,
// and -0 and +0 are both key 0). The order is "larger key first, then smaller flat index", exactly the CPU
// tie rule.
//  1. Select (3 passes over x, digits of 11, 11 and 9 bits): each pass histograms, in shared memory with
//     warp-aggregated increments, the next digit of the keys whose higher digits equal the prefix chosen so
//     far (counted from the top, so the histogram is in descending key order); a one-block kernel scans the
//     histogram and picks the digit that holds rank k - 1. The result is the threshold key T and needed = how
//     many of the elements with key T are kept (k - #{key > T}). The first pass also counts NaN/Inf for the
//     status word.
//  2. Count (1 pass): per tile of 2048 elements, #{key > T} and #{key == T}; an exclusive device scan over
//  tiles.
//  3. Scatter (1 pass): an element is kept if key > T, or key == T and fewer than `needed` equal keys precede
//  it in
//     flat index order (tile prefix + block scan); its output slot is the number of kept elements before it,
//     so the values land in increasing index order, as the CPU's sorted indices. Values go straight into the
//     body, indices into a k-entry scratch array.
//  4. Pack: 8 indices per thread into exactly index_bits(N) bytes of the payload (the CPU's bit layout).
// Passes over x: 5 reads; writes: 4k value bytes + 4k scratch bytes + the packed indices. No host
// synchronisation.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_scan.cuh>

#include "compress/codec_cuda.cuh"
#include "compress/topk_kernels.h"
#include "engine/ops.h"

namespace dgpipe::compress::cuda_kernels {
namespace {

constexpr int kPasses = 3;
constexpr int kHistBins = 2048;
__host__ __device__ constexpr int digit_shift(int pass) {
  return pass == 0 ? 20 : (pass == 1 ? 9 : 0);
}
__host__ __device__ constexpr int digit_width(int pass) {
  return pass == 2 ? 9 : 11;
}

struct TopkState {
  uint32_t prefix;  // key bits chosen so far (real, not descending, digits)
  uint32_t nonfinite;
  unsigned long long remaining;  // rank of the target among the live keys, in descending order
  unsigned long long needed;     // after the select: how many keys equal to T are kept
};

struct TileCounts {
  unsigned long long greater, equal;
};
struct AddTileCounts {
  __host__ __device__ TileCounts operator()(const TileCounts& a, const TileCounts& b) const {
    return {a.greater + b.greater, a.equal + b.equal};
  }
};

__device__ __forceinline__ uint32_t magnitude_key(float v) {
  return __float_as_uint(v) & 0x7fffffffu;
}

__device__ __forceinline__ uint64_t kept_before_tile(const TileCounts& t, unsigned long long needed) {
  return t.greater + (t.equal < needed ? t.equal : needed);
}

__global__ void topk_init_kernel(TopkState* st, int64_t k) {
  st->prefix = 0;
  st->nonfinite = 0;
  st->remaining = static_cast<unsigned long long>(k - 1);
  st->needed = 0;
}

__global__ void topk_hist_kernel(InputValues x, int64_t n, int pass, TopkState* st,
                                 uint32_t* __restrict__ hist) {
  __shared__ uint32_t sh_hist[kHistBins];
  __shared__ uint32_t sh_bad;
  const int width = digit_width(pass), shift = digit_shift(pass);
  const uint32_t mask = (1u << width) - 1u;
  for (int i = threadIdx.x; i < (1 << width); i += blockDim.x) sh_hist[i] = 0;
  if (threadIdx.x == 0) sh_bad = 0;
  const uint32_t prefix = st->prefix;
  const int prev_shift = pass > 0 ? digit_shift(pass - 1) : 32;
  __syncthreads();
  float v[8];
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  load8(x, n, base, v);
  uint32_t bad = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    uint32_t bin = 0xffffffffu;
    if (base + j < n) {
      const uint32_t key = magnitude_key(v[j]);
      if (pass == 0) bad += is_finite_float(v[j]) ? 0u : 1u;
      const bool live = pass == 0 || (key >> prev_shift) == prefix;
      if (live) bin = mask - ((key >> shift) & mask);  // descending: the largest digit is bin 0
    }
    // Warp-aggregated: heavy ties (post-ReLU zeros, saturated values) would serialise on one counter.
    const unsigned peers = __match_any_sync(0xffffffffu, bin);
    if (bin != 0xffffffffu && (threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&sh_hist[bin], __popc(peers));
  }
  if (pass == 0 && bad) atomicAdd(&sh_bad, bad);
  __syncthreads();
  for (int i = threadIdx.x; i < (1 << width); i += blockDim.x)
    if (sh_hist[i]) atomicAdd(&hist[i], sh_hist[i]);
  if (pass == 0 && threadIdx.x == 0 && sh_bad) atomicAdd(&st->nonfinite, sh_bad);
}

// One block of 1024 threads, 2 bins each: finds the bin holding the target rank and narrows the prefix.
__global__ void topk_pick_kernel(TopkState* st, const uint32_t* __restrict__ hist, int pass, uint8_t* body) {
  using Scan = cub::BlockScan<unsigned long long, 1024>;
  __shared__ typename Scan::TempStorage tmp;
  const int width = digit_width(pass);
  const uint32_t mask = (1u << width) - 1u;
  const int bins = 1 << width;
  unsigned long long counts[2], before[2];
  for (int j = 0; j < 2; ++j) {
    const int b = 2 * threadIdx.x + j;
    counts[j] = b < bins ? hist[b] : 0ull;
  }
  Scan(tmp).ExclusiveSum(counts, before);
  const unsigned long long rem = st->remaining;
  __syncthreads();  // every thread has read `remaining` before it changes
  for (int j = 0; j < 2; ++j) {
    const int b = 2 * threadIdx.x + j;
    if (b < bins && before[j] <= rem && rem < before[j] + counts[j]) {
      st->remaining = rem - before[j];
      st->prefix = (st->prefix << width) | (mask - static_cast<uint32_t>(b));
      if (pass == kPasses - 1) {
        // remaining = rank of the target among the keys equal to T, all larger keys being kept before them.
        st->needed = rem - before[j] + 1;
        uint32_t* prelude = reinterpret_cast<uint32_t*>(body);
        prelude[0] = st->nonfinite;
        prelude[1] = 0;
      }
    }
  }
}

__global__ void topk_count_kernel(InputValues x, int64_t n, const TopkState* st,
                                  TileCounts* __restrict__ tiles_out) {
  using Reduce = cub::BlockReduce<unsigned, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const uint32_t threshold = st->prefix;
  float v[8];
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  load8(x, n, base, v);
  unsigned gt = 0, eq = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    if (base + j >= n) break;
    const uint32_t key = magnitude_key(v[j]);
    gt += key > threshold ? 1u : 0u;
    eq += key == threshold ? 1u : 0u;
  }
  const unsigned bgt = Reduce(tmp).Sum(gt);
  __syncthreads();
  const unsigned beq = Reduce(tmp).Sum(eq);
  if (threadIdx.x == 0) tiles_out[blockIdx.x] = {bgt, beq};
}

__global__ void topk_scatter_kernel(InputValues x, int64_t n, const TopkState* st,
                                    const TileCounts* __restrict__ tile_prefix, float* __restrict__ values,
                                    uint32_t* __restrict__ indices) {
  using Scan = cub::BlockScan<unsigned, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const uint32_t threshold = st->prefix;
  const unsigned long long needed = st->needed;
  const TileCounts tile = tile_prefix[blockIdx.x];
  float v[8];
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  load8(x, n, base, v);
  bool gt[8], eq[8];
  unsigned eq_mine = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const bool in = base + j < n;
    const uint32_t key = magnitude_key(v[j]);
    gt[j] = in && key > threshold;
    eq[j] = in && key == threshold;
    eq_mine += eq[j] ? 1u : 0u;
  }
  unsigned eq_before;
  Scan(tmp).ExclusiveSum(eq_mine, eq_before);
  __syncthreads();
  unsigned long long ordinal = tile.equal + eq_before;  // equal keys before this thread's first element
  bool keep[8];
  unsigned keep_mine = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    keep[j] = gt[j];
    if (eq[j]) keep[j] = ordinal++ < needed;
    keep_mine += keep[j] ? 1u : 0u;
  }
  unsigned keep_before;
  Scan(tmp).ExclusiveSum(keep_mine, keep_before);
  uint64_t slot = kept_before_tile(tile, needed) + keep_before;
#pragma unroll
  for (int j = 0; j < 8; ++j)
    if (keep[j]) {
      values[slot] = v[j];
      indices[slot] = static_cast<uint32_t>(base + j);
      ++slot;
    }
}

// Thread t packs indices [8t, 8t+8) into exactly `bits` bytes at byte 8t*bits/8 = t*bits.
__global__ void topk_pack_kernel(const uint32_t* __restrict__ indices, int64_t k, int bits, uint8_t* payload,
                                 uint64_t payload_bytes) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t * 8 >= k) return;
  uint32_t codes[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) codes[j] = t * 8 + j < k ? indices[t * 8 + j] : 0u;
  uint8_t packed[32];
  pack8(codes, bits, packed);
  const uint64_t start = static_cast<uint64_t>(t) * bits;
  for (int b = 0; b < bits; ++b)
    if (start + b < payload_bytes) payload[start + b] = packed[b];
}

__global__ void topk_decode_kernel(const uint8_t* __restrict__ body, uint64_t body_bytes, int64_t k, int bits,
                                   uint64_t index_offset, float* __restrict__ out, int64_t n) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= k) return;
  const uint32_t i = get_bits(body + index_offset, body_bytes - index_offset, static_cast<uint64_t>(j), bits);
  if (static_cast<int64_t>(i) < n) out[i] = reinterpret_cast<const float*>(body + kPreludeBytes)[j];
}

}  // namespace

void topk_encode(const engine::Tensor& x, const engine::Tensor& body, int64_t k) {
  const int64_t n = x.numel();
  DGP_CHECK(n < (int64_t(1) << 32), "topk CUDA encode: " << n << " elements (at most 2^32 - 1 supported)");
  cudaStream_t s = stream();
  uint8_t* bp = static_cast<uint8_t*>(body.raw_data());
  const uint64_t index_offset = detail::topk_index_offset(k);
  if (k == 0) {  // empty tensor: prelude only
    DGP_CUDA_CHECK(cudaMemsetAsync(bp, 0, body.nbytes(), s));
    return;
  }
  const int bits = index_bits(n);
  const int64_t ntiles = tiles(n);
  // Scratch: state | 3 histograms | tile counts (scanned in place) | k indices | CUB temporary storage.
  size_t scan_bytes = 0;
  DGP_CUDA_CHECK(cub::DeviceScan::ExclusiveScan(nullptr, scan_bytes, static_cast<TileCounts*>(nullptr),
                                                static_cast<TileCounts*>(nullptr), AddTileCounts(),
                                                TileCounts{0, 0}, ntiles, s));
  auto round256 = [](size_t v) { return (v + 255) & ~size_t(255); };
  const size_t state_bytes = round256(sizeof(TopkState));
  const size_t hist_bytes = round256(kPasses * kHistBins * sizeof(uint32_t));
  const size_t tile_bytes = round256(static_cast<size_t>(ntiles) * sizeof(TileCounts));
  const size_t index_bytes = round256(static_cast<size_t>(k) * sizeof(uint32_t));
  engine::Tensor scratch = engine::empty(
      {static_cast<int64_t>(state_bytes + hist_bytes + 2 * tile_bytes + index_bytes + scan_bytes)},
      engine::TensorOptions(engine::DType::u8, x.device()));
  uint8_t* sp = static_cast<uint8_t*>(scratch.raw_data());
  TopkState* st = reinterpret_cast<TopkState*>(sp);
  uint32_t* hist = reinterpret_cast<uint32_t*>(sp + state_bytes);
  TileCounts* tile_counts = reinterpret_cast<TileCounts*>(sp + state_bytes + hist_bytes);
  TileCounts* tile_prefix = reinterpret_cast<TileCounts*>(sp + state_bytes + hist_bytes + tile_bytes);
  uint32_t* indices = reinterpret_cast<uint32_t*>(sp + state_bytes + hist_bytes + 2 * tile_bytes);
  void* scan_tmp = sp + state_bytes + hist_bytes + 2 * tile_bytes + index_bytes;
  const InputValues xp = input_values(x, "topk");

  DGP_CUDA_CHECK(cudaMemsetAsync(hist, 0, kPasses * kHistBins * sizeof(uint32_t), s));
  DGP_CUDA_CHECK(cudaMemsetAsync(bp, 0, kPreludeBytes, s));  // the last pick writes the status word
  // Zero the bytes the kernels never write: the pad between the values and the index payload.
  const uint64_t values_end = kPreludeBytes + 4ull * static_cast<uint64_t>(k);
  if (index_offset > values_end)
    DGP_CUDA_CHECK(cudaMemsetAsync(bp + values_end, 0, index_offset - values_end, s));
  topk_init_kernel<<<1, 1, 0, s>>>(st, k);
  for (int pass = 0; pass < kPasses; ++pass) {
    topk_hist_kernel<<<ntiles, kThreads, 0, s>>>(xp, n, pass, st, hist + pass * kHistBins);
    topk_pick_kernel<<<1, 1024, 0, s>>>(st, hist + pass * kHistBins, pass, bp);
  }
  topk_count_kernel<<<ntiles, kThreads, 0, s>>>(xp, n, st, tile_counts);
  DGP_CUDA_CHECK(cub::DeviceScan::ExclusiveScan(scan_tmp, scan_bytes, tile_counts, tile_prefix,
                                                AddTileCounts(), TileCounts{0, 0}, ntiles, s));
  topk_scatter_kernel<<<ntiles, kThreads, 0, s>>>(xp, n, st, tile_prefix,
                                                  reinterpret_cast<float*>(bp + kPreludeBytes), indices);
  const int64_t packers = (k + 7) / 8;
  topk_pack_kernel<<<static_cast<unsigned>((packers + kThreads - 1) / kThreads), kThreads, 0, s>>>(
      indices, k, bits, bp + index_offset, body.nbytes() - index_offset);
  DGP_CUDA_CHECK(cudaGetLastError());
}

void topk_decode(const engine::Tensor& body, const engine::Tensor& out, int64_t k) {
  const int64_t n = out.numel();
  cudaStream_t s = stream();
  DGP_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), s));
  if (k == 0) return;
  topk_decode_kernel<<<static_cast<unsigned>((k + kThreads - 1) / kThreads), kThreads, 0, s>>>(
      static_cast<const uint8_t*>(body.raw_data()), body.nbytes(), k, index_bits(n),
      detail::topk_index_offset(k), static_cast<float*>(out.raw_data()), n);
  DGP_CUDA_CHECK(cudaGetLastError());
}

}  // namespace dgpipe::compress::cuda_kernels
