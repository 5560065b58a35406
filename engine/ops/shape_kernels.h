// CUDA launchers of the indexing ops (engine/ops/shape.cu); the CPU twins are in shape.cpp. src, dst and out
// are contiguous; index is a contiguous 1-D i64 tensor on the same device. Indices are not checked on the
// device (that would need a host synchronisation): see the kernels for what an index out of range does.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace dgpipe::engine::cuda_kernels {
// out[..., j, ...] = src[..., index[j], ...] along `dim`.
void index_select(const Tensor& out, const Tensor& src, int64_t dim, const Tensor& index);
// dst[..., index[j], ...] += src[..., j, ...] along `dim` (floating dst; repeated indices add up).
void index_add(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src);
}  // namespace dgpipe::engine::cuda_kernels
