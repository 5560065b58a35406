// CUDA launcher for dropout (engine/ops/dropout.cu); the CPU twin is in dropout.cpp.
#pragma once
#include <cstdint>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace dgpipe::engine::cuda_kernels {
// out[i] = philox_uniform(state, i) >= keep_threshold ? x[i] * scale : 0, for i in row-major order of the
// contiguous x (the rule documented in engine/rng.h). keep_threshold is p as a float; scale is 1/(1-p).
// The same call applied to a gradient is the backward pass (the mask is regenerated, never stored).
void dropout_apply(const Tensor& out, const Tensor& x, PhiloxState state, float keep_threshold, double scale);
}  // namespace dgpipe::engine::cuda_kernels
