// CUDA launchers of batch normalisation (engine/ops/batch_norm.cu, backed by cuDNN or plain kernels). The CPU
// twin lives in batch_norm.cpp. x and grad tensors are contiguous [N,C,*] on one CUDA device; weight, bias,
// save_mean and save_invstd are [C] (weight/bias may be undefined = affine off); save_mean and save_invstd
// are in the accumulation type: f32 for f16/bf16 inputs, the input's dtype otherwise. Outputs are allocated
// by the caller and overwritten.
#pragma once
#include "engine/tensor.h"

namespace dgpipe::engine::cuda_kernels {

// Training: normalises with the batch statistics, writes them to save_mean / save_invstd = 1/sqrt(var + eps)
// (biased var), and when running_mean/var are defined updates them in place:
// running = (1 - momentum) * running + momentum * stat, with the unbiased variance for running_var.
void batch_norm_forward_training(const Tensor& out, const Tensor& save_mean, const Tensor& save_invstd,
                                 const Tensor& x, const Tensor& weight, const Tensor& bias,
                                 const Tensor& running_mean, const Tensor& running_var, double momentum,
                                 double eps);
// Eval: normalises with the running statistics.
void batch_norm_forward_inference(const Tensor& out, const Tensor& x, const Tensor& weight,
                                  const Tensor& bias, const Tensor& running_mean, const Tensor& running_var,
                                  double eps);
// Gradients from the saved statistics. training selects the full batch-statistics backward (the mean and
// variance depend on x) over the affine one (they are constants). grad_x/grad_weight/grad_bias may be
// undefined when not wanted.
void batch_norm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias,
                         const Tensor& grad_out, const Tensor& x, const Tensor& weight,
                         const Tensor& save_mean, const Tensor& save_invstd, bool training);

}  // namespace dgpipe::engine::cuda_kernels
