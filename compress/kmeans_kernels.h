// CUDA launchers of 1-D k-means (kmeans.cu); the CPU twin is in kmeans.cpp.
// Conventions shared by every codec launcher: compress/codec.h, above codec_stream().
#pragma once
#include "engine/tensor.h"

namespace dgpipe::compress::cuda_kernels {

// x: contiguous f32, f16 or bf16 on a CUDA device. K = 2^bits centroids (bits <= 12), at most `iters` Lloyd
// iterations (the convergence test runs on the device; iterations after convergence return at once).
void kmeans_encode(const engine::Tensor& x, const engine::Tensor& body, int bits, int iters);
void kmeans_decode(const engine::Tensor& body, const engine::Tensor& out, int bits);

}  // namespace dgpipe::compress::cuda_kernels
