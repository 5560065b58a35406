// CUDA launchers of top-k (topk.cu); the CPU twin is in topk.cpp.
// Conventions shared by every codec launcher: compress/codec.h, above codec_stream().
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace dgpipe::compress::cuda_kernels {

// x: contiguous f32, f16 or bf16 on a CUDA device, n = x.numel() < 2^32; body: u8 of the top-k body size for
// n and k. Same packet bytes as the CPU reference (values and indices in increasing index order, ties to the
// smaller index).
void topk_encode(const engine::Tensor& x, const engine::Tensor& body, int64_t k);
// out: contiguous f32 of n elements on the body's device; zero except the k sent positions. Indices >= n
// (only a corrupted packet has them) are dropped rather than written out of bounds.
void topk_decode(const engine::Tensor& body, const engine::Tensor& out, int64_t k);

}  // namespace dgpipe::compress::cuda_kernels
