// Error feedback ("+ef"): the sender adds the residual of its previous encode before encoding,
//   y = x + e;  packet = C(y);  e <- y - D(C(y)),
// so quantization error is not lost but delayed (the sum of what was sent tracks the sum of the inputs).
// The residual belongs to this instance (one per boundary and direction) and restarts when the shape changes.
// Cost: one extra decode at the sender and one add/sub pass.
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
  uint64_t state_bytes() const override { return residual_.defined() ? residual_.nbytes() : 0; }

  Packet encode(const Tensor& x) override {
    check_input(x);
    inner_->set_boundary(boundary_);
    Tensor xf = x.dtype() == engine::DType::f32 ? x : x.to(engine::DType::f32);
    Tensor y = residual_.defined() && residual_.shape() == x.shape() && residual_.device() == x.device()
                   ? engine::add(xf, residual_)
                   : xf;
    Packet p = inner_->encode(y);
    p.header.dtype = x.dtype();
    Tensor sent = inner_->decode(p);
    if (sent.dtype() != engine::DType::f32) sent = sent.to(engine::DType::f32);
    residual_ = engine::sub(y, sent);
    return p;
  }

  Tensor decode(const Packet& p) override {
    inner_->set_boundary(boundary_);
    return inner_->decode(p);
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
