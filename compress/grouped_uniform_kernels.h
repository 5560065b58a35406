// CUDA launchers of grouped uniform quantization (grouped_uniform.cu); the CPU twin is in
// grouped_uniform.cpp, the group of an element is element_group (codec_impl.h).
// Conventions shared by every codec launcher: compress/codec.h, above codec_stream().
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace dgpipe::compress::cuda_kernels {

// x: contiguous f32, f16 or bf16 on a CUDA device (half read as is), seen as [outer, groups, inner]; body: u8
// of the codec's body size on the same device. The body is the CPU reference's byte for byte.
void grouped_uniform_encode(const engine::Tensor& x, const engine::Tensor& body, int q_bits, int64_t groups,
                            int64_t inner);
// Decodes a grouped uniform body into out (contiguous f32 on the body's device).
void grouped_uniform_decode(const engine::Tensor& body, const engine::Tensor& out, int q_bits, int64_t groups,
                            int64_t inner);

}  // namespace dgpipe::compress::cuda_kernels
