#include "models/model.h"

#include <set>

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

}  // namespace dgpipe::models
