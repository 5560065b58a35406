#include "compress/packet.h"

#include <cstring>

#include "engine/error.h"

namespace dgpipe::compress {

const char* codec_id_name(CodecId id) {
  switch (id) {
    case CodecId::none:
      return "none";
    case CodecId::fp16:
      return "fp16";
    case CodecId::bf16:
      return "bf16";
    case CodecId::uniform:
      return "uniform";
    case CodecId::sortquant:
      return "sortquant";
    case CodecId::fastquant:
      return "fastquant";
    case CodecId::topk:
      return "topk";
    case CodecId::power:
      return "power";
    case CodecId::svd:
      return "svd";
    case CodecId::kmeans:
      return "kmeans";
    case CodecId::topk_chain:
      return "topk_chain";
    case CodecId::delta:
      return "delta";
  }
  return "?";
}

bool codec_has_prelude(CodecId id) {
  return id != CodecId::none && id != CodecId::fp16 && id != CodecId::bf16;
}

engine::Tensor make_body(uint64_t nbytes, engine::Device device) {
  engine::Tensor t =
      engine::zeros({static_cast<int64_t>(nbytes)}, engine::TensorOptions(engine::DType::u8, device));
  return t;
}

engine::Tensor Packet::host_body() const {
  if (!body.defined()) return make_body(0, engine::Device::cpu());
  return body.device().is_cpu() ? body : body.to(engine::Device::cpu());
}

namespace {
std::string where(const std::string& boundary) {
  return boundary.empty() ? std::string("packet") : "packet at boundary '" + boundary + "'";
}
template <class T>
void put(std::vector<uint8_t>& out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.insert(out.end(), b, b + sizeof(T));
}
}  // namespace

void Packet::check_status() const {
  if (!codec_has_prelude(header.codec) || body_bytes() < 4) return;
  engine::Tensor hb = body.device().is_cpu() ? body : body.slice(0, 0, 4).to(engine::Device::cpu());
  uint32_t status;
  std::memcpy(&status, hb.raw_data(), 4);
  DGP_CHECK(status == 0, codec_id_name(header.codec)
                             << " encode at boundary '" << (boundary.empty() ? "(unnamed)" : boundary)
                             << "': input " << engine::shape_str(header.shape) << " contains " << status
                             << " non-finite values (NaN/Inf); refusing to send it");
}

std::vector<uint8_t> Packet::serialize_header() const {
  check_status();
  DGP_CHECK(header.body_bytes == body_bytes(), where(boundary)
                                                   << ": header says " << header.body_bytes
                                                   << " body bytes but the body has " << body_bytes());
  DGP_CHECK(header.shape.size() < 256 && header.params.size() < 256, where(boundary)
                                                                         << ": too many dims/params");
  std::vector<uint8_t> out;
  out.reserve(header_bytes());
  put<uint32_t>(out, kPacketMagic);
  put<uint8_t>(out, kPacketVersion);
  put<uint8_t>(out, static_cast<uint8_t>(header.codec));
  put<uint8_t>(out, static_cast<uint8_t>(header.dtype));
  put<uint8_t>(out, static_cast<uint8_t>(header.shape.size()));
  put<uint8_t>(out, static_cast<uint8_t>(header.params.size()));
  put<uint8_t>(out, 0);
  put<uint8_t>(out, 0);
  put<uint8_t>(out, 0);
  for (int64_t d : header.shape) put<int64_t>(out, d);
  for (int64_t p : header.params) put<int64_t>(out, p);
  put<uint64_t>(out, header.body_bytes);
  DGP_CHECK(out.size() == header_bytes(), "Packet::serialize_header: internal size mismatch");
  return out;
}

std::vector<uint8_t> Packet::serialize() const {
  std::vector<uint8_t> out = serialize_header();
  out.reserve(wire_bytes());
  engine::Tensor hb = host_body();
  const uint8_t* b = static_cast<const uint8_t*>(hb.raw_data());
  out.insert(out.end(), b, b + body_bytes());
  DGP_CHECK(out.size() == wire_bytes(), "Packet::serialize: internal size mismatch");
  return out;
}

namespace {
// Parses and validates the header at the start of data; returns the packet (without body) and sets *pos to
// the first byte after the header.
Packet parse_header(const uint8_t* data, size_t nbytes, const std::string& boundary, size_t* header_end) {
  const std::string w = where(boundary);
  size_t pos = 0;
  auto need = [&](size_t n, const char* what) {
    DGP_CHECK(pos + n <= nbytes,
              w << ": truncated (" << nbytes << " bytes) while reading " << what << " at byte " << pos);
  };
  auto get = [&](auto& v, const char* what) {
    need(sizeof(v), what);
    std::memcpy(&v, data + pos, sizeof(v));
    pos += sizeof(v);
  };
  uint32_t magic = 0;
  get(magic, "magic");
  DGP_CHECK(magic == kPacketMagic, w << ": bad magic 0x" << std::hex << magic << " (expected 0x"
                                     << kPacketMagic << ", \"DGPK\"): not a dgpipe packet");
  uint8_t version, codec, dtype, ndim, nparams, r0, r1, r2;
  get(version, "version");
  DGP_CHECK(version == kPacketVersion, w << ": unsupported packet version " << int(version)
                                         << " (this build reads " << int(kPacketVersion) << ")");
  get(codec, "codec id");
  DGP_CHECK(codec <= static_cast<uint8_t>(kLastCodecId), w << ": unknown codec id " << int(codec));
  get(dtype, "dtype");
  DGP_CHECK(dtype <= static_cast<uint8_t>(engine::DType::boolean), w << ": unknown dtype id " << int(dtype));
  get(ndim, "ndim");
  get(nparams, "nparams");
  get(r0, "reserved");
  get(r1, "reserved");
  get(r2, "reserved");
  Packet p;
  p.boundary = boundary;
  p.header.codec = static_cast<CodecId>(codec);
  p.header.dtype = static_cast<engine::DType>(dtype);
  for (int i = 0; i < ndim; ++i) {
    int64_t d;
    get(d, "shape");
    DGP_CHECK(d >= 0, w << ": negative dimension " << d);
    p.header.shape.push_back(d);
  }
  for (int i = 0; i < nparams; ++i) {
    int64_t v;
    get(v, "params");
    p.header.params.push_back(v);
  }
  get(p.header.body_bytes, "body size");
  *header_end = pos;
  return p;
}
}  // namespace

Packet Packet::deserialize(const uint8_t* data, size_t nbytes, engine::Device device,
                           const std::string& boundary) {
  size_t pos = 0;
  Packet p = parse_header(data, nbytes, boundary, &pos);
  DGP_CHECK(nbytes - pos == p.header.body_bytes,
            where(boundary) << ": header announces " << p.header.body_bytes << " body bytes but "
                            << (nbytes - pos) << " follow"
                            << (nbytes - pos < p.header.body_bytes ? " (truncated)" : ""));
  engine::Tensor hb = make_body(p.header.body_bytes, engine::Device::cpu());
  if (p.header.body_bytes) std::memcpy(hb.raw_data(), data + pos, p.header.body_bytes);
  p.body = device.is_cpu() ? hb : hb.to(device);
  return p;
}

Packet Packet::deserialize_with_body(const uint8_t* header, size_t nbytes, engine::Tensor body,
                                     const std::string& boundary) {
  const std::string w = where(boundary);
  size_t pos = 0;
  Packet p = parse_header(header, nbytes, boundary, &pos);
  DGP_CHECK(pos == nbytes, w << ": " << (nbytes - pos)
                             << " bytes follow the header; a header sent apart from its body "
                             << "must stand alone");
  if (!body.defined()) {
    DGP_CHECK(p.header.body_bytes == 0,
              w << ": header announces " << p.header.body_bytes << " body bytes but no body arrived");
    p.body = make_body(0, engine::Device::cpu());
    return p;
  }
  DGP_CHECK(body.dtype() == engine::DType::u8 && body.dim() == 1 && body.is_contiguous(),
            w << ": a body must be a 1-D contiguous u8 tensor, got " << engine::dtype_name(body.dtype())
              << " " << engine::shape_str(body.shape()));
  DGP_CHECK(
      static_cast<uint64_t>(body.numel()) == p.header.body_bytes,
      w << ": header announces " << p.header.body_bytes << " body bytes but the body has " << body.numel());
  p.body = std::move(body);
  return p;
}

}  // namespace dgpipe::compress
