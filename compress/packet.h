// Packet: what one codec sends across one boundary for one tensor.
//
// Wire layout (one contiguous byte buffer, little-endian):
//   header  = magic "DGPK" | version u8 | codec u8 | dtype u8 | ndim u8 | nparams u8 | 3 reserved bytes
//             | shape: ndim x i64 | params: nparams x i64 | body_bytes u64
//   body    = the codec's statistics section (per-group min/step, centroids, ...) followed by its payload.
// The header is known on the host before any kernel runs (it depends only on codec, shape and parameters), so
// a CUDA encode never waits for the device; the statistics the kernels compute stay on the device at the head
// of the body and travel with the payload. wire_bytes() = header bytes + body bytes, exactly what crosses the
// link.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/host_device.h"
#include "engine/tensor.h"

namespace dgpipe::compress {

enum class CodecId : uint8_t {
  none = 0,
  fp16,
  bf16,
  uniform,
  sortquant,
  fastquant,
  topk,
  power,
  svd,
  kmeans,
  topk_chain,  // topk:R>Q: the kept values quantized by Q
  delta        // delta[:F]>C: per-sample changes (compress/delta.cpp)
};
constexpr CodecId kLastCodecId = CodecId::delta;
const char* codec_id_name(CodecId id);
// Whether a body of this codec starts with the prelude (the lossy codecs; not none, fp16, bf16).
bool codec_has_prelude(CodecId id);

constexpr uint32_t kPacketMagic = 0x4b504744u;  // "DGPK" read as little-endian u32
constexpr uint8_t kPacketVersion = 1;
// Bodies of the lossy codecs start with an 8-byte prelude: a u32 status word (number of non-finite inputs
// seen by a CUDA encode, saturating; the CPU encode throws instead) and a reserved u32.
constexpr uint64_t kPreludeBytes = 8;
DGP_HD uint64_t align16(uint64_t n) {
  return (n + 15) & ~uint64_t(15);
}

struct PacketHeader {
  CodecId codec = CodecId::none;
  engine::DType dtype = engine::DType::f32;  // dtype of the encoded tensor; decode returns it
  engine::Shape shape;
  std::vector<int64_t> params;  // codec parameters (Q, S / kept count / rank / bits ...)
  uint64_t body_bytes = 0;

  uint64_t bytes() const { return 12 + 8 * (shape.size() + params.size()) + 8; }
  bool operator==(const PacketHeader& o) const {
    return codec == o.codec && dtype == o.dtype && shape == o.shape && params == o.params &&
           body_bytes == o.body_bytes;
  }
};

struct Packet {
  PacketHeader header;
  engine::Tensor body;   // u8, on the device of the encoded tensor
  std::string boundary;  // not sent: names the boundary in error messages

  uint64_t header_bytes() const { return header.bytes(); }
  uint64_t body_bytes() const { return body.defined() ? static_cast<uint64_t>(body.nbytes()) : 0; }
  uint64_t wire_bytes() const { return header_bytes() + body_bytes(); }

  // One contiguous host buffer (what a channel sends). Copies a device body to the host and validates the
  // status word (a CUDA encode that saw NaN/Inf is reported here, naming the boundary).
  std::vector<uint8_t> serialize() const;
  // Parses and validates (magic, version, codec, dtype, sizes, truncation); the body is placed on `device`.
  static Packet deserialize(const uint8_t* data, size_t nbytes, engine::Device device = engine::Device::cpu(),
                            const std::string& boundary = "");
  static Packet deserialize(const std::vector<uint8_t>& bytes, engine::Device device = engine::Device::cpu(),
                            const std::string& boundary = "") {
    return deserialize(bytes.data(), bytes.size(), device, boundary);
  }
  // The header alone (the first header_bytes() of serialize()), for channels that move the body separately
  // and keep it on the device (the NCCL channel). Validates the status word and the body size like
  // serialize().
  std::vector<uint8_t> serialize_header() const;
  // Rebuilds a packet from serialize_header() bytes (exactly those, nothing after them) and a body that
  // travelled on its own: a 1-D contiguous u8 tensor of header.body_bytes bytes on any device (an undefined
  // tensor stands for an empty body). The body is used as it is (no copy).
  static Packet deserialize_with_body(const uint8_t* header, size_t nbytes, engine::Tensor body,
                                      const std::string& boundary = "");
  // Host copy of the body (the body itself when it is on the CPU).
  engine::Tensor host_body() const;
  // Throws when the status word records non-finite inputs (reads the device; call where a sync is
  // acceptable).
  void check_status() const;
};

// Allocates a zeroed u8 body of n bytes on `device`.
engine::Tensor make_body(uint64_t nbytes, engine::Device device);

}  // namespace dgpipe::compress
