// none / fp16 / bf16: the tensor's bytes, optionally cast to a 16-bit float. Lossless (none) or
// round-to-nearest-even casts; no statistics, no prelude. Runs on any device through the engine's dtype
// conversion. On a half input (f16 or bf16) fp16 and bf16 are the identity: the tensor is sent in its own
// dtype (a bf16 tensor is never squeezed into f16's range), so the wire dtype is the input's when it is half,
// else the codec's.
#include "compress/codec_impl.h"
#include "engine/error.h"

namespace dgpipe::compress::detail {
namespace {

using engine::DType;
using engine::Tensor;

class CastCodec final : public Codec {
 public:
  explicit CastCodec(CodecId id) : id_(id) {}
  CodecId id() const override { return id_; }
  std::string spec() const override { return codec_id_name(id_); }
  std::vector<int64_t> header_params(const engine::Shape&) const override { return {}; }
  uint64_t body_bytes(const engine::Shape& shape) const override { return body_bytes(shape, DType::f32); }
  uint64_t body_bytes(const engine::Shape& shape, DType dtype) const override {
    return static_cast<uint64_t>(engine::shape_numel(shape)) * engine::dtype_size(wire_dtype(dtype));
  }

  Packet encode(const Tensor& x) override {
    Packet p = start_packet(x);
    Tensor wire =
        x.dtype() == wire_dtype(x.dtype()) ? x.contiguous() : x.to(wire_dtype(x.dtype())).contiguous();
    if (wire.same(x) || wire.storage() == x.storage())
      wire = wire.clone();  // the packet must not alias the input
    p.body = byte_view(wire);
    return p;
  }

  Tensor decode_as(const Packet& p, DType dtype) override {
    DGP_CHECK(p.header.codec == id_,
              where() << ": cannot decode a " << codec_id_name(p.header.codec) << " packet");
    const DType wire = wire_dtype(p.header.dtype);
    const uint64_t expect = body_bytes(p.header.shape, p.header.dtype);
    DGP_CHECK(p.body_bytes() == expect, where()
                                            << ": packet body has " << p.body_bytes() << " bytes, expected "
                                            << expect << " for " << engine::shape_str(p.header.shape));
    Tensor v = typed_view(p.body, 0, wire, p.header.shape);
    return v.dtype() == dtype ? v.clone() : v.to(dtype);
  }

 private:
  // The dtype a tensor of `dtype` travels in.
  DType wire_dtype(DType dtype) const {
    if (id_ == CodecId::none || engine::is_half(dtype)) return dtype;
    return id_ == CodecId::fp16 ? DType::f16 : DType::bf16;
  }

  CodecId id_;
};

}  // namespace

std::unique_ptr<Codec> make_cast_codec(const CodecSpec& spec) {
  return std::make_unique<CastCodec>(spec.id);
}

}  // namespace dgpipe::compress::detail
