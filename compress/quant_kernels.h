// CUDA launchers of the quantizing codecs (uniform.cu, sortquant.cu, fastquant.cu, group_decode in
// uniform.cu). CUDA-free header: callers include it unconditionally and call the launchers only under
// DGPIPE_WITH_CUDA. Every launcher runs on codec_stream(), never synchronises the host, and writes the whole
// body (prelude, statistics, payload) in the layout of the CPU reference, byte for byte.
#pragma once
#include "engine/tensor.h"

namespace dgpipe::compress::cuda_kernels {

// x: contiguous f32 on a CUDA device; body: u8 of the codec's body size on the same device.
void uniform_encode(const engine::Tensor& x, const engine::Tensor& body, int q_bits);
void sortquant_encode(const engine::Tensor& x, const engine::Tensor& body, int q_bits, int s_bits);
void fastquant_encode(const engine::Tensor& x, const engine::Tensor& body, int q_bits, int s_bits);
// Decodes a uniform (s_bits = 0), sortquant or fastquant body into out (contiguous f32, numel elements).
void group_decode(const engine::Tensor& body, const engine::Tensor& out, int q_bits, int s_bits);

}  // namespace dgpipe::compress::cuda_kernels
