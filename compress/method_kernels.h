// CUDA launchers of top-k (topk.cu), 1-D k-means (kmeans.cu) and the low-rank codecs (lowrank.cu).
// CUDA-free header: callers include it unconditionally and call the launchers only under DGPIPE_WITH_CUDA.
// Every launcher runs on codec_stream() (the engine's current stream), never waits for the device, and writes
// the whole body in the layout of the CPU reference: prelude (its status word counts the non-finite inputs),
// then the method's statistics and payload.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace dgpipe::compress::cuda_kernels {

// ---- top-k (topk.cu) ----
// x: contiguous f32 on a CUDA device, n = x.numel() < 2^32; body: u8 of the top-k body size for n and k.
// Same packet bytes as the CPU reference (values and indices in increasing index order, ties to the smaller
// index).
void topk_encode(const engine::Tensor& x, const engine::Tensor& body, int64_t k);
// out: contiguous f32 of n elements on the body's device; zero except the k sent positions. Indices >= n
// (only a corrupted packet has them) are dropped rather than written out of bounds.
void topk_decode(const engine::Tensor& body, const engine::Tensor& out, int64_t k);

// ---- 1-D k-means (kmeans.cu) ----
// K = 2^bits centroids (bits <= 12), at most `iters` Lloyd iterations (the convergence test runs on the
// device; iterations after convergence return at once).
void kmeans_encode(const engine::Tensor& x, const engine::Tensor& body, int bits, int iters);
void kmeans_decode(const engine::Tensor& body, const engine::Tensor& out, int bits);

// ---- low rank (lowrank.cu) ----
// a: contiguous f32 [b, m, n]; L = body f32 [b, m, r] at byte 16, R = body f32 [b, n, r] right after it.
// power: `state` is the warm-start P [b, n, r] (f32, device), updated in place; `call` is the codec's call
// counter (it seeds the re-draw of collapsed columns exactly as the CPU reference does).
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
