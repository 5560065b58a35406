#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "engine/amp.h"
#include "layers/transformer.h"
#include "support/gradcheck.h"

using namespace dgpipe;
using namespace dgpipe::layers;
using engine::Tensor;

namespace {
// The small two-head layer these tests build: width `hidden`, feed-forward width `intermediate`, the default
// dropout.
TransformerLayerConfig two_head_config(int64_t hidden, int64_t intermediate) {
  TransformerLayerConfig c;
  c.hidden = hidden;
  c.heads = 2;
  c.intermediate = intermediate;
  return c;
}
}  // namespace

TEST(Transformer, AdditiveMaskIsHuggingFaces) {
  Tensor mask = engine::from_vector(std::vector<int64_t>{1, 1, 0}, {1, 3});
  Tensor m = additive_attention_mask(mask);
  EXPECT_EQ(m.shape(), (engine::Shape{1, 1, 1, 3}));
  std::vector<double> v = m.to_vector();
  EXPECT_EQ(v[0], 0.0);
  EXPECT_EQ(v[2], static_cast<double>(std::numeric_limits<float>::lowest()));
  EXPECT_THROW(additive_attention_mask(engine::ones({3})), engine::Error);
}

TEST(Transformer, NamesAreHuggingFaces) {
  auto layer = std::make_shared<TransformerEncoderLayer>(two_head_config(8, 16));
  std::vector<std::string> names;
  for (auto& [n, t] : layer->named_parameters()) names.push_back(n);
  EXPECT_EQ(
      names,
      (std::vector<std::string>{
          "attention.self.query.weight", "attention.self.query.bias", "attention.self.key.weight",
          "attention.self.key.bias", "attention.self.value.weight", "attention.self.value.bias",
          "attention.output.dense.weight", "attention.output.dense.bias", "attention.output.LayerNorm.weight",
          "attention.output.LayerNorm.bias", "intermediate.dense.weight", "intermediate.dense.bias",
          "output.dense.weight", "output.dense.bias", "output.LayerNorm.weight", "output.LayerNorm.bias"}));
}

// Attention against a direct per-head computation, and masked keys have no influence on the output.
TEST(Transformer, AttentionMatchesDirectComputationAndMasks) {
  MultiHeadSelfAttention attn(8, 2, 0.0);
  attn.eval();
  Tensor x = engine::randn({2, 5, 8});
  Tensor mask01 = engine::from_vector(std::vector<int64_t>{1, 1, 1, 0, 0, 1, 1, 1, 1, 1}, {2, 5});
  BlockContext ctx;
  ctx.additive_mask = additive_attention_mask(mask01);
  Tensor y = attn(x, ctx);
  // direct: batch 0, head 1, query 2
  Tensor q = attn.query->forward(x, ctx), k = attn.key->forward(x, ctx), v = attn.value->forward(x, ctx);
  auto qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector();
  auto at = [](const std::vector<double>& t, int b, int l, int d) { return t[(b * 5 + l) * 8 + d]; };
  std::vector<double> s(3);
  double z = 0;
  for (int j = 0; j < 3; ++j) {  // keys 3 and 4 are padding
    double dot = 0;
    for (int d = 4; d < 8; ++d) dot += at(qv, 0, 2, d) * at(kv, 0, j, d);
    s[j] = std::exp(dot / 2.0);
    z += s[j];
  }
  std::vector<double> yv = y.to_vector();
  for (int d = 4; d < 8; ++d) {
    double expect = 0;
    for (int j = 0; j < 3; ++j) expect += s[j] / z * at(vv, 0, j, d);
    EXPECT_NEAR(at(yv, 0, 2, d), expect, 1e-5);
  }
  // changing padded positions' inputs changes nothing at real positions
  Tensor x2 = x.clone();
  x2.narrow(1, 3, 2).select(0, 0).fill_(9.0);
  Tensor y2 = attn(x2, ctx);
  EXPECT_LT(dgpipe::testing::max_rel_diff(y2.select(0, 0).narrow(0, 0, 3), y.select(0, 0).narrow(0, 0, 3)),
            1e-6);
}

TEST(Transformer, EncoderLayerGradcheck) {
  TransformerLayerConfig c = two_head_config(4, 6);
  c.hidden_dropout = c.attention_dropout = 0.0;
  auto layer = std::make_shared<TransformerEncoderLayer>(c);
  layer->to(engine::DType::f64);
  Tensor x = dgpipe::testing::random_leaf({2, 3, 4});
  BlockContext ctx;
  ctx.additive_mask = additive_attention_mask(
      engine::from_vector(std::vector<int64_t>{1, 1, 0, 1, 1, 1}, {2, 3}), engine::DType::f64);
  // (Weight gradients are checked against PyTorch in tests/models; gradcheck perturbs only its inputs.)
  std::vector<Tensor> inputs{x};
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return layer->forward(in[0], ctx); }, inputs);
}

TEST(Transformer, DropoutOnlyInTraining) {
  TransformerLayerConfig c = two_head_config(8, 16);
  c.hidden_dropout = 0.5;
  auto layer = std::make_shared<TransformerEncoderLayer>(c);
  Tensor x = engine::randn({2, 3, 8});
  layer->eval();
  EXPECT_EQ(layer->forward(x, {}).to_vector(), layer->forward(x, {}).to_vector());
  layer->train();
  EXPECT_NE(layer->forward(x, {}).to_vector(), layer->forward(x, {}).to_vector());
}

// Under autocast an encoder layer follows its fp32 result within half-precision rounding, its dense layers
// run in half, the softmax and layer norms in fp32 (so it returns fp32), and every parameter gradient is
// fp32.
namespace {
// An encoder layer without dropout (2 heads), an input [n, l, hidden] and the context of `mask` ([n, l]),
// drawn in turn from one generator.
struct MaskedLayer {
  engine::Generator gen;  // first: the layer's initialisation draws from it
  TransformerEncoderLayer layer;
  Tensor x;
  BlockContext ctx;
  MaskedLayer(int64_t hidden, int64_t intermediate, uint64_t seed, const std::vector<double>& mask, int64_t n,
              int64_t l)
      : gen(seed), layer(config(hidden, intermediate), &gen) {
    x = engine::randn({n, l, hidden}, {}, &gen);
    ctx.attention_mask = engine::from_vector(mask, {n, l});
    ctx.additive_mask = additive_attention_mask(ctx.attention_mask);
  }
  static TransformerLayerConfig config(int64_t hidden, int64_t intermediate) {
    TransformerLayerConfig c = two_head_config(hidden, intermediate);
    c.hidden_dropout = c.attention_dropout = 0.0;
    return c;
  }
};
}  // namespace

TEST(Transformer, EncoderLayerUnderAutocastFollowsFp32) {
  MaskedLayer m(16, 32, 3, {1, 1, 1, 0, 0, 1, 1, 1, 1, 1}, 2, 5);
  TransformerEncoderLayer& layer = m.layer;
  const Tensor& x = m.x;
  const BlockContext& ctx = m.ctx;
  Tensor ref = layer.forward(x, ctx);
  for (engine::DType half : {engine::DType::f16, engine::DType::bf16}) {
    engine::amp::AutocastGuard ac(true, half);
    Tensor y = layer.forward(x, ctx);
    EXPECT_EQ(y.dtype(), engine::DType::f32);
    EXPECT_LT(dgpipe::testing::max_rel_diff(y.detach(), ref.detach()),
              half == engine::DType::f16 ? 2e-2 : 8e-2)
        << engine::dtype_name(half);
    layer.zero_grad();
    engine::sum(y).backward();
    for (auto& [name, p] : layer.named_parameters()) {
      ASSERT_TRUE(p.grad().defined()) << name;
      EXPECT_EQ(p.grad().dtype(), engine::DType::f32) << name;
    }
  }
}

// A half-precision (fp16) layer masks with f16's lowest value, not with -inf (which turns a row with no
// attended token into NaN; Hugging Face's lowest-value mask makes it uniform).
TEST(Transformer, HalfModelMasksPaddingInItsOwnDtype) {
  MaskedLayer m(8, 8, 5, {1, 1, 0, 0, 0, 0, 0, 0}, 2, 4);
  TransformerEncoderLayer& layer = m.layer;
  const Tensor& x = m.x;
  const BlockContext& ctx = m.ctx;
  Tensor ref = layer.forward(x, ctx);
  layer.to_half_precision(engine::DType::f16);
  Tensor y = layer.forward(x.to(engine::DType::f16), ctx);
  EXPECT_EQ(y.dtype(), engine::DType::f16);
  EXPECT_TRUE(engine::isfinite_all(y));
  EXPECT_LT(dgpipe::testing::max_rel_diff(y.to(engine::DType::f32), ref.detach()), 3e-2);
}
