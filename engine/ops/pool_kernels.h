// CUDA launchers of the 2-D pooling ops (engine/ops/pool.cu, backed by cuDNN or plain kernels). The CPU twins
// live in pool.cpp. Tensors are contiguous NCHW on one CUDA device; outputs are allocated by the caller with
// shapes pool.cpp has already checked, and backward launchers overwrite grad_input.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace dgpipe::engine::cuda_kernels {

// out [N,C,Ho,Wo]; indices (i64, same shape) receive the argmax as a flat index into the H*W plane.
void max_pool2d_forward(const Tensor& out, const Tensor& indices, const Tensor& x, int64_t kernel,
                        int64_t stride, int64_t padding);
// grad_input [N,C,H,W] = grad_out scattered to the saved argmax positions (overlapping windows add up).
void max_pool2d_backward(const Tensor& grad_input, const Tensor& grad_out, const Tensor& indices);

// Average over the window, divided by the window size counted with padding (PyTorch count_include_pad=true).
void avg_pool2d_forward(const Tensor& out, const Tensor& x, int64_t kernel, int64_t stride, int64_t padding);
void avg_pool2d_backward(const Tensor& grad_input, const Tensor& grad_out, int64_t kernel, int64_t stride,
                         int64_t padding);

// Output cell (oh, ow) averages rows [floor(oh*H/Ho), ceil((oh+1)*H/Ho)) and the same for columns.
void adaptive_avg_pool2d_forward(const Tensor& out, const Tensor& x);
void adaptive_avg_pool2d_backward(const Tensor& grad_input, const Tensor& grad_out);

}  // namespace dgpipe::engine::cuda_kernels
