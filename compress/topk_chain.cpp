// topk:R>Q — top-k, then the k kept values quantized by Q (uniform:Q, sortquant, fastquant, kmeans, fp16 or
// bf16): the research's "Quant8 + prune 0.5" (docs/original.md, R2 and "Multiple quantization") sent for
// real. Top-k chooses exactly as topk:R (k = floor(R*N), ties to the smaller index); Q sees the kept values
// as a flat f32 tensor [k] in increasing index order; the indices are topk:R's, bit-packed in index_bits(N)
// bits. Body: prelude (the top-k pass's status word) | pad to 16 | Q's body for [k] | pad to 16 | packed
// indices. Header params: k, Q's codec id, Q's own params for [k] — so the receiver rebuilds Q's packet. Wire
// bits per element: R * (bits of Q + ceil(log2 N)) + Q's statistics. No kernel of its own: on CUDA it runs
// topk:R's and Q's kernels (topk_kernels.h and Q's header) and moves the sections with device copies, so it
// inherits their CPU parity.
#include "compress/codec_impl.h"
#include "compress/quant_math.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace dgpipe::compress::detail {
namespace {

using engine::Tensor;

const uint64_t kValuesOffset = align16(kPreludeBytes);  // Q's body starts here

class TopKChainCodec final : public Codec {
 public:
  explicit TopKChainCodec(const CodecSpec& spec) {
    CodecSpec topk;
    topk.id = CodecId::topk;
    topk.fraction = spec.fraction;
    topk_ = make_codec(topk);
    values_ = make_codec(*spec.next);
    CodecSpec plain = spec;
    plain.error_feedback = false;
    spec_ = plain.str();
  }
  CodecId id() const override { return CodecId::topk_chain; }
  std::string spec() const override { return spec_; }
  std::vector<int64_t> header_params(const engine::Shape& shape) const override {
    const int64_t k = kept(shape);
    std::vector<int64_t> params = {k, static_cast<int64_t>(values_->id())};
    for (int64_t v : values_->header_params({k})) params.push_back(v);
    return params;
  }
  uint64_t body_bytes(const engine::Shape& shape) const override {
    const int64_t k = kept(shape);
    return index_offset(k) + packed_bytes(static_cast<uint64_t>(k), index_bits(engine::shape_numel(shape)));
  }

  Packet encode(const Tensor& x) override {
    Packet p = start_packet(x);
    name_inner();
    const Packet sparse = topk_->encode(x);
    const int64_t k = sparse.header.params.at(0);
    const Packet values = values_->encode(typed_view(sparse.body, kPreludeBytes, engine::DType::f32, {k}));
    p.body = make_body(p.header.body_bytes, x.device());
    p.body.slice(0, 0, kPreludeBytes).copy_(sparse.body.slice(0, 0, kPreludeBytes));
    place_inner_body(p.body, kValuesOffset, values);
    copy_indices(sparse.body, topk_index_offset(k), p.body, index_offset(k), index_bytes(x.shape()));
    return p;
  }

  Tensor decode_as(const Packet& p, engine::DType dtype) override {
    check_packet(p);
    if (!p.body.is_cuda()) p.check_status();
    name_inner();
    const engine::Shape& shape = p.header.shape;
    const int64_t k = p.header.params.at(0);
    const engine::Device device = p.body.device();
    const Tensor values =
        values_->decode_as(inner_packet(*values_, {k}, engine::DType::f32, p.body, kValuesOffset, boundary_),
                           engine::DType::f32);
    // topk:R's packet for the same selection: prelude | the decoded values | pad | the indices.
    Packet sparse = inner_packet(*topk_, shape, engine::DType::f32,
                                 make_body(topk_->body_bytes(shape), device), 0, boundary_);
    if (k > 0)
      sparse.body.slice(0, kPreludeBytes, kPreludeBytes + 4 * k).copy_(byte_view(values.contiguous()));
    copy_indices(p.body, index_offset(k), sparse.body, topk_index_offset(k), index_bytes(shape));
    return finish_decode(topk_->decode_as(sparse, engine::DType::f32), dtype, device);
  }

 private:
  int64_t kept(const engine::Shape& shape) const { return topk_->header_params(shape).at(0); }
  uint64_t index_offset(int64_t k) const { return align16(kValuesOffset + values_->body_bytes({k})); }
  uint64_t index_bytes(const engine::Shape& shape) const {
    const int64_t n = engine::shape_numel(shape);
    return packed_bytes(static_cast<uint64_t>(kept(shape)), index_bits(n));
  }
  static void copy_indices(const Tensor& from, uint64_t from_offset, const Tensor& to, uint64_t to_offset,
                           uint64_t bytes) {
    if (bytes == 0) return;
    to.slice(0, static_cast<int64_t>(to_offset), static_cast<int64_t>(to_offset + bytes))
        .copy_(from.slice(0, static_cast<int64_t>(from_offset), static_cast<int64_t>(from_offset + bytes)));
  }
  void name_inner() {
    topk_->set_boundary(boundary_);
    values_->set_boundary(boundary_);
  }

  std::unique_ptr<Codec> topk_, values_;
  std::string spec_;
};

}  // namespace

std::unique_ptr<Codec> make_topk_chain_codec(const CodecSpec& spec) {
  DGP_CHECK(spec.next, "topk chain: no values codec");
  return std::make_unique<TopKChainCodec>(spec);
}

}  // namespace dgpipe::compress::detail
