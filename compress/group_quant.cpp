// CPU pieces shared by the min/max group quantizers (uniform = one group, sortquant, fastquant).
#include <cstring>

#include "compress/codec_impl.h"
#include "compress/quant_math.h"
#include "engine/error.h"

namespace dgpipe::compress::detail {

void pack_codes(const uint32_t* codes, int64_t n, int bits, uint8_t* out) {
  const int64_t full = n / 8;
  for (int64_t blk = 0; blk < full; ++blk) pack8(codes + blk * 8, bits, out + blk * bits);
  for (int64_t i = full * 8; i < n; ++i) put_bits(out, static_cast<uint64_t>(i), bits, codes[i]);
}

void write_group_stats(uint8_t* body, const float* lo, const float* step, int groups) {
  std::memset(body, 0, kPreludeBytes);
  for (int g = 0; g < groups; ++g) {
    float pair[2] = {lo[g] + 0.0f, step[g] + 0.0f};  // + 0.0f turns -0 into +0: one canonical byte pattern
    std::memcpy(body + group_stats_offset() + 8ull * g, pair, 8);
  }
}

uint64_t group_body_bytes(int64_t n, int q_bits, int s_bits) {
  return group_payload_offset(1 << s_bits) + packed_bytes(static_cast<uint64_t>(n), q_bits + s_bits);
}

void group_decode_cpu(const uint8_t* body, uint64_t body_bytes, int64_t n, int q_bits, int s_bits,
                      float* out) {
  const int groups = 1 << s_bits;
  std::vector<float> lo(groups), step(groups);
  for (int g = 0; g < groups; ++g) {
    std::memcpy(&lo[g], body + group_stats_offset() + 8ull * g, 4);
    std::memcpy(&step[g], body + group_stats_offset() + 8ull * g + 4, 4);
  }
  const uint64_t off = group_payload_offset(groups);
  const uint8_t* payload = body + off;
  const uint64_t nbytes = body_bytes - off;
  const int bits = q_bits + s_bits;
  const uint32_t qmask = (1u << q_bits) - 1u;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t code = get_bits(payload, nbytes, static_cast<uint64_t>(i), bits);
    uint32_t g = code >> q_bits;  // always < groups: the code has exactly Q + S bits
    out[i] = dequant(code & qmask, lo[g], step[g]);
  }
}

}  // namespace dgpipe::compress::detail
