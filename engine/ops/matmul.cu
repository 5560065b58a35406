// Batched GEMM on the GPU through cuBLAS (the launcher of matmul_kernels.h). Tensor cores are used for
// f16/bf16 (fp32 accumulation); fp32 uses TF32 tensor cores only when cuda::set_allow_tf32_matmul(true) was
// called.
//
// cuBLAS is column-major. A row-major C[M,N] = A[M,K] B[K,N] is the column-major C^T[N,M] = B^T A^T, so B
// goes first. A row-major operand with unit column stride is, read column-major, its own transpose with ld =
// row stride ("N"); one with unit row stride is the matrix itself with ld = column stride ("T"). Other
// layouts are copied.
#include "engine/cuda/cuda_context.cuh"
#include "engine/ops/matmul_kernels.h"

namespace dgpipe::engine::cuda_kernels {

namespace {

struct ColMajorOperand {
  Tensor t;              // possibly a contiguous copy
  cublasOperation_t op;  // applied to the column-major view to get the row-major matrix's transpose
  int64_t ld;
  int64_t batch_stride;
};

// For a row-major [B, R, C] operand, describes X^T (C x R) in cuBLAS terms.
ColMajorOperand describe(const Tensor& x) {
  int64_t R = x.size(1), C = x.size(2);
  int64_t sr = x.stride(1), sc = x.stride(2);
  if ((sc == 1 || C == 1) && (sr >= std::max<int64_t>(C, 1) || R == 1))
    return {x, CUBLAS_OP_N, std::max<int64_t>({sr, C, 1}), x.stride(0)};
  if ((sr == 1 || R == 1) && (sc >= std::max<int64_t>(R, 1) || C == 1))
    return {x, CUBLAS_OP_T, std::max<int64_t>({sc, R, 1}), x.stride(0)};
  Tensor c = x.contiguous();
  return {c, CUBLAS_OP_N, std::max<int64_t>(C, 1), c.stride(0)};
}

cudaDataType_t data_type(DType t) {
  switch (t) {
    case DType::f32:
      return CUDA_R_32F;
    case DType::f64:
      return CUDA_R_64F;
    case DType::f16:
      return CUDA_R_16F;
    case DType::bf16:
      return CUDA_R_16BF;
    default:
      DGP_FAIL("bmm: unsupported dtype " << dtype_name(t) << " on cuda");
  }
}

}  // namespace

void bmm(const Tensor& out, const Tensor& a, const Tensor& b) {
  DGP_CHECK(out.is_contiguous(), "bmm: cuda output must be contiguous");
  DGP_CHECK(a.dtype() == b.dtype() && a.dtype() == out.dtype(), "bmm: dtype mismatch on cuda");
  int64_t batch = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  if (out.numel() == 0) return;
  cuda::TensorDeviceGuard g(out);
  if (K == 0) {
    DGP_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), cuda::stream_of(out)));
    return;
  }
  DGP_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX && batch <= INT32_MAX,
            "bmm: dimensions exceed cuBLAS's 32-bit limits (" << shape_str(a.shape()) << " x "
                                                              << shape_str(b.shape()) << ")");
  ColMajorOperand first = describe(b);   // B^T : N x K
  ColMajorOperand second = describe(a);  // A^T : K x M
  int dev = out.device().index;
  cublasHandle_t h = cuda::cublas_handle(dev);
  cudaDataType_t dt = data_type(a.dtype());
  cublasComputeType_t compute;
  float alpha_f = 1.0f, beta_f = 0.0f;
  double alpha_d = 1.0, beta_d = 0.0;
  const void* alpha = &alpha_f;
  const void* beta = &beta_f;
  if (a.dtype() == DType::f64) {
    compute = CUBLAS_COMPUTE_64F;
    alpha = &alpha_d;
    beta = &beta_d;
  } else if (a.dtype() == DType::f32) {
    compute = cuda::allow_tf32_matmul() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  } else {
    compute = CUBLAS_COMPUTE_32F;  // half inputs, fp32 accumulation, tensor cores
  }
  DGP_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      h, first.op, second.op, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), alpha,
      first.t.raw_data(), dt, static_cast<int>(first.ld), first.batch_stride, second.t.raw_data(), dt,
      static_cast<int>(second.ld), second.batch_stride, beta, out.raw_data(), dt, static_cast<int>(N), M * N,
      static_cast<int>(batch), compute, CUBLAS_GEMM_DEFAULT));
}

}  // namespace dgpipe::engine::cuda_kernels
