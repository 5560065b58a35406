// Reduction kernels over the last dimension of a contiguous [outer, inner] view; CPU in reduce.cpp,
// CUDA in reduce.cu. Every reduction in the engine is brought to this form first.
#pragma once
#include "engine/tensor.h"

namespace dgpipe::engine::cuda_kernels {
void sum_lastdim(const Tensor& out, const Tensor& x2d);  // out [outer]
void maxmin_lastdim(const Tensor& values, const Tensor& indices, const Tensor& x2d, bool is_max);
}  // namespace dgpipe::engine::cuda_kernels
