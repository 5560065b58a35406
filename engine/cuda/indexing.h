// Offsets of strided operands for a row-major linear index, as the CUDA element-wise kernels compute them
// (engine/ops/elementwise.cu and others). Written as DGP_HD code without CUDA headers, so the CPU tests check
// the index math (tests/engine/test_indexing.cpp) that the kernels run.
//
// Dims are merged first (contiguous in every operand) and size-1 dims dropped, so a typical broadcast (a bias
// add: [rows, features] + [features]) keeps one or two dims. A dim costs a division and a remainder per
// element: with 64-bit integers that is a slow software sequence on the GPU, so whenever the element count
// and every operand's reach fit in 31 bits (practically always) the kernels use the 32-bit indexer, whose
// divisions are a multiply-high and a shift (FastDivmod).
#pragma once
#include <cstdint>

#include "engine/error.h"
#include "engine/host_device.h"
#include "engine/tensor.h"

namespace dgpipe::engine::cuda {

// Division by a fixed divisor d (1 <= d <= 2^31) of any n < 2^31, as a multiply-high and a shift: with
// l = ceil(log2 d) and m = floor(2^32 (2^l - d) / d) + 1, n / d = (umulhi(n, m) + n) >> l (the sum cannot
// overflow for n < 2^31). The round-up method of Granlund and Montgomery (1994) for 32-bit words.
struct FastDivmod {
  uint32_t divisor = 1;
  uint32_t multiplier = 0;
  uint32_t shift = 0;

  FastDivmod() = default;
  explicit FastDivmod(uint32_t d) : divisor(d) {
    DGP_CHECK(d >= 1 && d <= (1u << 31), "FastDivmod: divisor " << d << " outside [1, 2^31]");
    while ((uint64_t(1) << shift) < d) ++shift;
    multiplier = static_cast<uint32_t>(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }

  DGP_HD uint32_t div(uint32_t n) const {
#ifdef __CUDA_ARCH__
    const uint32_t hi = __umulhi(n, multiplier);
#else
    const uint32_t hi = static_cast<uint32_t>((static_cast<uint64_t>(n) * multiplier) >> 32);
#endif
    return (hi + n) >> shift;
  }
  DGP_HD uint32_t mod(uint32_t n) const {
    return n - div(n) * divisor;
  }
};

// Up to kMaxDims dims after merging.
constexpr int kMaxDims = 10;

// K operands, 64-bit: any size.
template <int K>
struct StridedIndexer {
  int ndim = 0;
  int64_t sizes[kMaxDims];
  int64_t strides[K][kMaxDims];
  int64_t base[K];

  DGP_HD void offsets(int64_t linear, int64_t out[K]) const {
    for (int k = 0; k < K; ++k) out[k] = base[k];
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t i = linear % sizes[d];
      linear /= sizes[d];
      for (int k = 0; k < K; ++k) out[k] += i * strides[k][d];
    }
  }
};

// K operands, 32-bit: numel < 2^31 and every operand's offsets relative to its base below 2^31.
template <int K>
struct StridedIndexer32 {
  int ndim = 0;
  FastDivmod sizes[kMaxDims];
  uint32_t strides[K][kMaxDims];
  int64_t base[K];

  DGP_HD void offsets(uint32_t linear, int64_t out[K]) const {
    uint32_t rel[K];
    for (int k = 0; k < K; ++k) rel[k] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const uint32_t q = sizes[d].div(linear);
      const uint32_t i = linear - q * sizes[d].divisor;
      linear = q;
      for (int k = 0; k < K; ++k) rel[k] += i * strides[k][d];
    }
    for (int k = 0; k < K; ++k) out[k] = base[k] + rel[k];
  }
};

// Builds the 64-bit indexer for tensors of one shape (ts[0..K-1], each viewed with its own strides and
// offset), merging dims that are contiguous in every operand and dropping size-1 dims. Throws naming `op` if
// more than kMaxDims remain.
template <int K>
StridedIndexer<K> make_indexer(const Shape& shape, const Tensor* const ts[K], const char* op) {
  StridedIndexer<K> ix;
  DGP_CHECK(shape.size() <= 64, op << ": tensors of more than 64 dimensions are not supported");
  int n = 0;
  int64_t sizes[64];
  int64_t strides[K][64];
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (n > 0) {
      bool merge = true;
      for (int k = 0; k < K; ++k)
        if (strides[k][n - 1] != ts[k]->strides()[d] * shape[d]) merge = false;
      if (merge) {
        sizes[n - 1] *= shape[d];
        for (int k = 0; k < K; ++k) strides[k][n - 1] = ts[k]->strides()[d];
        continue;
      }
    }
    sizes[n] = shape[d];
    for (int k = 0; k < K; ++k) strides[k][n] = ts[k]->strides()[d];
    ++n;
  }
  DGP_CHECK(n <= kMaxDims, op << ": tensors with more than " << kMaxDims
                              << " non-mergeable dims are not supported "
                              << "on cuda (shape " << shape_str(shape) << "); call contiguous() first");
  ix.ndim = n;
  for (int d = 0; d < n; ++d) {
    ix.sizes[d] = sizes[d];
    for (int k = 0; k < K; ++k) ix.strides[k][d] = strides[k][d];
  }
  for (int k = 0; k < K; ++k) ix.base[k] = ts[k]->offset();
  return ix;
}

// Whether the 32-bit indexer covers `ix` for `numel` elements.
template <int K>
bool fits_32bit(const StridedIndexer<K>& ix, int64_t numel) {
  constexpr int64_t kLimit = int64_t(1) << 31;
  if (numel >= kLimit) return false;
  for (int k = 0; k < K; ++k) {
    int64_t reach = 0;
    for (int d = 0; d < ix.ndim; ++d) {
      if (ix.strides[k][d] < 0) return false;
      reach += (ix.sizes[d] - 1) * ix.strides[k][d];
      if (reach >= kLimit) return false;
    }
  }
  return true;
}

// The 32-bit form of an indexer that fits_32bit.
template <int K>
StridedIndexer32<K> narrow_indexer(const StridedIndexer<K>& ix) {
  StridedIndexer32<K> n;
  n.ndim = ix.ndim;
  for (int d = 0; d < ix.ndim; ++d) {
    n.sizes[d] = FastDivmod(static_cast<uint32_t>(ix.sizes[d]));
    for (int k = 0; k < K; ++k) n.strides[k][d] = static_cast<uint32_t>(ix.strides[k][d]);
  }
  for (int k = 0; k < K; ++k) n.base[k] = ix.base[k];
  return n;
}

// A broadcast vector operand: an operand whose merged strides are 0 except for one dim of stride 1 (a bias
// [C] added to [N, C] rows, a [1, C, 1, 1] channel vector to NCHW, a [R, 1] column to [R, C]), or a scalar
// (every stride 0: channels = 1). Its element for linear index i is (i / inner) % channels. `found` is false
// for any other layout.
struct VectorBroadcast {
  bool found = false;
  int64_t inner = 1;     // product of the merged sizes after the vector's dim
  int64_t channels = 1;  // the vector's length
};

template <int K>
VectorBroadcast vector_broadcast(const StridedIndexer<K>& ix, int operand) {
  VectorBroadcast v;
  int dim = -1;
  for (int d = 0; d < ix.ndim; ++d) {
    if (ix.strides[operand][d] == 0) continue;
    if (ix.strides[operand][d] != 1 || dim >= 0) return v;
    dim = d;
  }
  v.found = true;
  if (dim < 0) return v;  // a scalar
  v.channels = ix.sizes[dim];
  for (int d = dim + 1; d < ix.ndim; ++d) v.inner *= ix.sizes[d];
  return v;
}

}  // namespace dgpipe::engine::cuda
