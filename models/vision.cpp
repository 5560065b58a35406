#include "models/vision.h"

#include <cmath>

#include "engine/amp.h"
#include "layers/init.h"

namespace dgpipe::models {

namespace E = dgpipe::engine;
using layers::BatchNorm2d;
using layers::Block;
using layers::Conv2d;
using layers::Conv2dOptions;
using layers::Linear;
using layers::Sequential;

namespace {

class ImageModel : public Model {
 public:
  ImageModel(std::string name, int64_t classes, int64_t input_size)
      : Model(std::move(name), InputKind::image, classes), input_size_(input_size) {}
  Shape example_input_shape(int64_t batch) const override { return {batch, 3, input_size_, input_size_}; }

 private:
  int64_t input_size_;
};

// torchvision's weight init for its CNNs, applied after construction.
void torchvision_init(Module& m, bool linear_small_normal, E::Generator* gen) {
  for (auto& [name, mod] : m.named_modules()) {
    Module* mm = const_cast<Module*>(mod.get());
    if (auto* c = dynamic_cast<Conv2d*>(mm)) {
      layers::init::kaiming_normal_fan_out_(c->weight, gen);
      if (c->bias.defined()) c->bias.zero_();
    } else if (auto* b = dynamic_cast<BatchNorm2d*>(mm)) {
      b->weight.fill_(1.0);
      b->bias.zero_();
    } else if (auto* l = dynamic_cast<Linear*>(mm); l && linear_small_normal) {
      layers::init::normal_(l->weight, 0.0, 0.01, gen);
      if (l->bias.defined()) l->bias.zero_();
    }
  }
}

Conv2dOptions conv_opts(int64_t k, int64_t s, int64_t p, bool bias, int64_t groups = 1) {
  Conv2dOptions o;
  o.kernel = k;
  o.stride = s;
  o.padding = p;
  o.bias = bias;
  o.groups = groups;
  return o;
}

// torchvision Conv2dNormActivation: conv (no bias, "same" padding) -> BN -> activation, as "0", "1", "2".
std::shared_ptr<Sequential> conv_bn_act(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups,
                                        layers::Activation act, E::Generator* gen) {
  auto seq = std::make_shared<Sequential>();
  seq->push_back(std::make_shared<Conv2d>(in, out, conv_opts(k, stride, (k - 1) / 2, false, groups), gen));
  seq->push_back(std::make_shared<BatchNorm2d>(out));
  seq->push_back(std::make_shared<layers::ActivationLayer>(act));
  return seq;
}

// MobileNetV2's inverted residual: [1×1 expand] -> 3×3 depthwise -> 1×1 linear projection, plus the input
// when the shape is kept. Children: "conv" (a Sequential named as torchvision's).
class InvertedResidual : public Module {
 public:
  InvertedResidual(int64_t in, int64_t out, int64_t stride, int64_t expand, E::Generator* gen)
      : residual_(stride == 1 && in == out) {
    int64_t hidden = static_cast<int64_t>(std::llround(static_cast<double>(in * expand)));
    conv_ = std::make_shared<Sequential>();
    if (expand != 1) conv_->push_back(conv_bn_act(in, hidden, 1, 1, 1, layers::Activation::relu6, gen));
    conv_->push_back(conv_bn_act(hidden, hidden, 3, stride, hidden, layers::Activation::relu6, gen));
    conv_->push_back(std::make_shared<Conv2d>(hidden, out, conv_opts(1, 1, 0, false), gen));
    conv_->push_back(std::make_shared<BatchNorm2d>(out));
    register_module("conv", conv_);
  }
  Tensor forward(const Tensor& x, const BlockContext& ctx) override {
    Tensor y = conv_->forward(x, ctx);
    if (!residual_) return y;
    auto [a, b] = E::amp::promote(x, y);
    return E::add(a, b);
  }
  std::string type_name() const override { return "InvertedResidual"; }
  std::string extra_repr() const override { return residual_ ? "residual" : ""; }

 private:
  std::shared_ptr<Sequential> conv_;
  bool residual_;
};

// ResNet's basic block: conv3×3-BN-ReLU-conv3×3-BN plus the (possibly downsampled) input, then ReLU.
class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in, int64_t out, int64_t stride, E::Generator* gen) {
    conv1_ = register_module("conv1", std::make_shared<Conv2d>(in, out, conv_opts(3, stride, 1, false), gen));
    bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(out));
    conv2_ = register_module("conv2", std::make_shared<Conv2d>(out, out, conv_opts(3, 1, 1, false), gen));
    bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out));
    if (stride != 1 || in != out) {
      downsample_ = std::make_shared<Sequential>();
      downsample_->push_back(std::make_shared<Conv2d>(in, out, conv_opts(1, stride, 0, false), gen));
      downsample_->push_back(std::make_shared<BatchNorm2d>(out));
      register_module("downsample", downsample_);
    }
  }
  Tensor forward(const Tensor& x, const BlockContext& ctx) override {
    Tensor y = E::relu(bn1_->forward(conv1_->forward(x, ctx), ctx));
    y = bn2_->forward(conv2_->forward(y, ctx), ctx);
    Tensor identity = downsample_ ? downsample_->forward(x, ctx) : x;
    auto [a, b] = E::amp::promote(y, identity);
    return E::relu(E::add(a, b));
  }
  std::string type_name() const override { return "BasicBlock"; }

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<Sequential> downsample_;
};

// The last block: average pooling to pool x pool, flattened, into `head`, registered under `head_name` so
// that the parameter names stay torchvision's (classifier.*, fc.*). `type` names the block.
std::shared_ptr<Block> pooled_head(const std::string& type, const std::string& head_name,
                                   std::shared_ptr<Module> head, int64_t pool) {
  return std::make_shared<Block>(
      type, std::vector<std::pair<std::string, std::shared_ptr<Module>>>{{head_name, head}},
      [head, pool](const Tensor& x, const BlockContext& ctx) {
        return head->forward(E::adaptive_avg_pool2d(x, pool, pool).flatten(1), ctx);
      });
}

}  // namespace

int64_t make_divisible(double v, int64_t divisor) {
  int64_t rounded = static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor;
  int64_t out = std::max(divisor, rounded);
  if (static_cast<double>(out) < 0.9 * v) out += divisor;
  return out;
}

ModelPtr make_mobilenetv2(const MobileNetV2Config& cfg) {
  DGP_CHECK(cfg.num_classes > 0, "mobilenetv2: num_classes must be positive, got " << cfg.num_classes);
  DGP_CHECK(cfg.width_mult > 0, "mobilenetv2: width_mult must be positive, got " << cfg.width_mult);
  E::Generator gen(cfg.seed);
  auto model = std::make_shared<ImageModel>(cfg.cifar ? "mobilenetv2" : "mobilenetv2-imagenet",
                                            cfg.num_classes, cfg.cifar ? 32 : 224);
  auto features = std::make_shared<Sequential>();
  int64_t channels = make_divisible(32 * cfg.width_mult, cfg.round_nearest);
  int64_t last = make_divisible(cfg.last_channel * std::max(1.0, cfg.width_mult), cfg.round_nearest);
  features->push_back(conv_bn_act(3, channels, 3, cfg.cifar ? 1 : 2, 1, layers::Activation::relu6, &gen));
  for (size_t s = 0; s < cfg.stages.size(); ++s) {
    auto [t, c, n, stride] = cfg.stages[s];
    if (cfg.cifar && s == 1) stride = 1;  // CIFAR: keep 32×32 through the second stage
    int64_t out = make_divisible(c * cfg.width_mult, cfg.round_nearest);
    for (int64_t i = 0; i < n; ++i) {
      features->push_back(std::make_shared<InvertedResidual>(channels, out, i == 0 ? stride : 1, t, &gen));
      channels = out;
    }
  }
  features->push_back(conv_bn_act(channels, last, 1, 1, 1, layers::Activation::relu6, &gen));
  auto classifier = std::make_shared<Sequential>();
  classifier->push_back(std::make_shared<layers::Dropout>(cfg.dropout));
  classifier->push_back(std::make_shared<Linear>(last, cfg.num_classes, true, &gen));
  for (size_t i = 0; i < features->size(); ++i) {
    std::string name = "features." + std::to_string(i);
    model->add_block(name, (*features)[i], name);
  }
  model->add_block("head", pooled_head("PoolClassifier", "classifier", classifier, 1));
  torchvision_init(*model, true, &gen);
  return model;
}

ModelPtr make_resnet18(const ResNet18Config& cfg) {
  DGP_CHECK(cfg.num_classes > 0, "resnet18: num_classes must be positive, got " << cfg.num_classes);
  DGP_CHECK(cfg.base_width > 0, "resnet18: base_width must be positive, got " << cfg.base_width);
  E::Generator gen(cfg.seed);
  auto model = std::make_shared<ImageModel>(cfg.cifar ? "resnet18" : "resnet18-imagenet", cfg.num_classes,
                                            cfg.cifar ? 32 : 224);
  const int64_t w = cfg.base_width;
  auto conv1 = cfg.cifar ? std::make_shared<Conv2d>(3, w, conv_opts(3, 1, 1, false), &gen)
                         : std::make_shared<Conv2d>(3, w, conv_opts(7, 2, 3, false), &gen);
  auto bn1 = std::make_shared<BatchNorm2d>(w);
  const bool cifar = cfg.cifar;
  model->add_block("stem",
                   std::make_shared<Block>("Stem",
                                           std::vector<std::pair<std::string, std::shared_ptr<Module>>>{
                                               {"conv1", conv1}, {"bn1", bn1}},
                                           [conv1, bn1, cifar](const Tensor& x, const BlockContext& ctx) {
                                             Tensor y = E::relu(bn1->forward(conv1->forward(x, ctx), ctx));
                                             return cifar ? y : E::max_pool2d(y, 3, 2, 1);
                                           }));
  int64_t in = w;
  for (int64_t stage = 0; stage < 4; ++stage) {
    int64_t out = w << stage;
    for (int64_t b = 0; b < cfg.blocks_per_stage[stage]; ++b) {
      std::string name = "layer" + std::to_string(stage + 1) + "." + std::to_string(b);
      model->add_block(name, std::make_shared<BasicBlock>(in, out, (b == 0 && stage > 0) ? 2 : 1, &gen),
                       name);
      in = out;
    }
  }
  auto fc = std::make_shared<Linear>(in, cfg.num_classes, true, &gen);
  model->add_block("head", pooled_head("PoolFc", "fc", fc, 1));
  torchvision_init(*model, false, &gen);
  return model;
}

ModelPtr make_vgg11_bn(const VGG11Config& cfg) {
  DGP_CHECK(cfg.num_classes > 0, "vgg11: num_classes must be positive, got " << cfg.num_classes);
  E::Generator gen(cfg.seed);
  auto model = std::make_shared<ImageModel>(cfg.cifar ? "vgg11" : "vgg11-imagenet", cfg.num_classes,
                                            cfg.cifar ? 32 : 224);
  // One block per conv-BN-ReLU unit, taking the max-pool that follows it; features keep torchvision's
  // indices.
  int64_t index = 0, in = 3, unit = 0;
  for (size_t i = 0; i < cfg.layers.size(); ++i) {
    int64_t width = cfg.layers[i];
    DGP_CHECK(width > 0,
              "vgg11: layer list must start each unit with a conv width, got " << width << " at " << i);
    auto conv = std::make_shared<Conv2d>(in, width, conv_opts(3, 1, 1, true), &gen);
    auto bn = std::make_shared<BatchNorm2d>(width);
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> parts = {
        {"features." + std::to_string(index), conv}, {"features." + std::to_string(index + 1), bn}};
    index += 3;  // conv, bn, relu
    bool pool = i + 1 < cfg.layers.size() && cfg.layers[i + 1] == -1;
    if (pool) {
      ++index;
      ++i;
    }
    model->add_block("conv" + std::to_string(unit++),
                     std::make_shared<Block>("ConvBnRelu" + std::string(pool ? "Pool" : ""), parts,
                                             [conv, bn, pool](const Tensor& x, const BlockContext& ctx) {
                                               Tensor y = E::relu(bn->forward(conv->forward(x, ctx), ctx));
                                               return pool ? E::max_pool2d(y, 2, 2) : y;
                                             }));
    in = width;
  }
  if (cfg.cifar) {
    auto classifier = std::make_shared<Linear>(in, cfg.num_classes, true, &gen);
    model->add_block(
        "head", std::make_shared<Block>(
                    "FlattenLinear",
                    std::vector<std::pair<std::string, std::shared_ptr<Module>>>{{"classifier", classifier}},
                    [classifier](const Tensor& x, const BlockContext& ctx) {
                      DGP_CHECK(x.dim() == 4 && x.size(2) == 1 && x.size(3) == 1,
                                "vgg11 (CIFAR head): expected a 1x1 feature map, got "
                                    << E::shape_str(x.shape()) << " (input must be 32x32)");
                      return classifier->forward(x.flatten(1), ctx);
                    }));
  } else {
    auto classifier = std::make_shared<Sequential>();
    classifier->push_back(std::make_shared<Linear>(in * 49, cfg.hidden, true, &gen));
    classifier->push_back(layers::ReLU());
    classifier->push_back(std::make_shared<layers::Dropout>(cfg.dropout));
    classifier->push_back(std::make_shared<Linear>(cfg.hidden, cfg.hidden, true, &gen));
    classifier->push_back(layers::ReLU());
    classifier->push_back(std::make_shared<layers::Dropout>(cfg.dropout));
    classifier->push_back(std::make_shared<Linear>(cfg.hidden, cfg.num_classes, true, &gen));
    model->add_block("head", pooled_head("PoolClassifier", "classifier", classifier, 7));
  }
  torchvision_init(*model, true, &gen);
  return model;
}

}  // namespace dgpipe::models
