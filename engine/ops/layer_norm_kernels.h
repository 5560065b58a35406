// CUDA launchers for layer normalisation (engine/ops/layer_norm.cu); the CPU twin is in layer_norm.cpp.
// Every tensor is contiguous and viewed as rows: x, y, dx are [rows, cols] (cols = prod(normalized_shape)),
// mean and rstd are [rows], weight/bias/dweight/dbias are [cols]. x, y, dx, weight and bias share a floating
// dtype (f32, f16 or bf16 on the GPU); mean and rstd are f32 (f64 when x is f64) and statistics accumulate in
// f32.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace dgpipe::engine::cuda_kernels {
// y = (x - mean) * rstd * weight + bias, with biased variance; weight and bias may be undefined (no affine).
// Writes the per-row mean and rstd = 1/sqrt(var + eps) for the backward pass.
void layer_norm_forward(const Tensor& y, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                        const Tensor& weight, const Tensor& bias, int64_t rows, int64_t cols, double eps);
// dx (always defined), dweight and dbias (undefined when not needed) from dy, x and the saved statistics.
// dweight/dbias are written, not accumulated.
void layer_norm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dbias, const Tensor& dy,
                         const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& weight,
                         int64_t rows, int64_t cols);
}  // namespace dgpipe::engine::cuda_kernels
