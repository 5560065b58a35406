// CUDA launchers for fills and random factories (engine/ops/copy.cu). Tensor::fill_ and rand/randn use them
// so that filling a device tensor needs no host-to-device copy (and can be captured in a CUDA graph).
#pragma once
#include "engine/rng.h"
#include "engine/tensor.h"

namespace dgpipe::engine::cuda_ops {
// dst (any dtype, any strides) = value, converted as cpu::store_from_double does.
void fill(const Tensor& dst, double value);
// Contiguous floating out = Philox uniform [0,1) (normal=false) or standard normal draws, element i following
// the rules of engine/rng.h from `state` (the caller reserves the counter blocks).
void philox_fill(const Tensor& out, PhiloxState state, bool normal);
}  // namespace dgpipe::engine::cuda_ops
