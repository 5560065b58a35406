// CUDA sort quantization (twin of sortquant.cpp): exact groups by radix SELECT, not a sort.
//
// Why a select: the encoder needs only 2K order statistics (first and last rank of each group) plus, for
// values that straddle a group boundary, count_less(value). A keys-only radix sort of N floats reads and
// writes 4 bytes per element in each of 4+ passes (>= 32N bytes of traffic, plus temporary storage); the
// select reads the keys once per 8-bit digit (4 passes x 4N bytes, histograms in shared memory) and never
// writes them, so it moves about half the bytes and needs O(K) scratch. count_less falls out of the select
// (rank - rank-among-equals).
//
// Passes over x: 4 histogram passes (the first also counts NaN/Inf) + 1 fused group/quantize/pack pass.
// When some value straddles a boundary (e.g. post-ReLU zeros) one more counting pass gives every tile its
// starting ordinal per straddling value, so ties split in flat index order exactly as the CPU reference does.
// Tiny single-block kernels between passes update the select state on the device: no host synchronisation.
#include <cub/block/block_scan.cuh>

#include "compress/codec_cuda.cuh"
#include "compress/sortquant_kernels.h"
#include "engine/ops.h"

namespace dgpipe::compress::cuda_kernels {
namespace {

constexpr int kMaxGroups = 256;
constexpr int kMaxTargets = 2 * kMaxGroups;
constexpr int kSharedHistSlots = 32;  // 32 x 256 x 4 B = 32 KiB of shared histogram

struct SelectState {
  uint32_t prefix[kMaxTargets];
  unsigned long long remaining[kMaxTargets];
  int slot[kMaxTargets];
  uint32_t slot_prefix[kMaxTargets];
  int nslots;
  uint32_t nonfinite;
  uint32_t lo_key[kMaxGroups];
  uint32_t straddle_key[kMaxGroups];
  unsigned long long straddle_less[kMaxGroups];
  int nstraddle;
};

__device__ __forceinline__ int64_t target_rank(int t, int64_t n, int groups) {
  const int g = t / 2;
  const int64_t base = n / groups, rem = n % groups;
  const int64_t start = g * base + (g < rem ? g : rem);
  const int64_t size = base + (g < rem ? 1 : 0);
  return (t % 2 == 0) ? start : start + size - 1;
}

__device__ __forceinline__ int group_of_rank(int64_t r, int64_t n, int groups) {
  const int64_t base = n / groups, rem = n % groups, big = rem * (base + 1);
  return static_cast<int>(r < big ? r / (base + 1) : rem + (r - big) / base);
}

__global__ void select_init_kernel(SelectState* st, int64_t n, int groups, int targets) {
  for (int t = threadIdx.x; t < targets; t += blockDim.x) {
    st->prefix[t] = 0;
    st->remaining[t] = static_cast<unsigned long long>(target_rank(t, n, groups));
    st->slot[t] = 0;
  }
  if (threadIdx.x == 0) {
    st->slot_prefix[0] = 0;
    st->nslots = 1;
    st->nonfinite = 0;
    st->nstraddle = 0;
  }
}

// Histogram of digit `pass` (bits 31-8p .. 24-8p) of the keys whose higher digits match a live prefix.
__global__ void select_hist_kernel(InputValues x, int64_t n, int pass, SelectState* st,
                                   uint32_t* __restrict__ hist, bool shared_hist) {
  __shared__ uint32_t sh_hist[kSharedHistSlots * 256];
  __shared__ uint32_t sh_prefix[kMaxTargets];
  __shared__ uint32_t sh_bad;
  const int nslots = st->nslots;
  for (int i = threadIdx.x; i < nslots; i += blockDim.x) sh_prefix[i] = st->slot_prefix[i];
  if (shared_hist)
    for (int i = threadIdx.x; i < nslots * 256; i += blockDim.x) sh_hist[i] = 0;
  if (threadIdx.x == 0) sh_bad = 0;
  __syncthreads();
  float v[8];
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  load8(x, n, base, v);
  const int shift = 24 - 8 * pass;
  uint32_t bad = 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    uint32_t bin = 0xffffffffu;
    if (base + k < n) {
      const uint32_t key = float_to_key(v[k]);
      if (pass == 0) bad += is_finite_float(v[k]) ? 0u : 1u;
      int slot = 0;
      bool live = true;
      if (pass > 0) {
        const uint32_t pfx = key >> (32 - 8 * pass);
        int lo = 0, hi = nslots;  // lower_bound over the sorted distinct prefixes
        while (lo < hi) {
          int mid = (lo + hi) / 2;
          if (sh_prefix[mid] < pfx)
            lo = mid + 1;
          else
            hi = mid;
        }
        live = lo < nslots && sh_prefix[lo] == pfx;
        slot = lo;
      }
      if (live) bin = static_cast<uint32_t>(slot) * 256u + ((key >> shift) & 255u);
    }
    // Warp-aggregated increments: heavy ties (post-ReLU zeros) would otherwise serialise on one counter.
    const unsigned peers = __match_any_sync(0xffffffffu, bin);
    if (bin != 0xffffffffu && (threadIdx.x & 31) == __ffs(peers) - 1) {
      if (shared_hist)
        atomicAdd(&sh_hist[bin], __popc(peers));
      else
        atomicAdd(&hist[bin], __popc(peers));
    }
  }
  if (pass == 0 && bad) atomicAdd(&sh_bad, bad);
  __syncthreads();
  if (shared_hist)
    for (int i = threadIdx.x; i < nslots * 256; i += blockDim.x)
      if (sh_hist[i]) atomicAdd(&hist[i], sh_hist[i]);
  if (pass == 0 && threadIdx.x == 0 && sh_bad) atomicAdd(&st->nonfinite, sh_bad);
}

// Picks each target's digit from its slot's histogram, then recomputes the distinct live prefixes.
__global__ void select_update_kernel(SelectState* st, const uint32_t* __restrict__ hist, int targets) {
  for (int t = threadIdx.x; t < targets; t += blockDim.x) {
    const uint32_t* h = hist + static_cast<size_t>(st->slot[t]) * 256;
    unsigned long long rem = st->remaining[t], cum = 0;
    int digit = 255;
    for (int d = 0; d < 256; ++d) {
      if (rem < cum + h[d]) {
        digit = d;
        break;
      }
      cum += h[d];
    }
    st->remaining[t] = rem - cum;
    st->prefix[t] = (st->prefix[t] << 8) | static_cast<uint32_t>(digit);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int ns = 0;
    for (int t = 0; t < targets; ++t) {  // targets are in rank order, so prefixes are non-decreasing
      if (ns == 0 || st->slot_prefix[ns - 1] != st->prefix[t]) st->slot_prefix[ns++] = st->prefix[t];
      st->slot[t] = ns - 1;
    }
    st->nslots = ns;
  }
}

// Group statistics into the body, boundary keys and straddling values into the state.
__global__ void sortquant_stats_kernel(SelectState* st, int64_t n, int groups, int nonempty, int q_bits,
                                       uint8_t* body) {
  if (threadIdx.x != 0) return;
  uint32_t* prelude = reinterpret_cast<uint32_t*>(body);
  prelude[0] = st->nonfinite;
  prelude[1] = 0;
  float* stats = reinterpret_cast<float*>(body + kPreludeBytes);
  int ns = 0;
  for (int g = 0; g < groups; ++g) {
    float lo = 0.0f, step = 0.0f;
    if (g < nonempty) {
      const uint32_t lk = st->prefix[2 * g], hk = st->prefix[2 * g + 1];
      lo = key_to_float(lk);
      step = quant_step(lo, key_to_float(hk), (1u << q_bits) - 1u);
      st->lo_key[g] = lk;
      if (g > 0 && st->prefix[2 * g - 1] == lk && (ns == 0 || st->straddle_key[ns - 1] != lk)) {
        st->straddle_key[ns] = lk;
        st->straddle_less[ns] =
            static_cast<unsigned long long>(target_rank(2 * g, n, groups)) - st->remaining[2 * g];
        ++ns;
      }
    }
    stats[2 * g] = lo;
    stats[2 * g + 1] = step;
  }
  st->nstraddle = ns;
}

__device__ __forceinline__ int find_straddle(const uint32_t* keys, int ns, uint32_t key) {
  int lo = 0, hi = ns;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (keys[mid] < key)
      lo = mid + 1;
    else
      hi = mid;
  }
  return (lo < ns && keys[lo] == key) ? lo : -1;
}

// Per tile and straddling value: how many of the tile's elements equal it.
__global__ void straddle_count_kernel(InputValues x, int64_t n, const SelectState* st,
                                      uint32_t* __restrict__ tile_counts, int groups) {
  const int ns = st->nstraddle;
  if (ns == 0) return;
  __shared__ uint32_t keys[kMaxGroups], counts[kMaxGroups];
  for (int i = threadIdx.x; i < ns; i += blockDim.x) {
    keys[i] = st->straddle_key[i];
    counts[i] = 0;
  }
  __syncthreads();
  float v[8];
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  load8(x, n, base, v);
  for (int k = 0; k < 8; ++k) {
    if (base + k >= n) break;
    const int s = find_straddle(keys, ns, float_to_key(v[k]));
    if (s >= 0) atomicAdd(&counts[s], 1u);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < ns; i += blockDim.x)
    tile_counts[static_cast<size_t>(blockIdx.x) * groups + i] = counts[i];
}

// Exclusive scan over tiles, one block per straddling value.
__global__ void straddle_scan_kernel(const SelectState* st, const uint32_t* __restrict__ tile_counts,
                                     unsigned long long* __restrict__ tile_prefix, int64_t ntiles,
                                     int groups) {
  const int s = blockIdx.x;
  if (s >= st->nstraddle) return;
  using Scan = cub::BlockScan<unsigned long long, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  unsigned long long carry = 0;
  for (int64_t t0 = 0; t0 < ntiles; t0 += kThreads) {
    const int64_t t = t0 + threadIdx.x;
    unsigned long long c = t < ntiles ? tile_counts[static_cast<size_t>(t) * groups + s] : 0ull, prefix,
                       total;
    Scan(tmp).ExclusiveSum(c, prefix, total);
    if (t < ntiles) tile_prefix[static_cast<size_t>(t) * groups + s] = carry + prefix;
    carry += total;
    __syncthreads();
  }
}

__global__ void sortquant_pack_kernel(InputValues x, int64_t n, uint8_t* body, uint64_t body_bytes,
                                      const SelectState* st, const uint32_t* __restrict__ tile_counts,
                                      const unsigned long long* __restrict__ tile_prefix, int q_bits,
                                      int s_bits, int nonempty) {
  using Scan = cub::BlockScan<uint32_t, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  __shared__ __align__(16) uint8_t stage[kThreads * 16];
  __shared__ float lo[kMaxGroups], step[kMaxGroups];
  __shared__ uint32_t lo_key[kMaxGroups], skeys[kMaxGroups];
  __shared__ unsigned long long sless[kMaxGroups];
  const int groups = 1 << s_bits;
  load_group_stats(body, groups, lo, step);
  const int ns = st->nstraddle;
  for (int i = threadIdx.x; i < groups; i += blockDim.x) lo_key[i] = st->lo_key[i];
  for (int i = threadIdx.x; i < ns; i += blockDim.x) {
    skeys[i] = st->straddle_key[i];
    sless[i] = st->straddle_less[i] + tile_prefix[static_cast<size_t>(blockIdx.x) * groups + i];
  }
  __syncthreads();
  float v[8];
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  load8(x, n, base, v);
  int g[8], sidx[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    g[k] = 0;
    sidx[k] = -1;
    if (base + k >= n) continue;
    const uint32_t key = float_to_key(v[k]);
    if (ns > 0) sidx[k] = find_straddle(skeys, ns, key);
    if (sidx[k] < 0) {
      int a = 1, b = nonempty > 1 ? nonempty : 1;  // upper_bound over lo_key[1..nonempty)
      while (a < b) {
        int mid = (a + b) / 2;
        if (lo_key[mid] <= key)
          a = mid + 1;
        else
          b = mid;
      }
      g[k] = a - 1;
    }
  }
  // Straddling values: rank = count_less + elements equal to it before this one in flat index order.
  for (int s = 0; s < ns; ++s) {
    if (tile_counts[static_cast<size_t>(blockIdx.x) * groups + s] == 0) continue;  // block-uniform
    uint32_t mine = 0;
#pragma unroll
    for (int k = 0; k < 8; ++k) mine += sidx[k] == s ? 1u : 0u;
    uint32_t before;
    Scan(tmp).ExclusiveSum(mine, before);
    __syncthreads();
    unsigned long long rank = sless[s] + before;
#pragma unroll
    for (int k = 0; k < 8; ++k)
      if (sidx[k] == s) g[k] = group_of_rank(static_cast<int64_t>(rank++), n, groups);
  }
  uint32_t codes[8];
#pragma unroll
  for (int k = 0; k < 8; ++k)
    codes[k] =
        base + k < n
            ? ((static_cast<uint32_t>(g[k]) << q_bits) | group_value_code(v[k], lo[g[k]], step[g[k]], q_bits))
            : 0u;
  const uint64_t off = detail::group_payload_offset(groups);
  store_tile(stage, codes, q_bits + s_bits, body + off, body_bytes - off, blockIdx.x);
}

}  // namespace

void sortquant_encode(const engine::Tensor& x, const engine::Tensor& body, int q_bits, int s_bits) {
  const int64_t n = x.numel();
  const int groups = 1 << s_bits;
  const int nonempty = static_cast<int>(n < groups ? n : groups);
  const int targets = 2 * nonempty;
  const int64_t ntiles = tiles(n);
  const int max_slots = targets > 0 ? targets : 1;
  const size_t hist_words = static_cast<size_t>(max_slots) * 256;
  const size_t state_bytes = (sizeof(SelectState) + 255) & ~size_t(255);
  const size_t hist_bytes = 4 * hist_words * 4;
  const size_t counts_bytes = (static_cast<size_t>(ntiles) * groups * 4 + 255) & ~size_t(255);
  const size_t prefix_bytes = static_cast<size_t>(ntiles) * groups * 8;
  engine::Tensor scratch =
      engine::empty({static_cast<int64_t>(state_bytes + hist_bytes + counts_bytes + prefix_bytes)},
                    engine::TensorOptions(engine::DType::u8, x.device()));
  uint8_t* base = static_cast<uint8_t*>(scratch.raw_data());
  SelectState* st = reinterpret_cast<SelectState*>(base);
  uint32_t* hist = reinterpret_cast<uint32_t*>(base + state_bytes);
  uint32_t* tile_counts = reinterpret_cast<uint32_t*>(base + state_bytes + hist_bytes);
  unsigned long long* tile_prefix =
      reinterpret_cast<unsigned long long*>(base + state_bytes + hist_bytes + counts_bytes);
  const InputValues xp = input_values(x, "sortquant");
  uint8_t* bp = static_cast<uint8_t*>(body.raw_data());
  cudaStream_t s = stream();
  DGP_CUDA_CHECK(cudaMemsetAsync(hist, 0, hist_bytes, s));
  DGP_CUDA_CHECK(cudaMemsetAsync(bp, 0, detail::group_payload_offset(groups), s));
  select_init_kernel<<<1, 512, 0, s>>>(st, n, groups, targets);
  if (n > 0) {
    const bool shared_hist = max_slots <= kSharedHistSlots;
    for (int pass = 0; pass < 4; ++pass) {
      uint32_t* h = hist + static_cast<size_t>(pass) * hist_words;
      select_hist_kernel<<<ntiles, kThreads, 0, s>>>(xp, n, pass, st, h, shared_hist);
      select_update_kernel<<<1, 512, 0, s>>>(st, h, targets);
    }
  }
  sortquant_stats_kernel<<<1, 32, 0, s>>>(st, n, groups, nonempty, q_bits, bp);
  if (n > 0) {
    // Only does work when a value straddles a boundary (the kernels read nstraddle on the device).
    straddle_count_kernel<<<ntiles, kThreads, 0, s>>>(xp, n, st, tile_counts, groups);
    straddle_scan_kernel<<<groups, kThreads, 0, s>>>(st, tile_counts, tile_prefix, ntiles, groups);
    sortquant_pack_kernel<<<ntiles, kThreads, 0, s>>>(xp, n, bp, body.nbytes(), st, tile_counts, tile_prefix,
                                                      q_bits, s_bits, nonempty);
  }
  DGP_CUDA_CHECK(cudaGetLastError());
}

}  // namespace dgpipe::compress::cuda_kernels
