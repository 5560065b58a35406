#include "pipeline_test_models.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/ops.h"
#include "engine/optim/clip_grad.h"
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

pipeline::MicroBatch with_shifted_positions(pipeline::MicroBatch batch, int64_t shift) {
  const Tensor& pos = batch.ctx.position_ids;
  DGP_CHECK(pos.defined(), "with_shifted_positions: the batch has no position ids");
  std::vector<int64_t> shifted;
  for (double p : pos.to_vector()) shifted.push_back(static_cast<int64_t>(p) + shift);
  batch.ctx.position_ids = engine::from_vector(shifted, pos.shape());
  return batch;
}

pipeline::MicroBatch rows(const pipeline::MicroBatch& batch, int64_t begin, int64_t n) {
  pipeline::MicroBatch r = batch;
  r.input = batch.input.narrow(0, begin, n);
  r.labels = batch.labels.narrow(0, begin, n);
  r.ctx.for_each([&](const char*, Tensor& t) {
    if (t.defined()) t = t.narrow(0, begin, n);
  });
  return r;
}

Unpipelined run_unpipelined(std::vector<layers::ModulePtr>& blocks, const pipeline::MicroBatch& batch,
                            int M) {
  Unpipelined r;
  const int64_t total = batch.labels.numel(), n = total / M;
  std::vector<pipeline::MicroBatch> micro;
  for (int m = 0; m < M; ++m) micro.push_back(rows(batch, m * n, n));
  auto forward = [&](const pipeline::MicroBatch& mb) {
    Tensor h = mb.input;
    for (auto& b : blocks) h = b->forward(h, mb.ctx);
    return h;
  };
  for (auto& b : blocks) b->train(false);
  {
    engine::NoGradGuard no_graph;
    for (auto& mb : micro) r.logits.push_back(forward(mb));
  }
  for (auto& b : blocks) b->train(true);
  for (auto& mb : micro)
    engine::mul(engine::cross_entropy(forward(mb), mb.labels),
                static_cast<double>(n) / static_cast<double>(total))
        .backward();
  for (auto& b : blocks) {
    r.grads.emplace_back();
    for (auto& p : b->parameters()) r.grads.back().push_back(p.grad());
  }
  return r;
}

std::vector<size_t> local_blocks(const pipeline::Pipeline& pipe) {
  std::vector<size_t> mine;
  const std::vector<int>& balance = pipe.options().balance;
  size_t at = 0;
  for (size_t s = 0; s < balance.size(); ++s)
    for (int k = 0; k < balance[s]; ++k, ++at)
      if (pipe.runs_stage(static_cast<int>(s))) mine.push_back(at);
  return mine;
}

double max_state_difference(const std::vector<layers::ModulePtr>& a, const std::vector<layers::ModulePtr>& b,
                            const std::vector<size_t>& which) {
  double worst = 0;
  for (size_t at : which) {
    auto pa = a[at]->state_dict(), pb = b[at]->state_dict();
    for (size_t i = 0; i < pa.size(); ++i) {
      auto va = pa[i].second.to_vector(), vb = pb[i].second.to_vector();
      for (size_t j = 0; j < va.size(); ++j)
        worst = std::max(worst, std::fabs(va[j] - vb[j]) / std::max(1.0, std::fabs(vb[j])));
    }
  }
  return worst;
}

double relative_difference(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return std::numeric_limits<double>::infinity();
  auto va = a.to_vector(), vb = b.to_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    num += (va[i] - vb[i]) * (va[i] - vb[i]);
    den += vb[i] * vb[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

pipeline::OptimizerFactory sgd_factory(double weight_decay) {
  return [weight_decay](std::vector<Tensor> params, int /*stage*/,
                        const std::vector<Tensor>& /*model_params*/) -> std::unique_ptr<engine::Optimizer> {
    engine::SGDOptions o;
    o.lr = 0.1;
    o.momentum = 0.9;
    o.weight_decay = weight_decay;
    return std::make_unique<engine::SGD>(std::move(params), o);
  };
}

pipeline::PipelineOptions pipeline_options(std::vector<int> balance, int micro_batches,
                                           const std::string& codecs) {
  pipeline::PipelineOptions opts;
  opts.balance = std::move(balance);
  opts.micro_batches = micro_batches;
  if (!codecs.empty()) opts.codecs = {compress::parse_direction_pair(codecs)};
  return opts;
}

std::unique_ptr<engine::Optimizer> reference_optimizer(const std::vector<layers::ModulePtr>& blocks,
                                                       const pipeline::OptimizerFactory& factory) {
  std::vector<Tensor> params;
  for (auto& b : blocks)
    for (auto& p : b->parameters()) params.push_back(p);
  return factory(params, 0, params);
}

double reference_step(std::vector<layers::ModulePtr>& blocks, engine::Optimizer& opt,
                      const pipeline::MicroBatch& batch, int M, double clip) {
  auto micro = pipeline::split_micro_batches(batch, M);
  int64_t total = batch.labels.numel();
  for (auto& b : blocks) b->train(true);
  for (auto& mb : micro) {
    Tensor h = mb.input;
    for (auto& b : blocks) h = b->forward(h, mb.ctx);
    Tensor loss = engine::mul(engine::cross_entropy(h, mb.labels),
                              static_cast<double>(mb.labels.numel()) / static_cast<double>(total));
    loss.backward();
  }
  std::vector<Tensor> params;
  for (auto& b : blocks)
    for (auto& p : b->parameters()) params.push_back(p);
  const double norm = clip > 0 ? engine::clip_grad_norm(params, clip) : 0.0;
  opt.step();
  opt.zero_grad();
  return norm;
}

}  // namespace dgpipe::testmodels
