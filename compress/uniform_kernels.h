// CUDA launchers of uniform quantization and of the decoder shared by uniform / sortquant / fastquant
// (uniform.cu); the CPU twins are in uniform.cpp and group_quant.cpp.
// Conventions shared by every codec launcher: compress/codec.h, above codec_stream().
#pragma once
#include "engine/tensor.h"

namespace dgpipe::compress::cuda_kernels {

// x: contiguous f32, f16 or bf16 on a CUDA device (half read as is); body: u8 of the codec's body size on the
// same device. The body is the CPU reference's byte for byte.
void uniform_encode(const engine::Tensor& x, const engine::Tensor& body, int q_bits);
// Decodes a uniform (s_bits = 0), sortquant or fastquant body into out (contiguous f32, numel elements).
void group_decode(const engine::Tensor& body, const engine::Tensor& out, int q_bits, int s_bits);

}  // namespace dgpipe::compress::cuda_kernels
