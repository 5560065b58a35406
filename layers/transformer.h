// Multi-head self-attention and the post-LN transformer encoder layer of BERT/RoBERTa, with Hugging Face's
// module names (attention.self.query, attention.output.LayerNorm, intermediate.dense, output.dense, ...), so
// that a Hugging Face state_dict loads into it unchanged.
#pragma once
#include <memory>
#include <string>

#include "layers/layers.h"

namespace dgpipe::layers {

// Holds named children only, to reproduce a checkpoint's name tree; it is not callable itself.
class Container : public Module {
 public:
  explicit Container(std::string label) : label_(std::move(label)) {}
  template <class M>
  std::shared_ptr<M> add(const std::string& name, std::shared_ptr<M> m) {
    return register_module(name, std::move(m));
  }
  Tensor forward(const Tensor& x, const BlockContext& ctx) override;
  std::string type_name() const override { return label_; }

 private:
  std::string label_;
};

// [N,L] mask of 1 (attend) / 0 (padding), any numeric dtype -> [N,1,1,L] additive mask of `dtype`:
// (1 - mask) * lowest finite value, exactly as Hugging Face's eager attention builds it.
Tensor additive_attention_mask(const Tensor& mask, DType dtype = DType::f32);

// softmax(Q K^T / sqrt(d_head) + mask) V over `heads` heads; returns the concatenated heads [N,L,D] (the
// output projection belongs to the layer, as in Hugging Face). The mask is ctx.additive_mask when defined.
class MultiHeadSelfAttention : public Module {
 public:
  MultiHeadSelfAttention(int64_t hidden, int64_t heads, double attention_dropout, Generator* gen = nullptr);
  Tensor forward(const Tensor& x, const BlockContext& ctx) override;
  std::string type_name() const override { return "MultiHeadSelfAttention"; }
  std::string extra_repr() const override;
  std::shared_ptr<Linear> query, key, value;
  std::shared_ptr<Dropout> dropout;
  int64_t hidden, heads;
};

struct TransformerLayerConfig {
  int64_t hidden = 768;
  int64_t heads = 12;
  int64_t intermediate = 3072;
  double hidden_dropout = 0.1;
  double attention_dropout = 0.1;
  double layer_norm_eps = 1e-5;
  Activation activation = Activation::gelu;
};

// Post-LN encoder layer: h = LN(x + Drop(W_o Attn(x))); y = LN(h + Drop(W_2 act(W_1 h))).
class TransformerEncoderLayer : public Module {
 public:
  explicit TransformerEncoderLayer(const TransformerLayerConfig& cfg, Generator* gen = nullptr);
  Tensor forward(const Tensor& x, const BlockContext& ctx) override;
  std::string type_name() const override { return "TransformerEncoderLayer"; }
  TransformerLayerConfig cfg;
  std::shared_ptr<MultiHeadSelfAttention> self_attention;
  std::shared_ptr<Linear> attention_out, intermediate_dense, output_dense;
  std::shared_ptr<LayerNorm> attention_norm, output_norm;
  std::shared_ptr<Dropout> attention_out_dropout, output_dropout;
};

}  // namespace dgpipe::layers
