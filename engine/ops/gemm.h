// Raw CPU GEMM entry points (matmul.cpp) used by matmul, the im2col convolution and the low-rank codecs.
// Row-major, like cblas with CblasRowMajor: C[M,N] = alpha * op(A) * op(B) + beta * C. The CUDA GEMM launcher
// is in matmul_kernels.h.
//
// f32 runs on one of two libraries: oneDNN's sgemm (its JIT kernels for the CPU it finds: about 10% faster than
// OpenBLAS on this project's AVX-512 machine for the BERT shapes, docs/perf.md) where the build has oneDNN,
// for products of at least 2^19 multiply-adds (below, OpenBLAS's small-matrix kernels are faster), else
// OpenBLAS; f64 always runs on OpenBLAS (oneDNN has no double GEMM).
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace dgpipe::engine::cpu {

enum class GemmBackend { openblas, onednn };
// The process-wide f32 backend: DGPIPE_CPU_GEMM=openblas|onednn, or unset, oneDNN where the build has it.
GemmBackend gemm_backend();
void set_gemm_backend(GemmBackend backend);  // throws for onednn in a build without it
const char* gemm_backend_name(GemmBackend backend);

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc);
}  // namespace dgpipe::engine::cpu
