// Raw GEMM entry points used by matmul and by the im2col convolution. Row-major, like cblas with
// CblasRowMajor: C[M,N] = alpha * op(A) * op(B) + beta * C.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace dgpipe::engine::cpu {
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc);
}  // namespace dgpipe::engine::cpu

namespace dgpipe::engine::cuda_ops {
// Batched strided GEMM on the current stream via cuBLAS(Lt); a, b, out are 3-D [B,.,.] with unit inner
// stride in one of the last two dims (engine/ops/matmul.cu). out must be contiguous.
void bmm(const Tensor& out, const Tensor& a, const Tensor& b);
}  // namespace dgpipe::engine::cuda_ops
