// CUDA launchers for softmax, log_softmax and the fused cross-entropy (engine/ops/softmax.cu); the CPU twins
// are in softmax.cpp. Tensors are contiguous. A softmax along dim d of a tensor is seen as [outer, dim_size,
// inner] (inner = product of the dims after d), so no transpose is needed; x, y, dx, dy share a floating
// dtype.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace dgpipe::engine::cuda_kernels {
// y = softmax(x) (or log_softmax when log) along the middle dim of [outer, dim_size, inner]; max-subtracted.
void softmax_forward(const Tensor& y, const Tensor& x, int64_t outer, int64_t dim_size, int64_t inner,
                     bool log);
// softmax:     dx = y * (dy - sum_c(dy * y))
// log_softmax: dx = dy - exp(y) * sum_c(dy)
void softmax_backward(const Tensor& dx, const Tensor& dy, const Tensor& y, int64_t outer, int64_t dim_size,
                      int64_t inner, bool log);

// Fused log-softmax + NLL with label smoothing eps, per row of logits [N, C] with target i64 [N]:
//   row_lse[i]  = logsumexp_c logits[i, c]
//   row_loss[i] = (1 - eps) * (lse - logits[i, t]) + eps * mean_c(lse - logits[i, c]),   0 for ignored rows.
// row_loss and row_lse have the dtype of logits (f32 for f16/bf16 logits). A target outside [0, C) that is
// not ignore_index makes that row's loss NaN (the GPU path does not synchronise to raise; the CPU path
// throws).
void cross_entropy_forward(const Tensor& row_loss, const Tensor& row_lse, const Tensor& logits,
                           const Tensor& target, double label_smoothing, int64_t ignore_index);
// dlogits[i, c] = scale * (softmax(logits[i])_c - q_c), q_c = (1 - eps) [c == t_i] + eps / C; rows with
// target == ignore_index get 0. scale is a 0-d tensor on the device (grad_loss / number of non-ignored rows),
// so the backward needs no host synchronisation.
void cross_entropy_backward(const Tensor& dlogits, const Tensor& logits, const Tensor& row_lse,
                            const Tensor& target, const Tensor& scale, double label_smoothing,
                            int64_t ignore_index);
}  // namespace dgpipe::engine::cuda_kernels
