// Internal: factories of the concrete codecs (one source file each) and helpers they share.
#pragma once
#include <memory>
#include <vector>

#include "compress/codec.h"
#include "engine/host_device.h"
#include "engine/parallel.h"

namespace dgpipe::compress::detail {

std::unique_ptr<Codec> make_cast_codec(const CodecSpec& spec);             // cast.cpp
std::unique_ptr<Codec> make_uniform_codec(const CodecSpec& spec);          // uniform.cpp
std::unique_ptr<Codec> make_sortquant_codec(const CodecSpec& spec);        // sortquant.cpp
std::unique_ptr<Codec> make_fastquant_codec(const CodecSpec& spec);        // fastquant.cpp
std::unique_ptr<Codec> make_topk_codec(const CodecSpec& spec);             // topk.cpp
std::unique_ptr<Codec> make_power_codec(const CodecSpec& spec);            // lowrank.cpp
std::unique_ptr<Codec> make_svd_codec(const CodecSpec& spec);              // lowrank.cpp
std::unique_ptr<Codec> make_kmeans_codec(const CodecSpec& spec);           // kmeans.cpp
std::unique_ptr<Codec> make_grouped_uniform_codec(const CodecSpec& spec);  // grouped_uniform.cpp
std::unique_ptr<Codec> make_topk_chain_codec(const CodecSpec& spec);       // topk_chain.cpp
std::unique_ptr<Codec> make_delta_codec(const CodecSpec& spec);            // delta.cpp
std::unique_ptr<Codec> make_error_feedback(std::unique_ptr<Codec> inner,
                                           const CodecSpec& spec);  // error_feedback.cpp

// Contiguous f32 host copy of x (converting dtype and device as needed).
engine::Tensor host_f32(const engine::Tensor& x);
// Converts a decoded f32 tensor to `dtype` and `device`.
engine::Tensor finish_decode(const engine::Tensor& f32, engine::DType dtype, engine::Device device);

// The elements of a floating tensor as floats, read from host memory in the tensor's own dtype (f32, f16 and
// bf16 exactly; f64 rounded to f32), so that the CPU reference encodes a half tensor from its 2-byte values
// and never through an f32 copy of it. A CUDA or non-contiguous tensor is first copied to a contiguous host
// tensor of its own dtype.
class HostValues {
 public:
  explicit HostValues(const engine::Tensor& x);
  int64_t size() const { return n_; }
  // All the values as contiguous floats (operator[] of each): the tensor's own memory when it is f32, else a
  // converted copy made once (exact for f16 and bf16).
  const float* floats() const;
  // Whether every value is finite (no NaN or Inf).
  bool all_finite() const;
  float operator[](int64_t i) const {
    switch (dtype_) {
      case engine::DType::f32:
        return static_cast<const float*>(data_)[i];
      case engine::DType::f16:
        return engine::half_bits_to_float(static_cast<const uint16_t*>(data_)[i]);
      case engine::DType::bf16:
        return engine::bf16_bits_to_float(static_cast<const uint16_t*>(data_)[i]);
      default:
        return static_cast<float>(static_cast<const double*>(data_)[i]);
    }
  }

 private:
  engine::Tensor host_;  // keeps the values alive
  const void* data_ = nullptr;
  engine::DType dtype_ = engine::DType::f32;
  int64_t n_ = 0;
  mutable std::vector<float> converted_;  // floats() of a tensor that is not f32
};

// Composed codecs carry whole packets of their inner codecs inside their body (without the inner headers,
// which the receiver rebuilds from the shape and dtype). inner_packet: a packet of `codec` for a tensor of
// `shape` and `dtype` whose body is the slice [offset, offset + codec.body_bytes(shape, dtype)) of `body` (a
// view, no copy).
Packet inner_packet(const Codec& codec, const engine::Shape& shape, engine::DType dtype,
                    const engine::Tensor& body, uint64_t offset, const std::string& boundary);
// Copies inner's body into body at offset (any device; the body must have room).
void place_inner_body(const engine::Tensor& body, uint64_t offset, const Packet& inner);

// Reinterprets a contiguous tensor's bytes as a 1-D u8 tensor (shares storage).
engine::Tensor byte_view(const engine::Tensor& contiguous);
// Typed contiguous view of `shape` starting `byte_offset` bytes into a u8 body (shares storage).
engine::Tensor typed_view(const engine::Tensor& body, uint64_t byte_offset, engine::DType dtype,
                          const engine::Shape& shape);

// ---- body layouts (DGP_HD: the CPU reference, the CUDA kernels and the inspection helpers share them) ----
// Every lossy body starts with the prelude (packet.h); sections after it start 16-byte aligned, so a kernel
// stores them with 16-byte writes.
// Group quantizers (uniform = one group): prelude, K x (lo, step) f32, pad to 16, codes.
DGP_HD uint64_t group_stats_offset() {
  return kPreludeBytes;
}
DGP_HD uint64_t group_payload_offset(int groups) {
  return align16(kPreludeBytes + 8ull * static_cast<uint64_t>(groups));
}
// k-means: prelude, K f32 centroids, pad to 16, codes.
DGP_HD uint64_t kmeans_payload_offset(int centroids) {
  return align16(kPreludeBytes + 4ull * static_cast<uint64_t>(centroids));
}
// Top-k: prelude, k f32 values, pad to 16, packed indices.
DGP_HD uint64_t topk_index_offset(int64_t k) {
  return align16(kPreludeBytes + 4ull * static_cast<uint64_t>(k));
}
// Low rank: prelude, pad to 16, L [b, m, r] f32, R [b, n, r] f32.
DGP_HD uint64_t lowrank_l_offset() {
  return align16(kPreludeBytes);
}

// Grouped uniform quantization (uniform:Q/channel, /row): element i of the flattened tensor, seen as
// [outer, groups, inner], belongs to group (i / inner) % groups. Body: as a group quantizer with `groups`
// groups, then Q-bit codes (the group is not in the code).
DGP_HD int64_t element_group(int64_t i, int64_t groups, int64_t inner) {
  return (i / inner) % groups;
}

// CPU reference pieces shared by uniform / sortquant / fastquant (group_quant.cpp).
// Packs codes[0..n) of `bits` bits densely into out (ceil(n*bits/8) bytes; the bytes of a last partial block
// must start zeroed).
void pack_codes(const uint32_t* codes, int64_t n, int bits, uint8_t* out);
// The same for codes[0..m) placed at code position `first` (a multiple of 8) of the stream at payload.
void pack_codes_at(const uint32_t* codes, int64_t first, int64_t m, int bits, uint8_t* payload);
// Reads codes [first, first + m) (first a multiple of 8) of a stream of nbytes bytes into codes[0..m).
void unpack_codes(const uint8_t* payload, uint64_t nbytes, int64_t first, int64_t m, int bits,
                  uint32_t* codes);
// Smallest and largest of x[0..n) (0 and 0 when n == 0). Returns whether every value is finite, checked in
// the same pass (a codec's NaN/Inf check); when not, lo and hi mean nothing.
bool min_max(const float* x, int64_t n, float* lo, float* hi);
// codes[i] = uniform_code(x[i], lo, step, q_bits) for i < m.
void uniform_codes(const float* x, int64_t m, float lo, float step, int q_bits, uint32_t* codes);
// codes[i] = (g << q_bits) | group_value_code(x[i], lo[g], step[g], q_bits) with g = group[i] (< groups <=
// 256), for i < m.
void group_codes(const float* x, const uint8_t* group, int64_t m, const float* lo, const float* step,
                 int groups, int q_bits, uint32_t* codes);
// Encodes n values in chunks without a full-size code array: code_chunk(first, m, codes) fills codes[0..m)
// for elements [first, first + m), which are then packed at `payload`. Chunks are coded in order, so
// code_chunk may keep state from one chunk to the next.
constexpr int64_t kEncodeChunk = 1024;  // a multiple of 8: chunks start on whole packing blocks
template <class CodeChunk>
void encode_chunk(int64_t c, int64_t n, int bits, uint8_t* payload, CodeChunk& code_chunk, uint32_t* codes) {
  const int64_t first = c * kEncodeChunk;
  const int64_t m = n - first < kEncodeChunk ? n - first : kEncodeChunk;
  code_chunk(first, m, codes);
  pack_codes_at(codes, first, m, bits, payload);
}
template <class CodeChunk>
void encode_in_chunks(int64_t n, int bits, uint8_t* payload, CodeChunk code_chunk) {
  uint32_t codes[kEncodeChunk];
  for (int64_t c = 0; c * kEncodeChunk < n; ++c) encode_chunk(c, n, bits, payload, code_chunk, codes);
}
// The same for a code_chunk that keeps no state (it may run concurrently): the chunks are coded on the op
// threads (engine/parallel.h). Each chunk writes whole bytes of its own, so the body is the same at any
// thread count.
template <class CodeChunk>
void encode_in_parallel_chunks(int64_t n, int bits, uint8_t* payload, CodeChunk code_chunk) {
  engine::parallel_for((n + kEncodeChunk - 1) / kEncodeChunk, 16, [&](int64_t c0, int64_t c1) {
    uint32_t codes[kEncodeChunk];
    for (int64_t c = c0; c < c1; ++c) encode_chunk(c, n, bits, payload, code_chunk, codes);
  });
}
// Writes prelude + K x (lo, step) into the head of a host body.
void write_group_stats(uint8_t* body, const float* lo, const float* step, int groups);
// Decodes a group-quantizer body: out[i] = lo[g] + q * step[g], g = code >> Q, q = code & (2^Q - 1).
void group_decode_cpu(const uint8_t* body, uint64_t body_bytes, int64_t n, int q_bits, int s_bits,
                      float* out);
uint64_t group_body_bytes(int64_t n, int q_bits, int s_bits);
// Fast quantization's sample (shared with fastquant.cu): size, j-th sampled flat index, and the 0-based rank
// in the sorted sample of boundary g (1 <= g < K).
constexpr int64_t kFastQuantSample = 8192;
int64_t fastquant_sample_size(int64_t n);
inline int64_t fastquant_sample_index(int64_t j, int64_t n, int64_t ns) {
  return static_cast<int64_t>((static_cast<unsigned __int128>(j) * static_cast<uint64_t>(n)) /
                              static_cast<uint64_t>(ns));
}
inline int64_t fastquant_boundary_rank(int g, int groups, int64_t ns) {
  int64_t r = (static_cast<int64_t>(g) * ns + groups - 1) / groups - 1;  // ceil(g*ns/K) - 1
  return r < 0 ? 0 : r;
}
// Decodes a uniform / sortquant / fastquant packet into `dtype` on the device of its body.
engine::Tensor decode_group_packet(const Packet& p, int q_bits, int s_bits, engine::DType dtype);

}  // namespace dgpipe::compress::detail
