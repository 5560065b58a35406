// CUDA launchers of the low-rank codecs, power iteration and randomized SVD (lowrank.cu); the CPU twins are
// in lowrank.cpp.
// Conventions shared by every codec launcher: compress/codec.h, above codec_stream().
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace dgpipe::compress::cuda_kernels {

// a: contiguous f32 [b, m, n]; L = body f32 [b, m, r] at lowrank_l_offset(), R = body f32 [b, n, r] right
// after it. power: `state` is the warm-start P [b, n, r] (f32, device), updated in place; `call` is the
// codec's call counter (it seeds the re-draw of collapsed columns exactly as the CPU reference does).
void power_encode(const engine::Tensor& a, const engine::Tensor& state, const engine::Tensor& body, int64_t r,
                  int iters, uint64_t call);
// Largest rank whose eigen-decomposition fits one block's shared memory; svd of a higher rank runs the CPU
// reference on a host copy.
constexpr int64_t kSvdMaxCudaRank = 64;
void svd_encode(const engine::Tensor& a, const engine::Tensor& body, int64_t r, int iters, uint64_t call);
// out: contiguous f32 [b, m, n] = L R^T.
void lowrank_decode(const engine::Tensor& body, const engine::Tensor& out, int64_t r);
// Philox normals of the power iteration's initial state (seed 0x90e3 + r, element i of the flat [b, n, r]).
void power_init_state(const engine::Tensor& state, int64_t r);

}  // namespace dgpipe::compress::cuda_kernels
