#include "pipeline_test_models.h"

#include "engine/ops.h"
#include "engine/optim/sgd.h"
#include "models/roberta.h"
#include "models/vision.h"

namespace dgpipe::testmodels {

using engine::Generator;
using engine::Tensor;

std::vector<std::string> available_models() {
  return {"mlp", "resnet", "mobilenetv2", "roberta"};
}

namespace {
std::vector<layers::ModulePtr> blocks_of(const models::ModelPtr& m) {
  std::vector<layers::ModulePtr> b;
  for (size_t i = 0; i < m->num_blocks(); ++i) b.push_back(m->block(i));
  return b;
}

models::EncoderConfig small_roberta() {
  models::EncoderConfig
      c;  // RoBERTa layout at a test size; dropout off so that both sides compute the same thing
  c.vocab_size = 64;
  c.hidden = 16;
  c.layers = 3;
  c.heads = 2;
  c.intermediate = 32;
  c.max_positions = 24;
  c.hidden_dropout = 0.0;
  c.attention_dropout = 0.0;
  c.num_classes = 3;
  c.seed = 11;
  return c;
}
}  // namespace

std::vector<layers::ModulePtr> make_blocks(const std::string& name) {
  Generator gen(1234);
  std::vector<layers::ModulePtr> b;
  if (name == "mlp") {
    b.push_back(std::make_shared<layers::Linear>(8, 16, true, &gen));
    b.push_back(layers::ReLU());
    b.push_back(std::make_shared<layers::Linear>(16, 16, true, &gen));
    b.push_back(layers::Tanh());
    b.push_back(std::make_shared<layers::Linear>(16, 4, true, &gen));
    return b;
  }
  if (name == "resnet") {
    models::ResNet18Config c;
    c.base_width = 4;
    c.blocks_per_stage = {1, 1, 1, 1};
    c.num_classes = 4;
    c.seed = 3;
    return blocks_of(models::make_resnet18(c));
  }
  if (name == "mobilenetv2") {
    models::MobileNetV2Config c;
    c.width_mult = 0.25;
    c.stages = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 1, 2}};
    c.last_channel = 32;
    c.dropout = 0.0;
    c.num_classes = 4;
    c.seed = 5;
    return blocks_of(models::make_mobilenetv2(c));
  }
  if (name == "roberta") return blocks_of(models::make_text_model(small_roberta()));
  DGP_FAIL("test model '" << name << "' unknown");
}

pipeline::MicroBatch make_batch(const std::string& name, int64_t n, uint64_t seed) {
  Generator gen(seed);
  pipeline::MicroBatch mb;
  std::vector<int64_t> labels;
  int64_t classes = name == "roberta" ? 3 : 4;
  for (int64_t i = 0; i < n; ++i) labels.push_back((seed + i * 7) % classes);
  mb.labels = engine::from_vector(labels, {n});
  if (name == "mlp") {
    mb.input = engine::randn({n, 8}, {}, &gen);
  } else if (name == "resnet" || name == "mobilenetv2") {
    mb.input = engine::randn({n, 3, 16, 16}, {}, &gen);
  } else if (name == "roberta") {
    // token ids with padding (id 1) at the end of some rows, as a tokenizer produces them
    const int64_t L = 10;
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t t = 0; t < L; ++t) {
        bool pad = t >= L - (i % 4);
        ids.push_back(t == 0 ? 0 : pad ? 1 : 3 + static_cast<int64_t>((seed * 31 + i * 17 + t * 5) % 60));
      }
    mb.input = engine::from_vector(ids, {n, L});
    auto model = models::make_text_model(small_roberta());
    mb.ctx = model->make_context(mb.input);
  } else {
    DGP_FAIL("test model '" << name << "' unknown");
  }
  return mb;
}

pipeline::OptimizerFactory sgd_factory(double weight_decay) {
  return [weight_decay](std::vector<Tensor> params, int /*stage*/) -> std::unique_ptr<engine::Optimizer> {
    engine::SGDOptions o;
    o.lr = 0.1;
    o.momentum = 0.9;
    o.weight_decay = weight_decay;
    return std::make_unique<engine::SGD>(std::move(params), o);
  };
}

}  // namespace dgpipe::testmodels
