#include "layers/transformer.h"

#include <cmath>
#include <limits>
#include <sstream>

#include "engine/amp.h"

namespace dgpipe::layers {

namespace E = dgpipe::engine;
namespace amp = dgpipe::engine::amp;

Tensor Container::forward(const Tensor&, const BlockContext&) {
  DGP_FAIL(label_ << ": a name container is not callable; its owner runs its children");
}

Tensor additive_attention_mask(const Tensor& mask, DType dtype) {
  DGP_CHECK(mask.defined() && mask.dim() == 2,
            "additive_attention_mask: expected a [N,L] mask, got "
                << (mask.defined() ? E::shape_str(mask.shape()) : "undefined"));
  DGP_CHECK(dtype == DType::f32 || dtype == DType::f64 || dtype == DType::f16 || dtype == DType::bf16,
            "additive_attention_mask: dtype must be floating, got " << E::dtype_name(dtype));
  double lowest = dtype == DType::f64    ? std::numeric_limits<double>::lowest()
                  : dtype == DType::f16  ? -65504.0
                  : dtype == DType::bf16 ? -3.3895313892515355e38
                                         : static_cast<double>(std::numeric_limits<float>::lowest());
  Tensor m = E::cast(mask, dtype);
  return E::mul(E::rsub(1.0, m), lowest).unsqueeze(1).unsqueeze(1);
}

MultiHeadSelfAttention::MultiHeadSelfAttention(int64_t hidden_, int64_t heads_, double attention_dropout,
                                               Generator* gen)
    : hidden(hidden_), heads(heads_) {
  DGP_CHECK(heads_ > 0 && hidden_ % heads_ == 0,
            "MultiHeadSelfAttention: hidden " << hidden_ << " is not a multiple of heads " << heads_);
  query = register_module("query", std::make_shared<Linear>(hidden_, hidden_, true, gen));
  key = register_module("key", std::make_shared<Linear>(hidden_, hidden_, true, gen));
  value = register_module("value", std::make_shared<Linear>(hidden_, hidden_, true, gen));
  dropout = std::make_shared<Dropout>(attention_dropout);
  register_module("dropout", dropout);
}

Tensor MultiHeadSelfAttention::forward(const Tensor& x, const BlockContext& ctx) {
  DGP_CHECK(x.dim() == 3 && x.size(2) == hidden,
            "MultiHeadSelfAttention: expected [N,L," << hidden << "], got " << E::shape_str(x.shape()));
  const int64_t n = x.size(0), l = x.size(1), dh = hidden / heads;
  auto split_heads = [&](const Tensor& t) { return t.view({n, l, heads, dh}).permute({0, 2, 1, 3}); };
  Tensor q = split_heads(query->forward(x, ctx));
  Tensor k = split_heads(key->forward(x, ctx));
  Tensor v = split_heads(value->forward(x, ctx));
  // Under autocast the two products run in half and the masked softmax in fp32 (amp::policy_for).
  Tensor scores = E::matmul(amp::autocast(q, "matmul"), amp::autocast(k, "matmul").transpose(-1, -2));
  scores = amp::autocast(E::mul(scores, 1.0 / std::sqrt(static_cast<double>(dh))), "softmax");
  if (ctx.additive_mask.defined()) {
    const Tensor& m = ctx.additive_mask;
    DGP_CHECK(m.dim() == 4 && m.size(0) == n && m.size(-1) == l,
              "MultiHeadSelfAttention: mask " << E::shape_str(m.shape()) << " does not fit input "
                                              << E::shape_str(x.shape()) << " (expected [" << n << ",1,1,"
                                              << l << "])");
    // A half model needs the mask built with its own dtype's lowest value: f32's rounds to -inf in f16.
    Tensor mask = m;
    if (m.dtype() != scores.dtype())
      mask = ctx.attention_mask.defined() ? additive_attention_mask(ctx.attention_mask, scores.dtype())
                                          : E::cast(m, scores.dtype());
    scores = E::add(scores, mask);
  }
  Tensor probs = dropout->forward(E::softmax(scores, -1), ctx);
  Tensor heads_out = E::matmul(amp::autocast(probs, "matmul"), amp::autocast(v, "matmul"));
  return heads_out.permute({0, 2, 1, 3}).reshape({n, l, hidden});
}

std::string MultiHeadSelfAttention::extra_repr() const {
  std::ostringstream os;
  os << "hidden=" << hidden << ", heads=" << heads;
  return os.str();
}

TransformerEncoderLayer::TransformerEncoderLayer(const TransformerLayerConfig& c, Generator* gen) : cfg(c) {
  auto attention = register_module("attention", std::make_shared<Container>("Attention"));
  self_attention = attention->add(
      "self", std::make_shared<MultiHeadSelfAttention>(c.hidden, c.heads, c.attention_dropout, gen));
  auto attention_output = attention->add("output", std::make_shared<Container>("AttentionOutput"));
  attention_out = attention_output->add("dense", std::make_shared<Linear>(c.hidden, c.hidden, true, gen));
  attention_norm =
      attention_output->add("LayerNorm", std::make_shared<LayerNorm>(c.hidden, c.layer_norm_eps));
  attention_out_dropout = attention_output->add("dropout", std::make_shared<Dropout>(c.hidden_dropout));
  auto intermediate = register_module("intermediate", std::make_shared<Container>("Intermediate"));
  intermediate_dense =
      intermediate->add("dense", std::make_shared<Linear>(c.hidden, c.intermediate, true, gen));
  auto output = register_module("output", std::make_shared<Container>("Output"));
  output_dense = output->add("dense", std::make_shared<Linear>(c.intermediate, c.hidden, true, gen));
  output_norm = output->add("LayerNorm", std::make_shared<LayerNorm>(c.hidden, c.layer_norm_eps));
  output_dropout = output->add("dropout", std::make_shared<Dropout>(c.hidden_dropout));
}

Tensor TransformerEncoderLayer::forward(const Tensor& x, const BlockContext& ctx) {
  Tensor a = self_attention->forward(x, ctx);
  a = attention_out_dropout->forward(attention_out->forward(a, ctx), ctx);
  // Under autocast the dense outputs are half and the residual streams fp32: promote() adds them in fp32.
  auto [a_sum, x_sum] = amp::promote(a, x);
  Tensor h = attention_norm->forward(E::add(a_sum, x_sum), ctx);
  Tensor i = apply_activation(cfg.activation, intermediate_dense->forward(h, ctx));
  Tensor o = output_dropout->forward(output_dense->forward(i, ctx), ctx);
  auto [o_sum, h_sum] = amp::promote(o, h);
  return output_norm->forward(E::add(o_sum, h_sum), ctx);
}

}  // namespace dgpipe::layers
