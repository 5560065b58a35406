// CUDA launchers for the embedding lookup (engine/ops/embedding.cu); the CPU twin is in embedding.cpp.
// weight and grad_weight are contiguous [V, D]; indices are contiguous i64 with n = indices.numel() entries;
// out and grad_out are contiguous [n, D]. The caller cannot check indices on the device without a sync: one
// outside [0, V) is skipped and reported through cuda::check_device_errors (an Error at the next sync).
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace dgpipe::engine::cuda_kernels {
// out[j, :] = weight[indices[j], :]
void embedding_forward(const Tensor& out, const Tensor& weight, const Tensor& indices);
// grad_weight (zeroed by the caller) [indices[j], :] += grad_out[j, :] for every j with indices[j] !=
// padding_idx (padding_idx = -1: none). Repeated indices accumulate (atomics or a sort; both are fine).
void embedding_backward(const Tensor& grad_weight, const Tensor& grad_out, const Tensor& indices,
                        int64_t padding_idx);
}  // namespace dgpipe::engine::cuda_kernels
