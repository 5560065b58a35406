// Counter-based RNG (Philox4x32-10). Element i of a draw depends only on (seed, offset, i), so the CPU and
// the CUDA kernels produce the same sequence and a run is reproducible from its seed.
#pragma once
#include <cmath>
#include <cstdint>
#include <mutex>

#include "engine/host_device.h"

namespace dgpipe::engine {

struct PhiloxState {
  uint64_t seed = 0;
  uint64_t offset = 0;  // in 128-bit counter blocks
};

// One Philox4x32-10 block for (key = seed, counter = (block, subsequence)). Shared by the CPU and the CUDA
// kernels (DGP_HD), so both draw the same bits.
DGP_HD void philox4x32(uint64_t seed, uint64_t counter, uint32_t out[4]) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
#ifdef __CUDA_ARCH__
    const uint32_t hi0 = __umulhi(M0, c0), lo0 = M0 * c0;
    const uint32_t hi1 = __umulhi(M1, c2), lo1 = M1 * c2;
#else
    const uint64_t p0 = static_cast<uint64_t>(M0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(M1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
#endif
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += W0;
    k1 += W1;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// Uniform float in [0,1) from 24 random bits, as every kernel uses it.
DGP_HD float uniform_from_bits(uint32_t bits) {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);
}

// Box–Muller on the first two words of a block: the pair (r cos theta, r sin theta) of normals. u1 is in
// (0,1] so the log is finite. Full-precision math on the device too (no fast intrinsics), so the values match
// the CPU's to float rounding.
DGP_HD void box_muller(const uint32_t w[4], float& r, float& theta) {
  const float u1 = (static_cast<float>(w[0] >> 8) + 1.0f) * (1.0f / 16777216.0f);
  r = std::sqrt(-2.0f * std::log(u1));
  theta = 6.283185307179586f * uniform_from_bits(w[1]);
}

class Generator {
 public:
  explicit Generator(uint64_t seed = 0x5eed) { state_.seed = seed; }
  void manual_seed(uint64_t seed) {
    std::lock_guard<std::mutex> lock(mu_);
    state_ = PhiloxState{seed, 0};
  }
  // Reserves `blocks` counter blocks and returns the state to draw them from.
  PhiloxState reserve(uint64_t blocks) {
    std::lock_guard<std::mutex> lock(mu_);
    PhiloxState s = state_;
    state_.offset += blocks;
    return s;
  }
  PhiloxState state() const { return state_; }
  void set_state(PhiloxState s) { state_ = s; }

 private:
  PhiloxState state_;
  std::mutex mu_;
};

Generator& default_generator();
void manual_seed(uint64_t seed);

// Draw rules shared by CPU and CUDA (engine/ops/copy.cu, dropout.cu and compress/lowrank.cu call the
// functions below):
//  uniform element i: block = offset + i/4, word i%4.
//  normal element i:  block = offset + i/2, Box–Muller on words (0,1): even i -> r*cos, odd i -> r*sin.
//  dropout element i (row-major over the contiguous input): kept iff philox_uniform(s, i) >= float(p), i.e.
//  the
//    uniform rule above compared in float against p rounded to float; kept values are scaled by 1/(1-p)
//    (computed in double, then rounded to the tensor's dtype). A dropout of n elements reserves ceil(n/4)
//    blocks, and the backward pass regenerates the same mask from the saved state (engine/ops/dropout.cpp,
//    dropout.cu).
DGP_HD float philox_uniform(PhiloxState s, uint64_t i) {
  uint32_t w[4];
  philox4x32(s.seed, s.offset + i / 4, w);
  return uniform_from_bits(w[i % 4]);
}
DGP_HD float philox_normal(PhiloxState s, uint64_t i) {
  uint32_t w[4];
  philox4x32(s.seed, s.offset + i / 2, w);
  float r, theta;
  box_muller(w, r, theta);
  return (i % 2 == 0) ? r * std::cos(theta) : r * std::sin(theta);
}

}  // namespace dgpipe::engine
