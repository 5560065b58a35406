// The layers built from engine ops, with PyTorch's parameter names, default initialisation and train/eval
// semantics (dropout off and batch-norm running statistics used in eval; statistics updated in train).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "layers/module.h"

namespace dgpipe::layers {

using engine::Generator;

// Precision rules every layer follows (engine/amp.h has the precisions):
// - GEMM layers (Linear, Conv2d) compute under autocast in its dtype (gemm_operands); without autocast in
//   their parameters' dtype, so a half-precision model casts its f32 input once, at its first layer.
// - Normalisation layers (BatchNorm2d, LayerNorm) keep fp32 parameters in every precision and compute in
//   them; they return their input's dtype (LayerNorm's input is cast to fp32 first under autocast, as in
//   PyTorch, so it returns fp32 there).
// x cast to dtype when it is floating and differs (differentiable).
Tensor in_dtype(const Tensor& x, DType dtype);
// {input, weight, bias} of a GEMM layer in the dtype it computes in: autocast's policy for `op` when autocast
// is on, otherwise the input cast to the weight's dtype.
std::vector<Tensor> gemm_operands(const std::vector<Tensor>& operands, const char* op);
// normalise(x) computed in the weight's dtype, returned in x's dtype.
Tensor normalise_in_parameter_dtype(const Tensor& x, const Tensor& weight,
                                    const std::function<Tensor(const Tensor&)>& normalise);

// y = x W^T + b; weight [out, in]. Init as nn.Linear: kaiming_uniform(a=sqrt(5)), bias U(+-1/sqrt(in)).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator* gen = nullptr);
  Tensor forward(const Tensor& x, const BlockContext& ctx) override;
  std::string type_name() const override { return "Linear"; }
  std::string extra_repr() const override;
  Tensor weight, bias;
  int64_t in_features, out_features;
};

struct Conv2dOptions {
  int64_t kernel = 3, stride = 1, padding = 0, dilation = 1, groups = 1;
  bool bias = true;
};

// 2-D convolution, weight [out, in/groups, k, k]. Init as nn.Conv2d (same rule as Linear).
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, Conv2dOptions opts, Generator* gen = nullptr);
  Tensor forward(const Tensor& x, const BlockContext& ctx) override;
  std::string type_name() const override { return "Conv2d"; }
  std::string extra_repr() const override;
  Tensor weight, bias;
  int64_t in_channels, out_channels;
  Conv2dOptions opts;
};

// Batch norm over (N,H,W) per channel, with running statistics (momentum 0.1, eps 1e-5 by default) and the
// num_batches_tracked counter PyTorch keeps in its state_dict.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, double eps = 1e-5, double momentum = 0.1);
  Tensor forward(const Tensor& x, const BlockContext& ctx) override;
  std::string type_name() const override { return "BatchNorm2d"; }
  std::string extra_repr() const override;
  bool keeps_fp32_parameters() const override { return true; }
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  int64_t channels;
  double eps, momentum;

  // Deferred mode (torchgpipe's DeferredBatchNorm idea): in training each micro-batch is still normalised
  // with its own statistics, but the running statistics are not touched per micro-batch; instead per-channel
  // sums are accumulated and commit_deferred() (called once per optimizer step) folds the statistics of the
  // whole mini-batch into the running ones, as one BatchNorm call on the full mini-batch would (unbiased
  // running var).
  void set_deferred(bool on);
  bool deferred() const { return deferred_; }
  void commit_deferred();

 private:
  bool deferred_ = false;
  Tensor sum_, sum_squares_;  // f64 [C]
  int64_t count_ = 0;
};

// Layer norm over the last dimension (the only form BERT/RoBERTa use).
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t features, double eps = 1e-5);
  Tensor forward(const Tensor& x, const BlockContext& ctx) override;
  std::string type_name() const override { return "LayerNorm"; }
  std::string extra_repr() const override;
  bool keeps_fp32_parameters() const override { return true; }
  Tensor weight, bias;
  int64_t features;
  double eps;
};

// Lookup table [num, dim]; init N(0,1) like nn.Embedding, padding row zeroed and never updated.
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t dim, int64_t padding_idx = -1, Generator* gen = nullptr);
  Tensor forward(const Tensor& indices, const BlockContext& ctx) override;
  std::string type_name() const override { return "Embedding"; }
  std::string extra_repr() const override;
  Tensor weight;
  int64_t num_embeddings, dim, padding_idx;
};

// Identity in eval; in train zeroes each element with probability p and scales the rest by 1/(1-p).
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5, Generator* gen = nullptr);
  Tensor forward(const Tensor& x, const BlockContext& ctx) override;
  std::string type_name() const override { return "Dropout"; }
  std::string extra_repr() const override;
  double p;
  Generator* gen;  // null: the default generator
};

// Parameter-free modules wrapping one op.
enum class Activation { relu, relu6, gelu, tanh, identity };
class ActivationLayer : public Module {
 public:
  explicit ActivationLayer(Activation kind) : kind(kind) {}
  Tensor forward(const Tensor& x, const BlockContext& ctx) override;
  std::string type_name() const override;
  Activation kind;
};
inline std::shared_ptr<Module> ReLU() {
  return std::make_shared<ActivationLayer>(Activation::relu);
}
inline std::shared_ptr<Module> ReLU6() {
  return std::make_shared<ActivationLayer>(Activation::relu6);
}
inline std::shared_ptr<Module> GELU() {
  return std::make_shared<ActivationLayer>(Activation::gelu);
}
inline std::shared_ptr<Module> Tanh() {
  return std::make_shared<ActivationLayer>(Activation::tanh);
}
inline std::shared_ptr<Module> Identity() {
  return std::make_shared<ActivationLayer>(Activation::identity);
}
Tensor apply_activation(Activation kind, const Tensor& x);

enum class PoolKind { max, avg, adaptive_avg };
class Pool2d : public Module {
 public:
  // max/avg: kernel, stride, padding; adaptive_avg: kernel is the output size (square).
  Pool2d(PoolKind kind, int64_t kernel, int64_t stride, int64_t padding = 0)
      : kind(kind), kernel(kernel), stride(stride), padding(padding) {}
  Tensor forward(const Tensor& x, const BlockContext& ctx) override;
  std::string type_name() const override;
  std::string extra_repr() const override;
  PoolKind kind;
  int64_t kernel, stride, padding;
};
inline std::shared_ptr<Module> MaxPool2d(int64_t k, int64_t s, int64_t p = 0) {
  return std::make_shared<Pool2d>(PoolKind::max, k, s, p);
}
inline std::shared_ptr<Module> AvgPool2d(int64_t k, int64_t s, int64_t p = 0) {
  return std::make_shared<Pool2d>(PoolKind::avg, k, s, p);
}
inline std::shared_ptr<Module> AdaptiveAvgPool2d(int64_t out) {
  return std::make_shared<Pool2d>(PoolKind::adaptive_avg, out, 1, 0);
}

// Flattens dims [start, end] (nn.Flatten's default start 1).
class Flatten : public Module {
 public:
  explicit Flatten(int64_t start = 1, int64_t end = -1) : start(start), end(end) {}
  Tensor forward(const Tensor& x, const BlockContext& ctx) override { return x.flatten(start, end); }
  std::string type_name() const override { return "Flatten"; }
  int64_t start, end;
};

// Children named "0", "1", ... run in order (nn.Sequential).
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<std::shared_ptr<Module>> modules);
  void push_back(std::shared_ptr<Module> m);
  Tensor forward(const Tensor& x, const BlockContext& ctx) override;
  std::string type_name() const override { return "Sequential"; }
  size_t size() const { return items_.size(); }
  std::shared_ptr<Module> operator[](size_t i) const { return items_.at(i); }

 private:
  std::vector<std::shared_ptr<Module>> items_;
};

// A pipeline block assembled from modules that live elsewhere in the model's name tree: each part is
// registered under its full name ("features.3", "conv1"), so the block's parameter names are the whole
// model's names, and `fn` says how the parts compute (pooling and flattening between them, say).
class Block : public Module {
 public:
  using Fn = std::function<Tensor(const Tensor&, const BlockContext&)>;
  Block(std::string label, std::vector<std::pair<std::string, std::shared_ptr<Module>>> parts, Fn fn);
  Tensor forward(const Tensor& x, const BlockContext& ctx) override { return fn_(x, ctx); }
  std::string type_name() const override { return label_; }

 private:
  std::string label_;
  Fn fn_;
};

}  // namespace dgpipe::layers
