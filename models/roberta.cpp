#include "models/roberta.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "layers/init.h"

namespace dgpipe::models {

namespace E = dgpipe::engine;
using layers::Container;
using layers::Dropout;
using layers::Embedding;
using layers::LayerNorm;
using layers::Linear;

EncoderConfig EncoderConfig::roberta_base(int64_t num_classes) {
  EncoderConfig c;
  c.num_classes = num_classes;
  return c;
}

EncoderConfig EncoderConfig::minilm_l6(int64_t num_classes) {
  EncoderConfig c;
  c.variant = Variant::bert;
  c.vocab_size = 30522;
  c.hidden = 384;
  c.layers = 6;
  c.heads = 12;
  c.intermediate = 1536;
  c.max_positions = 512;
  c.type_vocab_size = 2;
  c.pad_token_id = 0;
  c.layer_norm_eps = 1e-12;
  c.num_classes = num_classes;
  return c;
}

EncoderConfig EncoderConfig::from_hf_config(const std::string& path, int64_t num_classes) {
  std::ifstream in(path);
  DGP_CHECK(in.good(), "from_hf_config: cannot open " << path);
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    DGP_FAIL("from_hf_config: " << path << " is not valid JSON: " << e.what());
  }
  std::string type = j.value("model_type", "");
  DGP_CHECK(type == "roberta" || type == "bert" || type == "xlm-roberta",
            "from_hf_config: " << path << ": model_type '" << type << "' is not roberta or bert");
  EncoderConfig c = type == "bert" ? minilm_l6(num_classes) : roberta_base(num_classes);
  // A key the file leaves out (or sets to null) keeps the default of the model type.
  auto get = [&](const char* key, auto& field) {
    if (j.contains(key) && !j[key].is_null()) field = j[key].get<std::decay_t<decltype(field)>>();
  };
  get("vocab_size", c.vocab_size);
  get("hidden_size", c.hidden);
  get("num_hidden_layers", c.layers);
  get("num_attention_heads", c.heads);
  get("intermediate_size", c.intermediate);
  get("max_position_embeddings", c.max_positions);
  get("type_vocab_size", c.type_vocab_size);
  get("pad_token_id", c.pad_token_id);
  get("hidden_dropout_prob", c.hidden_dropout);
  get("attention_probs_dropout_prob", c.attention_dropout);
  get("classifier_dropout", c.classifier_dropout);
  get("layer_norm_eps", c.layer_norm_eps);
  get("initializer_range", c.initializer_range);
  std::string act = j.value("hidden_act", "gelu");
  DGP_CHECK(act == "gelu",
            "from_hf_config: " << path << ": hidden_act '" << act << "' unsupported (only exact gelu)");
  std::string pos = j.value("position_embedding_type", "absolute");
  DGP_CHECK(pos == "absolute",
            "from_hf_config: " << path << ": position_embedding_type '" << pos << "' unsupported");
  return c;
}

// Computed where the ids are, without reading them back to the host (a host-device sync per batch on a GPU).
// RoBERTa numbers the real tokens of a row from pad + 1 on and gives padding the pad id: the running count of
// real tokens is a product with an upper-triangular matrix of ones, exact in f32 (sums of at most L ones).
Tensor position_ids_for(const Tensor& ids, const EncoderConfig& cfg) {
  DGP_CHECK(ids.dim() == 2, "position_ids: expected token ids [N,L], got " << E::shape_str(ids.shape()));
  const int64_t n = ids.size(0), l = ids.size(1);
  const bool bert = cfg.variant == EncoderConfig::Variant::bert;
  auto check_fits = [&](int64_t max_pos) {
    DGP_CHECK(max_pos < cfg.max_positions, "position_ids: sequence length "
                                               << l << " needs position " << max_pos << " but the model has "
                                               << cfg.max_positions << " position embeddings");
  };
  if (bert) {
    check_fits(n * l == 0 ? 0 : l - 1);
    std::vector<int64_t> row(static_cast<size_t>(l));
    for (int64_t t = 0; t < l; ++t) row[static_cast<size_t>(t)] = t;
    return E::from_vector(row, {1, l}).to(ids.device()).expand({n, l}).contiguous();
  }
  const double pad = static_cast<double>(cfg.pad_token_id);
  Tensor real =
      E::cast(E::ne(ids, E::full({}, pad, E::TensorOptions(ids.dtype(), ids.device()))), DType::f32);
  std::vector<float> upper(static_cast<size_t>(l * l), 0.0f);  // upper[j][t] = 1 for j <= t
  for (int64_t j = 0; j < l; ++j)
    for (int64_t t = j; t < l; ++t) upper[static_cast<size_t>(j * l + t)] = 1.0f;
  Tensor count = E::matmul(real, E::from_vector(upper, {l, l}).to(ids.device()));
  Tensor pos = E::add(E::mul(count, real), pad);  // real tokens: pad + count; padding: pad
  // The largest position is at most pad + l; only when that bound does not fit the table is the exact one
  // read back from the device.
  if (n * l > 0 && cfg.pad_token_id + l >= cfg.max_positions)
    check_fits(static_cast<int64_t>(E::max(pos).item()));
  return E::cast(pos, DType::i64);
}

BlockContext TextModel::make_context(const Tensor& ids) const {
  DGP_CHECK(
      ids.defined() && ids.dim() == 2 && !E::is_floating(ids.dtype()),
      name() << ": expected integer token ids [N,L], got "
             << (ids.defined() ? E::dtype_name(ids.dtype()) + std::string(" ") + E::shape_str(ids.shape())
                               : "undefined"));
  BlockContext ctx;
  ctx.attention_mask = E::ne(
      ids, E::full({}, static_cast<double>(cfg.pad_token_id), E::TensorOptions(ids.dtype(), ids.device())));
  ctx.additive_mask = layers::additive_attention_mask(ctx.attention_mask, DType::f32);
  ctx.position_ids = position_ids_for(ids, cfg);
  return ctx;
}

namespace {

using layers::Module;
using Parts = std::vector<std::pair<std::string, std::shared_ptr<Module>>>;

// word + position (+ token type) embeddings -> LayerNorm -> dropout; children named as Hugging Face's.
class TextEmbeddings : public Module {
 public:
  TextEmbeddings(const EncoderConfig& c, E::Generator* gen) {
    const bool roberta = c.variant == EncoderConfig::Variant::roberta;
    word = std::make_shared<Embedding>(c.vocab_size, c.hidden, c.pad_token_id, gen);
    // RoBERTa's position table has the pad row as padding_idx; BERT's has none.
    position = std::make_shared<Embedding>(c.max_positions, c.hidden, roberta ? c.pad_token_id : -1, gen);
    token_type = std::make_shared<Embedding>(c.type_vocab_size, c.hidden, -1, gen);
    norm = std::make_shared<LayerNorm>(c.hidden, c.layer_norm_eps);
    dropout = std::make_shared<Dropout>(c.hidden_dropout);
    // Registration order = state_dict order, which differs between Hugging Face's two classes.
    register_module("word_embeddings", word);
    if (!roberta) register_module("position_embeddings", position);
    register_module("token_type_embeddings", token_type);
    register_module("LayerNorm", norm);
    register_module("dropout", dropout);
    if (roberta) register_module("position_embeddings", position);
  }
  Tensor forward(const Tensor& ids, const BlockContext& ctx) override {
    DGP_CHECK(ids.dim() == 2 && !E::is_floating(ids.dtype()),
              "embeddings: expected integer token ids [N,L], got " << E::dtype_name(ids.dtype()) << " "
                                                                   << E::shape_str(ids.shape()));
    // No fallback from the ids: a context that lost its position ids on the way here is an error, not a
    // silent recomputation (which would hide any position ids other than the default ones being dropped).
    const Tensor& pos = ctx.position_ids;
    DGP_CHECK(pos.defined(),
              "embeddings: the context has no position_ids (the model's make_context builds them)");
    DGP_CHECK(pos.shape() == ids.shape(), "embeddings: position ids " << E::shape_str(pos.shape())
                                                                      << " do not match ids "
                                                                      << E::shape_str(ids.shape()));
    Tensor types = ctx.token_type_ids.defined()
                       ? ctx.token_type_ids
                       : E::zeros(ids.shape(), E::TensorOptions(DType::i64, ids.device()));
    Tensor h = E::add(word->forward(ids, ctx), position->forward(pos, ctx));
    h = E::add(h, token_type->forward(types, ctx));
    return dropout->forward(norm->forward(h, ctx), ctx);
  }
  std::string type_name() const override { return "Embeddings"; }
  std::shared_ptr<Embedding> word, position, token_type;
  std::shared_ptr<LayerNorm> norm;
  std::shared_ptr<Dropout> dropout;
};

// Hugging Face's _init_weights for BERT/RoBERTa: Linear N(0, range) with zero bias, Embedding N(0, range)
// with the padding row zeroed, LayerNorm 1/0.
void hf_init(Module& m, double range, E::Generator* gen) {
  for (auto& [name, mod] : m.named_modules()) {
    Module* mm = const_cast<Module*>(mod.get());
    if (auto* l = dynamic_cast<Linear*>(mm)) {
      layers::init::normal_(l->weight, 0.0, range, gen);
      if (l->bias.defined()) l->bias.zero_();
    } else if (auto* e = dynamic_cast<Embedding*>(mm)) {
      layers::init::normal_(e->weight, 0.0, range, gen);
      if (e->padding_idx >= 0) e->weight.select(0, e->padding_idx).zero_();
    } else if (auto* n = dynamic_cast<LayerNorm*>(mm)) {
      n->weight.fill_(1.0);
      n->bias.zero_();
    }
  }
}

}  // namespace

ModelPtr make_text_model(const EncoderConfig& c) {
  DGP_CHECK(c.hidden > 0 && c.layers > 0 && c.heads > 0 && c.hidden % c.heads == 0,
            "text model: hidden " << c.hidden << " must be a positive multiple of heads " << c.heads);
  DGP_CHECK(c.pad_token_id >= 0 && c.pad_token_id < c.vocab_size,
            "text model: pad_token_id " << c.pad_token_id << " outside the vocabulary of " << c.vocab_size);
  DGP_CHECK(c.num_classes >= 0, "text model: num_classes must be >= 0, got " << c.num_classes);
  const bool bert = c.variant == EncoderConfig::Variant::bert;
  const bool head = c.num_classes > 0;
  E::Generator gen(c.seed);
  auto model = std::make_shared<TextModel>(bert ? "bert" : "roberta", c);
  const std::string base = head ? (bert ? "bert." : "roberta.") : "";

  model->add_block("embeddings", std::make_shared<TextEmbeddings>(c, &gen), base + "embeddings");
  layers::TransformerLayerConfig lc;
  lc.hidden = c.hidden;
  lc.heads = c.heads;
  lc.intermediate = c.intermediate;
  lc.hidden_dropout = c.hidden_dropout;
  lc.attention_dropout = c.attention_dropout;
  lc.layer_norm_eps = c.layer_norm_eps;
  for (int64_t i = 0; i < c.layers; ++i)
    model->add_block("layer." + std::to_string(i),
                     std::make_shared<layers::TransformerEncoderLayer>(lc, &gen),
                     base + "encoder.layer." + std::to_string(i));

  const double head_dropout = c.classifier_dropout >= 0 ? c.classifier_dropout : c.hidden_dropout;
  if (head && !bert) {
    // RobertaClassificationHead: <s> token -> dropout -> dense -> tanh -> dropout -> out_proj.
    auto classifier = std::make_shared<Container>("RobertaClassificationHead");
    auto dense = classifier->add("dense", std::make_shared<Linear>(c.hidden, c.hidden, true, &gen));
    auto drop = classifier->add("dropout", std::make_shared<Dropout>(head_dropout));
    auto out_proj =
        classifier->add("out_proj", std::make_shared<Linear>(c.hidden, c.num_classes, true, &gen));
    model->add_block("head", std::make_shared<layers::Block>(
                                 "RobertaClassificationHead", Parts{{"classifier", classifier}},
                                 [dense, drop, out_proj](const Tensor& x, const BlockContext& ctx) {
                                   Tensor h = drop->forward(x.select(1, 0), ctx);
                                   h = drop->forward(E::tanh(dense->forward(h, ctx)), ctx);
                                   return out_proj->forward(h, ctx);
                                 }));
  } else if (head && bert) {
    // BertForSequenceClassification: pooler (first token -> dense -> tanh) -> dropout -> classifier.
    auto pooler = std::make_shared<Container>("BertPooler");
    auto pool_dense = pooler->add("dense", std::make_shared<Linear>(c.hidden, c.hidden, true, &gen));
    auto drop = std::make_shared<Dropout>(head_dropout);
    auto classifier = std::make_shared<Linear>(c.hidden, c.num_classes, true, &gen);
    model->add_block("head",
                     std::make_shared<layers::Block>(
                         "BertPoolerClassifier", Parts{{"bert.pooler", pooler}, {"classifier", classifier}},
                         [pool_dense, drop, classifier](const Tensor& x, const BlockContext& ctx) {
                           Tensor pooled = E::tanh(pool_dense->forward(x.select(1, 0), ctx));
                           return classifier->forward(drop->forward(pooled, ctx), ctx);
                         }));
  } else if (c.add_pooler) {
    auto pooler = std::make_shared<Container>(bert ? "BertPooler" : "RobertaPooler");
    pooler->add("dense", std::make_shared<Linear>(c.hidden, c.hidden, true, &gen));
    model->add_unused("pooler", pooler);
  }
  hf_init(*model, c.initializer_range, &gen);
  return model;
}

}  // namespace dgpipe::models
