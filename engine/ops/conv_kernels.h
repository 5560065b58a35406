// CUDA launchers of the 2-D convolution (engine/ops/conv.cu, backed by cuDNN). The CPU twins live in
// conv.cpp. All tensors are contiguous NCHW on one CUDA device and share a floating dtype; outputs are
// allocated by the caller (conv.cpp) with the shapes it has already checked, so a launcher only has to fill
// them.
#pragma once
#include "engine/ops.h"

namespace dgpipe::engine::cuda_kernels {

// out [N,O,Ho,Wo] = conv(input [N,C,H,W], weight [O,C/groups,kh,kw]) + bias [O] (bias may be undefined).
void conv2d_forward(const Tensor& out, const Tensor& input, const Tensor& weight, const Tensor& bias,
                    const Conv2dParams& p);
// grad_input [N,C,H,W] = the transposed convolution of grad_out with weight (overwritten, not accumulated).
void conv2d_backward_data(const Tensor& grad_input, const Tensor& grad_out, const Tensor& weight,
                          const Conv2dParams& p);
// grad_weight [O,C/groups,kh,kw] from grad_out and the forward input (overwritten).
void conv2d_backward_filter(const Tensor& grad_weight, const Tensor& grad_out, const Tensor& input,
                            const Conv2dParams& p);
// grad_bias [O] = sum of grad_out over N, Ho, Wo (overwritten).
void conv2d_backward_bias(const Tensor& grad_bias, const Tensor& grad_out);

}  // namespace dgpipe::engine::cuda_kernels
