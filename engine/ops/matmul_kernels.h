// CUDA launcher of the batched matrix product (engine/ops/matmul.cu, backed by cuBLAS); the CPU twin is in
// matmul.cpp.
#pragma once
#include "engine/tensor.h"

namespace dgpipe::engine::cuda_kernels {
// Batched strided GEMM on the current stream via cuBLAS(Lt); a, b, out are 3-D [B,.,.] with unit inner
// stride in one of the last two dims. out must be contiguous.
void bmm(const Tensor& out, const Tensor& a, const Tensor& b);
}  // namespace dgpipe::engine::cuda_kernels
