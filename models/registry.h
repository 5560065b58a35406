// Builds a model by name — what the command line's --model, --num-classes and --input-size select.
#pragma once
#include <string>
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

// "mobilenetv2", "resnet18", "vgg11" (alias "vgg11_bn"), "roberta" (alias "roberta-base"), "bert" (alias
// "minilm": all-MiniLM-L6-v2's size). Unknown names are an error listing the known ones.
ModelPtr build_model(const std::string& name, const ModelOptions& opts = {});
std::vector<std::string> model_names();

}  // namespace dgpipe::models
