// RoBERTa and the BERT family (BERT, MiniLM, …): embeddings + post-LN transformer layers + a classification
// head, with Hugging Face's names and semantics, so their safetensors checkpoints load unchanged.
//
// Blocks: "embeddings", "layer.0" … "layer.{L-1}", then "head" when num_classes > 0.
// Names:
//  RoBERTa + head (RobertaForSequenceClassification): roberta.embeddings.…, roberta.encoder.layer.N.…,
//    classifier.dense, classifier.out_proj.  Without head (RobertaModel): embeddings.…, encoder.layer.N.…
//  BERT + head (BertForSequenceClassification): bert.embeddings.…, bert.encoder.layer.N.…, bert.pooler.dense,
//    classifier.  Without head (BertModel): embeddings.…, encoder.…, pooler.dense when add_pooler.
// Positions: RoBERTa counts non-padding tokens from pad+1 (cumsum(ids != pad) * mask + pad); BERT uses 0…L-1.
// The attention mask is ids != pad (what the tokenizer's mask is for padded batches), added to the scores as
// (1 - mask) * lowest float.
#pragma once
#include <string>

#include "layers/transformer.h"
#include "models/model.h"

namespace dgpipe::models {

struct EncoderConfig {
  enum class Variant { roberta, bert };
  Variant variant = Variant::roberta;
  int64_t vocab_size = 50265;
  int64_t hidden = 768;
  int64_t layers = 12;
  int64_t heads = 12;
  int64_t intermediate = 3072;
  int64_t max_positions = 514;
  int64_t type_vocab_size = 1;
  int64_t pad_token_id = 1;
  double hidden_dropout = 0.1;
  double attention_dropout = 0.1;
  double classifier_dropout = -1.0;  // < 0: hidden_dropout (Hugging Face's rule)
  double layer_norm_eps = 1e-5;
  double initializer_range = 0.02;
  int64_t num_classes = 2;  // 0: encoder only, the model returns the last hidden states [N,L,D]
  bool add_pooler = false;  // encoder-only BERT: keep BertModel's pooler so its checkpoints load strictly
  uint64_t seed = 0;

  static EncoderConfig roberta_base(int64_t num_classes = 2);
  static EncoderConfig minilm_l6(int64_t num_classes = 2);  // all-MiniLM-L6-v2 (BERT, 384 wide, 6 layers)
  // Reads a Hugging Face config.json (model_type "roberta" or "bert"); num_classes stays as given.
  static EncoderConfig from_hf_config(const std::string& path, int64_t num_classes);
};

class TextModel : public Model {
 public:
  TextModel(std::string name, const EncoderConfig& cfg)
      : Model(std::move(name), InputKind::tokens, cfg.num_classes), cfg(cfg) {}
  BlockContext make_context(const Tensor& input_ids) const override;
  Shape example_input_shape(int64_t batch) const override { return {batch, 128}; }
  const EncoderConfig cfg;
};

// Position ids as Hugging Face computes them for `ids` [N,L] (host computation; result on ids' device).
Tensor position_ids_for(const Tensor& ids, const EncoderConfig& cfg);

ModelPtr make_text_model(const EncoderConfig& cfg);

}  // namespace dgpipe::models
