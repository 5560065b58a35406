#include "models/model.h"

#include <set>
#include <sstream>

#include "engine/io/safetensors.h"

namespace dgpipe::models {

namespace E = dgpipe::engine;

void Model::add_block(const std::string& label, std::shared_ptr<Module> block, const std::string& prefix) {
  add_child(prefix, block);
  blocks_.push_back(BlockEntry{label, prefix, std::move(block)});
}

void Model::add_unused(const std::string& prefix, std::shared_ptr<Module> module) {
  DGP_CHECK(!prefix.empty(), name_ << ": an unused module needs a name");
  add_child(prefix, std::move(module));
}

void Model::add_bottleneck(const std::string& name, size_t after,
                           std::shared_ptr<layers::Bottleneck> bottleneck) {
  DGP_CHECK(after + 1 < blocks_.size(), name_ << ": a bottleneck after block " << after
                                              << " has no block after it (" << blocks_.size() << " blocks)");
  add_child(name, bottleneck);
  bottlenecks_.push_back(Insertion{name, after, std::move(bottleneck)});
}

Shape Model::block_output_shape(size_t end, const Shape& input) {
  DGP_CHECK(end <= blocks_.size(),
            name_ << ": block " << end << " out of range (" << blocks_.size() << " blocks)");
  const bool was_training = is_training();
  eval();
  Tensor probe;
  {
    E::NoGradGuard no_graph;
    const E::Device device = end > 0 && !blocks_[0].module->parameters().empty()
                                 ? blocks_[0].module->parameters()[0].device()
                                 : E::Device::cpu();
    Tensor x = E::zeros(input.empty() ? example_input_shape(1) : input,
                        E::TensorOptions(input_kind == InputKind::image ? DType::f32 : DType::i64, device));
    BlockContext ctx = make_context(x);
    probe = x;
    for (size_t i = 0; i < end; ++i) {
      const auto params = blocks_[i].module->parameters();
      if (!params.empty()) probe = probe.to(params[0].device());
      probe = blocks_[i].module->forward(probe, ctx);
    }
  }
  train(was_training);
  return probe.shape();
}

NamedTensors Model::block_named_parameters(size_t i) const {
  DGP_CHECK(i < blocks_.size(),
            name_ << ": block " << i << " out of range (" << blocks_.size() << " blocks)");
  return blocks_[i].module->named_parameters(blocks_[i].prefix);
}

int64_t Model::block_num_parameters(size_t i) const {
  DGP_CHECK(i < blocks_.size(),
            name_ << ": block " << i << " out of range (" << blocks_.size() << " blocks)");
  return blocks_[i].module->num_parameters();
}

Tensor Model::forward(const Tensor& x, const BlockContext& ctx) {
  return forward_blocks(x, ctx, 0, blocks_.size());
}

Tensor Model::forward_blocks(const Tensor& x, const BlockContext& ctx, size_t begin, size_t end) {
  DGP_CHECK(begin <= end && end <= blocks_.size(), name_ << ": block range [" << begin << "," << end
                                                         << ") out of range (" << blocks_.size()
                                                         << " blocks)");
  Tensor h = x;
  for (size_t i = begin; i < end; ++i) h = blocks_[i].module->forward(h, ctx);
  return h;
}

Tensor Model::loss(const Tensor& logits, const Tensor& target) const {
  DGP_CHECK(logits.dim() == 2, name_ << ": loss expects logits [N,C], got " << E::shape_str(logits.shape()));
  // In fp32 in every precision: a half loss would lose digits, and overflow once loss-scaled.
  return E::cross_entropy(E::is_half(logits.dtype()) ? E::cast(logits, DType::f32) : logits, target);
}

namespace {
bool is_non_persistent_buffer(const std::string& key) {
  auto ends_with = [&](const std::string& s) {
    return key.size() >= s.size() && key.compare(key.size() - s.size(), s.size(), s) == 0;
  };
  return ends_with("embeddings.position_ids") || ends_with("embeddings.token_type_ids");
}
}  // namespace

layers::LoadReport load_checkpoint(Model& model, const std::string& path, bool strict) {
  E::SafetensorsFile file = E::load_safetensors(path);
  std::set<std::string> model_keys;
  for (auto& [name, t] : model.state_dict()) model_keys.insert(name);
  // Which base-model prefix does the model use, if any ("bert." or "roberta.")?
  std::string base_prefix;
  for (const char* p : {"roberta.", "bert."})
    for (auto& k : model_keys)
      if (k.rfind(p, 0) == 0) base_prefix = p;
  std::map<std::string, Tensor> renamed;
  for (auto& [key, t] : file.tensors) {
    if (is_non_persistent_buffer(key)) continue;
    std::string name = key;
    if (!model_keys.count(name) && !base_prefix.empty() && model_keys.count(base_prefix + name))
      name = base_prefix + name;
    if (!model_keys.count(name) && !base_prefix.empty() && name.rfind(base_prefix, 0) == 0 &&
        model_keys.count(name.substr(base_prefix.size())))
      name = name.substr(base_prefix.size());
    renamed[name] = t;
  }
  try {
    return model.load_state_dict(renamed, strict);
  } catch (const E::Error& e) {
    DGP_FAIL(path << ": " << e.what());
  }
}

std::vector<std::shared_ptr<layers::Bottleneck>> insert_bottlenecks(Model& model, const std::string& specs,
                                                                    const std::vector<int>& balance,
                                                                    uint64_t seed) {
  const size_t boundaries = balance.empty() ? 0 : balance.size() - 1;
  std::vector<std::string> per_boundary;
  std::stringstream ss(specs);
  std::string item;
  while (std::getline(ss, item, ';')) per_boundary.push_back(item);
  if (per_boundary.empty()) per_boundary.push_back("none");
  DGP_CHECK(per_boundary.size() == 1 || per_boundary.size() == boundaries,
            "--bottleneck '" << specs << "': " << per_boundary.size() << " specs for " << boundaries
                             << " boundaries (give one for all, or one per boundary separated by ';')");
  std::vector<std::shared_ptr<layers::Bottleneck>> out(boundaries);
  size_t after = 0;
  for (size_t b = 0; b < boundaries; ++b) {
    after += static_cast<size_t>(balance[b]);
    const layers::BottleneckSpec spec =
        layers::parse_bottleneck_spec(per_boundary.size() == 1 ? per_boundary[0] : per_boundary[b]);
    if (spec.kind == layers::BottleneckSpec::Kind::none) continue;
    const Shape wide = model.block_output_shape(after);
    DGP_CHECK(wide.size() >= 2,
              "--bottleneck: the tensor after block " << after - 1 << " is " << E::shape_str(wide));
    const int64_t features = spec.kind == layers::BottleneckSpec::Kind::conv ? wide[1] : wide.back();
    E::Generator gen(seed * 1000003ull + 7919 + b);
    auto bottleneck = std::make_shared<layers::Bottleneck>(spec, features, &gen);
    try {
      bottleneck->narrow_shape(wide);
    } catch (const E::Error& e) {
      DGP_FAIL("--bottleneck at boundary " << b << " (after block " << model.block_label(after - 1)
                                           << "): " << e.what());
    }
    model.add_bottleneck("bottleneck." + std::to_string(b), after - 1, bottleneck);
    out[b] = bottleneck;
  }
  return out;
}

}  // namespace dgpipe::models
