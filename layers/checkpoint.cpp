// state_dict save/load through safetensors (engine/io), with PyTorch's names as keys.
#include <map>

#include "engine/io/safetensors.h"
#include "layers/module.h"

namespace dgpipe::layers {

std::map<std::string, Tensor> read_tensors(const std::string& path) {
  return engine::load_safetensors(path).tensors;
}

void save_state_dict(const Module& module, const std::string& path,
                     const std::map<std::string, std::string>& metadata) {
  std::map<std::string, Tensor> tensors;
  for (auto& [name, t] : module.state_dict()) {
    DGP_CHECK(tensors.emplace(name, t.detach()).second, "save_state_dict: duplicate name '" << name << "'");
  }
  std::map<std::string, std::string> meta = metadata;
  meta.emplace("format", "pt");  // what Hugging Face's loaders look for
  engine::save_safetensors(path, tensors, meta);
}

LoadReport load_state_dict_file(Module& module, const std::string& path, bool strict) {
  try {
    return module.load_state_dict(read_tensors(path), strict);
  } catch (const engine::Error& e) {
    DGP_FAIL(path << ": " << e.what());
  }
}

}  // namespace dgpipe::layers
