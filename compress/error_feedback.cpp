// Error feedback ("+ef"): the sender adds the residual of its previous encode before encoding,
//   y = x + e;  packet = C(y);  e <- y - D(C(y)),
// so quantization error is not lost but delayed (the sum of what was sent tracks the sum of the inputs).
// The residual belongs to this instance (one per boundary and direction) and restarts when the shape changes.
// Cost: one extra decode at the sender and one add/sub pass. The residual is f32 for every input dtype.
#include "compress/codec_impl.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace dgpipe::compress::detail {
namespace {

using engine::Tensor;

class ErrorFeedbackCodec final : public Codec {
 public:
  explicit ErrorFeedbackCodec(std::unique_ptr<Codec> inner) : inner_(std::move(inner)) {}
  CodecId id() const override { return inner_->id(); }
  std::string spec() const override { return inner_->spec() + "+ef"; }
  std::vector<int64_t> header_params(const engine::Shape& s) const override {
    return inner_->header_params(s);
  }
  uint64_t body_bytes(const engine::Shape& s) const override { return inner_->body_bytes(s); }
  // The inner codec encodes x + residual in x's dtype when that is half, else in f32.
  uint64_t body_bytes(const engine::Shape& s, engine::DType dtype) const override {
    return inner_->body_bytes(s, engine::is_half(dtype) ? dtype : engine::DType::f32);
  }

  Packet encode(const Tensor& x) override {
    check_input(x);
    inner_->set_boundary(boundary_);
    Tensor xf = x.dtype() == engine::DType::f32 ? x : x.to(engine::DType::f32);
    Tensor y = residual_.defined() && residual_.shape() == x.shape() && residual_.device() == x.device()
                   ? engine::add(xf, residual_)
                   : xf;
    // A half input is sent in its own dtype: y is rounded to it, and the rounding joins the residual.
    Packet p = inner_->encode(engine::is_half(x.dtype()) ? y.to(x.dtype()) : y);
    p.header.dtype = x.dtype();
    Tensor sent = inner_->decode_as(p, engine::DType::f32);
    residual_ = engine::sub(y, sent);
    return p;
  }

  Tensor decode_as(const Packet& p, engine::DType dtype) override {
    inner_->set_boundary(boundary_);
    return inner_->decode_as(p, dtype);
  }

  const Tensor& residual() const { return residual_; }

 private:
  std::unique_ptr<Codec> inner_;
  Tensor residual_;
};

}  // namespace

std::unique_ptr<Codec> make_error_feedback(std::unique_ptr<Codec> inner, const CodecSpec&) {
  return std::make_unique<ErrorFeedbackCodec>(std::move(inner));
}

}  // namespace dgpipe::compress::detail
