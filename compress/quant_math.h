// Scalar formulas shared by the CPU reference codecs and their CUDA twins, so both compute bit-identical
// codes. No CUDA headers: under nvcc the functions become __host__ __device__ (DGP_HD, engine/host_device.h).
//
// Bit packing: code i of width W bits occupies bits [i*W, (i+1)*W) of the payload, bit 0 being the least
// significant bit of byte 0 (little-endian bit order). Eight codes of width W fill exactly W bytes, which is
// the unit a CUDA thread packs (8 elements = two 16-byte loads -> W bytes stored).
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "engine/host_device.h"

namespace dgpipe::compress {

// Bytes of a densely bit-packed array of n codes of `bits` bits.
DGP_HD uint64_t packed_bytes(uint64_t n, int bits) {
  return (n * static_cast<uint64_t>(bits) + 7) / 8;
}

// Round half to even in the current (default, nearest) rounding mode, as torch.round. nearbyint never raises
// FE_INEXACT-dependent traps and matches the CUDA rintf.
DGP_HD float round_half_even(float v) {
#ifdef __CUDA_ARCH__
  return rintf(v);
#else
  return std::nearbyint(v);
#endif
}

// IEEE single-precision operations written so that nvcc cannot contract them into an FMA (the CPU build never
// contracts: no -ffp-contract=fast on a target without FMA), keeping CPU and GPU results bit-identical.
DGP_HD float fsub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
DGP_HD float fmul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
DGP_HD float fadd(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
DGP_HD float fdiv(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// Step of a min/max quantizer with `levels` = 2^Q - 1 intervals: (hi - lo) / levels, in fp32 like the
// original (docs/original.md#uniform-quantization).
DGP_HD float quant_step(float lo, float hi, uint32_t levels) {
  return fdiv(fsub(hi, lo), static_cast<float>(levels));
}

// Uniform quantizer, bit-compatible with the original: code = round((x - lo)/step - 2^(Q-1)) + 2^(Q-1).
// The original stores the signed value round(...) (its offset code); the unsigned code sent here is that
// value plus 2^(Q-1). Subtracting the (exactly representable) offset before rounding is kept so that fp32
// rounding of the subtraction, and thus every tie, is the original's. A zero step (constant tensor) gives
// code 0. See docs/original.md#uniform-quantization and #b2.
DGP_HD uint32_t uniform_code(float x, float lo, float step, int q_bits) {
  if (!(step > 0.0f)) return 0u;
  const float half_range = static_cast<float>(1u << (q_bits - 1));
  float r = fadd(round_half_even(fsub(fdiv(fsub(x, lo), step), half_range)), half_range);
  const float top = static_cast<float>((1u << q_bits) - 1u);
  r = r < 0.0f ? 0.0f : (r > top ? top : r);
  return static_cast<uint32_t>(r);
}

// Group quantizer of sort/fast quantization (original: q = round((v - m_i)/step_i), no offset; see
// docs/original.md#sort-quantization).
DGP_HD uint32_t group_value_code(float x, float lo, float step, int q_bits) {
  if (!(step > 0.0f)) return 0u;
  float r = round_half_even(fdiv(fsub(x, lo), step));
  const float top = static_cast<float>((1u << q_bits) - 1u);
  r = r < 0.0f ? 0.0f : (r > top ? top : r);
  return static_cast<uint32_t>(r);
}

// Arithmetic decode of a value code: lo + q*step (no FMA, so every backend gives the same float).
DGP_HD float dequant(uint32_t q, float lo, float step) {
  return fadd(fmul(static_cast<float>(q), step), lo);
}

// Order-preserving map of a float to an unsigned key (negative values flipped). -0 is mapped to +0 so that
// the two zeros, equal as floats, are one key (the CPU compares floats, the GPU compares keys).
DGP_HD uint32_t float_to_key(float f) {
  uint32_t u;
#ifdef __CUDA_ARCH__
  u = __float_as_uint(f);
#else
  std::memcpy(&u, &f, 4);
#endif
  if (u == 0x80000000u) u = 0u;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
DGP_HD float key_to_float(uint32_t k) {
  uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
  float f;
#ifdef __CUDA_ARCH__
  f = __uint_as_float(u);
#else
  std::memcpy(&f, &u, 4);
#endif
  return f;
}

DGP_HD bool is_finite_float(float x) {
#ifdef __CUDA_ARCH__
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}

// Writes code `value` (< 2^bits) at position i of a bit-packed stream (CPU reference; bytes must start
// zeroed).
inline void put_bits(uint8_t* out, uint64_t i, int bits, uint32_t value) {
  uint64_t bit = i * static_cast<uint64_t>(bits);
  int written = 0;
  while (written < bits) {
    uint64_t byte = bit >> 3;
    int shift = static_cast<int>(bit & 7);
    int take = 8 - shift < bits - written ? 8 - shift : bits - written;
    out[byte] |= static_cast<uint8_t>(((value >> written) & ((1u << take) - 1u)) << shift);
    written += take;
    bit += static_cast<uint64_t>(take);
  }
}

// Reads code i of width `bits` (<= 32) from a packed stream of total length `nbytes`.
DGP_HD uint32_t get_bits(const uint8_t* in, uint64_t nbytes, uint64_t i, int bits) {
  uint64_t bit = i * static_cast<uint64_t>(bits);
  uint64_t byte = bit >> 3;
  int shift = static_cast<int>(bit & 7);
  uint64_t window = 0;
  for (int b = 0; b < 5 && byte + static_cast<uint64_t>(b) < nbytes; ++b)
    window |= static_cast<uint64_t>(in[byte + static_cast<uint64_t>(b)]) << (8 * b);
  return static_cast<uint32_t>((window >> shift) & ((uint64_t(1) << bits) - 1u));
}

// Packs 8 codes of `bits` bits into exactly `bits` bytes (the CUDA store unit; also used by the CPU loop).
DGP_HD void pack8(const uint32_t codes[8], int bits, uint8_t* out) {
  // Accumulate in 64 bits and flush whole bytes: at most 8 + 16 pending bits.
  uint64_t acc = 0;
  int pending = 0, pos = 0;
  for (int k = 0; k < 8; ++k) {
    acc |= static_cast<uint64_t>(codes[k]) << pending;
    pending += bits;
    while (pending >= 8) {
      out[pos++] = static_cast<uint8_t>(acc & 0xffu);
      acc >>= 8;
      pending -= 8;
    }
  }
}

}  // namespace dgpipe::compress
