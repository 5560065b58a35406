#include "models/registry.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "models/roberta.h"
#include "models/vision.h"

namespace dgpipe::models {

std::vector<std::string> model_names() {
  return {"mobilenetv2", "resnet18", "vgg11", "roberta", "bert"};
}

const std::vector<std::pair<std::string, std::string>>& model_aliases() {
  static const std::vector<std::pair<std::string, std::string>> aliases = {{"vgg11_bn", "vgg11"},
                                                                           {"vgg11-bn", "vgg11"},
                                                                           {"roberta-base", "roberta"},
                                                                           {"minilm", "bert"},
                                                                           {"all-minilm-l6-v2", "bert"}};
  return aliases;
}

std::string canonical_model_name(const std::string& name) {
  for (const std::string& n : model_names())
    if (n == name) return n;
  for (const auto& [alias, canonical] : model_aliases())
    if (alias == name) return canonical;
  return "";
}

bool is_text_model(const std::string& name) {
  const std::string canonical = canonical_model_name(name);
  return canonical == "roberta" || canonical == "bert";
}

std::string model_names_help() {
  std::ostringstream os;
  for (const std::string& n : model_names()) {
    os << (n == model_names().front() ? "" : " | ") << n;
    std::string aliases;
    for (const auto& [alias, canonical] : model_aliases())
      if (canonical == n) aliases += (aliases.empty() ? "" : ", ") + alias;
    if (!aliases.empty()) os << " (" << aliases << ")";
  }
  return os.str();
}

namespace {

ModelPtr build_image_model(const std::string& name, const ModelOptions& opts) {
  DGP_CHECK(opts.input_size == 32 || opts.input_size == 224,
            "build_model: " << name << " supports --input-size 32 (CIFAR) or 224 (ImageNet), got "
                            << opts.input_size);
  const bool cifar = opts.input_size == 32;
  const int64_t classes = opts.num_classes > 0 ? opts.num_classes : (cifar ? 10 : 1000);
  DGP_CHECK(opts.width_mult > 0 && opts.width_mult <= 4,
            "build_model: width multiplier must be in (0, 4], got " << opts.width_mult);
  auto scaled = [&](int64_t channels) {
    return std::max<int64_t>(4, std::llround(channels * opts.width_mult));
  };
  if (name == "mobilenetv2") {
    MobileNetV2Config c;
    c.num_classes = classes;
    c.cifar = cifar;
    c.width_mult = opts.width_mult;
    c.seed = opts.seed;
    return make_mobilenetv2(c);
  }
  if (name == "resnet18") {
    ResNet18Config c;
    c.num_classes = classes;
    c.cifar = cifar;
    c.base_width = scaled(c.base_width);
    c.seed = opts.seed;
    return make_resnet18(c);
  }
  VGG11Config c;
  c.num_classes = classes;
  c.cifar = cifar;
  for (int64_t& w : c.layers)
    if (w > 0) w = scaled(w);
  if (!cifar) c.hidden = scaled(c.hidden);
  c.seed = opts.seed;
  return make_vgg11_bn(c);
}

ModelPtr build_text_model(const std::string& name, const ModelOptions& opts) {
  const int64_t classes = opts.num_classes >= 0 ? opts.num_classes : 2;
  EncoderConfig c = !opts.hf_config.empty() ? EncoderConfig::from_hf_config(opts.hf_config, classes)
                    : name == "roberta"     ? EncoderConfig::roberta_base(classes)
                                            : EncoderConfig::minilm_l6(classes);
  DGP_CHECK(opts.hf_config.empty() || (c.variant == EncoderConfig::Variant::bert) == (name == "bert"),
            "build_model: " << opts.hf_config << " describes a " << (name == "bert" ? "RoBERTa" : "BERT")
                            << " model, not " << name);
  if (classes == 0) c.add_pooler = c.variant == EncoderConfig::Variant::bert;  // BertModel has a pooler
  c.seed = opts.seed;
  return make_text_model(c);
}

}  // namespace

ModelPtr build_model(const std::string& name_in, const ModelOptions& opts) {
  const std::string name = canonical_model_name(name_in);
  DGP_CHECK(!name.empty(),
            "build_model: unknown model '" << name_in << "' (known: " << model_names_help() << ")");
  return is_text_model(name) ? build_text_model(name, opts) : build_image_model(name, opts);
}

}  // namespace dgpipe::models
