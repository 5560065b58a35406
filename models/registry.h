// Builds a model by name — what the command line's --model, --num-classes and --input-size select.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "models/model.h"

namespace dgpipe::models {

struct ModelOptions {
  int64_t num_classes = -1;  // -1: the model's default (10 for the CIFAR models, 1000 at 224, 2 for text)
  int64_t input_size = 32;   // image models: 32 (CIFAR geometry) or 224 (torchvision's ImageNet geometry)
  double width_mult = 1.0;   // image models: channel width multiplier (1.0 = the published network)
  std::string hf_config;     // text models: a Hugging Face config.json to take the sizes from
  uint64_t seed = 0;         // initialisation seed
};

// A model by its name or one of its aliases (model_aliases). Unknown names are an error listing the known
// ones.
ModelPtr build_model(const std::string& name, const ModelOptions& opts = {});

// The one list of model names every caller (the registry, `dgpipe train`'s validation and trainer,
// `dgpipe model-info`) goes by.
// Canonical names: "mobilenetv2", "resnet18", "vgg11", "roberta", "bert".
std::vector<std::string> model_names();
// Other names accepted for them, each with the canonical name it stands for: vgg11_bn and vgg11-bn
// (torchvision's name), roberta-base, minilm and all-minilm-l6-v2 (the sentence-transformers model whose size
// "bert" has).
const std::vector<std::pair<std::string, std::string>>& model_aliases();
// The canonical name of a name or alias; "" for an unknown name.
std::string canonical_model_name(const std::string& name);
// Whether the name (or alias) is a text encoder, fed token ids rather than images.
bool is_text_model(const std::string& name);
// The canonical names with their aliases, for help and error texts: "mobilenetv2 | resnet18 | vgg11
// (vgg11_bn, vgg11-bn) | ...".
std::string model_names_help();

}  // namespace dgpipe::models
