// Raw CPU GEMM entry points (OpenBLAS, in matmul.cpp) used by matmul and by the im2col convolution.
// Row-major, like cblas with CblasRowMajor: C[M,N] = alpha * op(A) * op(B) + beta * C. The CUDA GEMM launcher
// is in matmul_kernels.h.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace dgpipe::engine::cpu {
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc);
}  // namespace dgpipe::engine::cpu
