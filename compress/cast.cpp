// none / fp16 / bf16: the tensor's bytes, optionally cast to a 16-bit float. Lossless (none) or
// round-to-nearest-even casts; no statistics, no prelude. Runs on any device through the engine's dtype
// conversion.
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
  uint64_t body_bytes(const engine::Shape& shape) const override {
    // none sends the tensor in its own dtype (f32 assumed here; encode uses the actual dtype).
    return static_cast<uint64_t>(engine::shape_numel(shape)) * (id_ == CodecId::none ? 4 : 2);
  }
  uint64_t body_bytes_for(const Tensor& x) const {
    return id_ == CodecId::none ? x.nbytes() : static_cast<uint64_t>(x.numel()) * 2;
  }

  Packet encode(const Tensor& x) override {
    check_input(x);
    Packet p;
    p.boundary = boundary_;
    p.header.codec = id_;
    p.header.dtype = x.dtype();
    p.header.shape = x.shape();
    Tensor wire = x.contiguous();
    if (id_ == CodecId::fp16 && x.dtype() != DType::f16) wire = x.to(DType::f16).contiguous();
    if (id_ == CodecId::bf16 && x.dtype() != DType::bf16) wire = x.to(DType::bf16).contiguous();
    if (wire.same(x) || wire.storage() == x.storage())
      wire = wire.clone();  // the packet must not alias the input
    p.body = byte_view(wire);
    p.header.body_bytes = body_bytes_for(x);
    return p;
  }

  Tensor decode(const Packet& p) override {
    DGP_CHECK(p.header.codec == id_,
              where() << ": cannot decode a " << codec_id_name(p.header.codec) << " packet");
    DType wire_dtype = id_ == CodecId::fp16   ? DType::f16
                       : id_ == CodecId::bf16 ? DType::bf16
                                              : p.header.dtype;
    const uint64_t expect =
        static_cast<uint64_t>(engine::shape_numel(p.header.shape)) * engine::dtype_size(wire_dtype);
    DGP_CHECK(p.body_bytes() == expect, where()
                                            << ": packet body has " << p.body_bytes() << " bytes, expected "
                                            << expect << " for " << engine::shape_str(p.header.shape));
    Tensor v = typed_view(p.body, 0, wire_dtype, p.header.shape);
    return v.dtype() == p.header.dtype ? v.clone() : v.to(p.header.dtype);
  }

 private:
  CodecId id_;
};

}  // namespace

std::unique_ptr<Codec> make_cast_codec(const CodecSpec& spec) {
  return std::make_unique<CastCodec>(spec.id);
}

}  // namespace dgpipe::compress::detail
