// CUDA launcher of fast quantization (fastquant.cu); the CPU twin is in fastquant.cpp.
// Conventions shared by every codec launcher: compress/codec.h, above codec_stream().
#pragma once
#include "engine/tensor.h"

namespace dgpipe::compress::cuda_kernels {

// x: contiguous f32, f16 or bf16 on a CUDA device (half read as is); body: u8 of the codec's body size on the
// same device. The body is the CPU reference's byte for byte (same sample, same boundaries). Decode:
// group_decode.
void fastquant_encode(const engine::Tensor& x, const engine::Tensor& body, int q_bits, int s_bits);

}  // namespace dgpipe::compress::cuda_kernels
