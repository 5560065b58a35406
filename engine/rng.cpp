#include "engine/rng.h"

#include <cmath>

namespace dgpipe::engine {

void philox4x32(uint64_t seed, uint64_t counter, uint32_t out[4]) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(M0) * c0;
    uint64_t p1 = static_cast<uint64_t>(M1) * c2;
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
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

Generator& default_generator() {
  static Generator gen(0x5eed);
  return gen;
}

void manual_seed(uint64_t seed) {
  default_generator().manual_seed(seed);
}

float philox_uniform(PhiloxState s, uint64_t i) {
  uint32_t w[4];
  philox4x32(s.seed, s.offset + i / 4, w);
  return uniform_from_bits(w[i % 4]);
}

float philox_normal(PhiloxState s, uint64_t i) {
  uint32_t w[4];
  philox4x32(s.seed, s.offset + i / 2, w);
  // u1 in (0,1] so the log is finite.
  float u1 = (static_cast<float>(w[0] >> 8) + 1.0f) * (1.0f / 16777216.0f);
  float u2 = uniform_from_bits(w[1]);
  float r = std::sqrt(-2.0f * std::log(u1));
  float theta = 6.283185307179586f * u2;
  return (i % 2 == 0) ? r * std::cos(theta) : r * std::sin(theta);
}

}  // namespace dgpipe::engine
