// Counter-based RNG (Philox4x32-10). Element i of a draw depends only on (seed, offset, i), so the CPU and
// the CUDA kernels produce the same sequence and a run is reproducible from its seed.
#pragma once
#include <cstdint>
#include <mutex>

namespace dgpipe::engine {

struct PhiloxState {
  uint64_t seed = 0;
  uint64_t offset = 0;  // in 128-bit counter blocks
};

// One Philox4x32-10 block for (key = seed, counter = (block, subsequence)).
void philox4x32(uint64_t seed, uint64_t counter, uint32_t out[4]);

// Uniform float in [0,1) from 24 random bits, as every kernel uses it.
inline float uniform_from_bits(uint32_t bits) {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);
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

// Draw rules shared by CPU and CUDA (keep in sync with engine/ops/random.cu):
//  uniform element i: block = offset + i/4, word i%4.
//  normal element i:  block = offset + i/2, Box–Muller on words (0,1): even i -> r*cos, odd i -> r*sin.
//  dropout element i (row-major over the contiguous input): kept iff philox_uniform(s, i) >= float(p), i.e.
//  the
//    uniform rule above compared in float against p rounded to float; kept values are scaled by 1/(1-p)
//    (computed in double, then rounded to the tensor's dtype). A dropout of n elements reserves ceil(n/4)
//    blocks, and the backward pass regenerates the same mask from the saved state (engine/ops/dropout.cpp,
//    dropout.cu).
float philox_uniform(PhiloxState s, uint64_t i);
float philox_normal(PhiloxState s, uint64_t i);

}  // namespace dgpipe::engine
