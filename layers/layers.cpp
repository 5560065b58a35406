#include "layers/layers.h"

#include <cmath>
#include <sstream>

#include "engine/amp.h"
#include "layers/init.h"

namespace dgpipe::layers {

namespace E = dgpipe::engine;
namespace amp = dgpipe::engine::amp;

Tensor in_dtype(const Tensor& x, DType dtype) {
  return x.defined() && E::is_floating(x.dtype()) && x.dtype() != dtype ? E::cast(x, dtype) : x;
}

std::vector<Tensor> gemm_operands(const std::vector<Tensor>& operands, const char* op) {
  if (amp::autocast_enabled()) return amp::autocast(operands, op);
  std::vector<Tensor> out = operands;
  out[0] = in_dtype(out[0], out[1].dtype());
  return out;
}

Tensor normalise_in_parameter_dtype(const Tensor& x, const Tensor& weight,
                                    const std::function<Tensor(const Tensor&)>& normalise) {
  if (x.dtype() == weight.dtype()) return normalise(x);
  return E::cast(normalise(E::cast(x, weight.dtype())), x.dtype());
}

// ---------------- Linear ----------------
Linear::Linear(int64_t in, int64_t out, bool with_bias, Generator* gen) : in_features(in), out_features(out) {
  DGP_CHECK(in > 0 && out > 0, "Linear: features must be positive, got in=" << in << " out=" << out);
  weight = register_parameter("weight", E::empty({out, in}));
  init::kaiming_uniform_(weight, std::sqrt(5.0), gen);
  if (with_bias) {
    bias = register_parameter("bias", E::empty({out}));
    double bound = 1.0 / std::sqrt(static_cast<double>(in));
    init::uniform_(bias, -bound, bound, gen);
  }
}

Tensor Linear::forward(const Tensor& x, const BlockContext&) {
  std::vector<Tensor> in = gemm_operands({x, weight, bias}, "linear");
  return E::linear(in[0], in[1], in[2]);
}

std::string Linear::extra_repr() const {
  std::ostringstream os;
  os << in_features << "->" << out_features << (bias.defined() ? "" : ", no bias");
  return os.str();
}

// ---------------- Conv2d ----------------
Conv2d::Conv2d(int64_t in, int64_t out, Conv2dOptions o, Generator* gen)
    : in_channels(in), out_channels(out), opts(o) {
  DGP_CHECK(in > 0 && out > 0 && o.groups > 0 && in % o.groups == 0 && out % o.groups == 0,
            "Conv2d: channels " << in << "->" << out << " must be positive multiples of groups=" << o.groups);
  DGP_CHECK(o.kernel > 0 && o.stride > 0 && o.padding >= 0 && o.dilation > 0,
            "Conv2d: bad geometry kernel=" << o.kernel << " stride=" << o.stride << " padding=" << o.padding
                                           << " dilation=" << o.dilation);
  weight = register_parameter("weight", E::empty({out, in / o.groups, o.kernel, o.kernel}));
  init::kaiming_uniform_(weight, std::sqrt(5.0), gen);
  if (o.bias) {
    bias = register_parameter("bias", E::empty({out}));
    double bound = 1.0 / std::sqrt(static_cast<double>(init::fan_in(weight)));
    init::uniform_(bias, -bound, bound, gen);
  }
}

Tensor Conv2d::forward(const Tensor& x, const BlockContext&) {
  E::Conv2dParams p;
  p.stride_h = p.stride_w = opts.stride;
  p.pad_h = p.pad_w = opts.padding;
  p.dilation_h = p.dilation_w = opts.dilation;
  p.groups = opts.groups;
  std::vector<Tensor> in = gemm_operands({x, weight, bias}, "conv2d");
  return E::conv2d(in[0], in[1], in[2], p);
}

std::string Conv2d::extra_repr() const {
  std::ostringstream os;
  os << in_channels << "->" << out_channels << ", k=" << opts.kernel << ", s=" << opts.stride
     << ", p=" << opts.padding;
  if (opts.groups != 1) os << ", groups=" << opts.groups;
  if (!opts.bias) os << ", no bias";
  return os.str();
}

// ---------------- BatchNorm2d ----------------
BatchNorm2d::BatchNorm2d(int64_t c, double eps_, double momentum_)
    : channels(c), eps(eps_), momentum(momentum_) {
  DGP_CHECK(c > 0, "BatchNorm2d: channels must be positive, got " << c);
  weight = register_parameter("weight", E::ones({c}));
  bias = register_parameter("bias", E::zeros({c}));
  running_mean = register_buffer("running_mean", E::zeros({c}));
  running_var = register_buffer("running_var", E::ones({c}));
  num_batches_tracked = register_buffer("num_batches_tracked", E::zeros({}, DType::i64));
}

Tensor BatchNorm2d::forward(const Tensor& x, const BlockContext&) {
  DGP_CHECK(x.dim() == 4 && x.size(1) == channels, "BatchNorm2d(" << channels << "): expected input [N,"
                                                                  << channels << ",H,W], got "
                                                                  << E::shape_str(x.shape()));
  if (deferred_ && is_training()) {
    Tensor out = normalise_in_parameter_dtype(x, weight, [&](const Tensor& xin) {
      return E::batch_norm2d(xin, weight, bias, Tensor(), Tensor(), true, momentum, eps);
    });
    E::NoGradGuard no_grad;
    Tensor xd = E::cast(x.detach(), DType::f64);
    Tensor s = E::sum(xd, {0, 2, 3});
    Tensor sq = E::sum(E::mul(xd, xd), {0, 2, 3});
    if (!sum_.defined()) {
      sum_ = s;
      sum_squares_ = sq;
    } else {
      sum_ = E::add(sum_, s);
      sum_squares_ = E::add(sum_squares_, sq);
    }
    count_ += x.size(0) * x.size(2) * x.size(3);
    return out;
  }
  Tensor out = normalise_in_parameter_dtype(x, weight, [&](const Tensor& xin) {
    return E::batch_norm2d(xin, weight, bias, running_mean, running_var, is_training(), momentum, eps);
  });
  if (is_training()) {
    // Counted on the tensor's own device (no host round trip); f32 is exact far beyond any run's length.
    E::NoGradGuard no_grad;
    num_batches_tracked.copy_(E::add(E::cast(num_batches_tracked, DType::f32), 1.0));
  }
  return out;
}

void BatchNorm2d::set_deferred(bool on) {
  deferred_ = on;
  sum_ = sum_squares_ = Tensor();
  count_ = 0;
}

void BatchNorm2d::commit_deferred() {
  if (!deferred_ || count_ == 0) return;
  E::NoGradGuard no_grad;
  double n = static_cast<double>(count_);
  Tensor mean = E::mul(sum_, 1.0 / n);
  Tensor var_biased = E::sub(E::mul(sum_squares_, 1.0 / n), E::mul(mean, mean));
  Tensor var_unbiased = E::mul(var_biased, count_ > 1 ? n / (n - 1) : 1.0);
  auto fold = [&](Tensor& running, const Tensor& stat) {
    Tensor updated = E::add(E::mul(E::cast(running, DType::f64), 1.0 - momentum), E::mul(stat, momentum));
    running.copy_(updated);
  };
  fold(running_mean, mean);
  fold(running_var, var_unbiased);
  num_batches_tracked.copy_(E::add(E::cast(num_batches_tracked, DType::f32), 1.0));
  sum_ = sum_squares_ = Tensor();
  count_ = 0;
}

std::string BatchNorm2d::extra_repr() const {
  std::ostringstream os;
  os << channels << ", eps=" << eps << ", momentum=" << momentum;
  return os.str();
}

// ---------------- LayerNorm ----------------
LayerNorm::LayerNorm(int64_t f, double eps_) : features(f), eps(eps_) {
  DGP_CHECK(f > 0, "LayerNorm: features must be positive, got " << f);
  weight = register_parameter("weight", E::ones({f}));
  bias = register_parameter("bias", E::zeros({f}));
}

Tensor LayerNorm::forward(const Tensor& x, const BlockContext&) {
  DGP_CHECK(x.dim() >= 1 && x.size(-1) == features,
            "LayerNorm(" << features << "): last dim of input " << E::shape_str(x.shape()) << " differs");
  return normalise_in_parameter_dtype(amp::autocast(x, "layer_norm"), weight, [&](const Tensor& xin) {
    return E::layer_norm(xin, {features}, weight, bias, eps);
  });
}

std::string LayerNorm::extra_repr() const {
  std::ostringstream os;
  os << features << ", eps=" << eps;
  return os.str();
}

// ---------------- Embedding ----------------
Embedding::Embedding(int64_t n, int64_t d, int64_t pad, Generator* gen)
    : num_embeddings(n), dim(d), padding_idx(pad) {
  DGP_CHECK(n > 0 && d > 0, "Embedding: sizes must be positive, got " << n << "x" << d);
  DGP_CHECK(pad >= -1 && pad < n, "Embedding: padding_idx " << pad << " out of range [0," << n << ")");
  weight = register_parameter("weight", E::empty({n, d}));
  init::normal_(weight, 0.0, 1.0, gen);
  if (pad >= 0) weight.select(0, pad).zero_();
}

Tensor Embedding::forward(const Tensor& indices, const BlockContext&) {
  return E::embedding(weight, indices, padding_idx);
}

std::string Embedding::extra_repr() const {
  std::ostringstream os;
  os << num_embeddings << "x" << dim;
  if (padding_idx >= 0) os << ", padding_idx=" << padding_idx;
  return os.str();
}

// ---------------- Dropout ----------------
Dropout::Dropout(double p_, Generator* g) : p(p_), gen(g) {
  DGP_CHECK(p_ >= 0.0 && p_ < 1.0, "Dropout: p must be in [0,1), got " << p_);
}

Tensor Dropout::forward(const Tensor& x, const BlockContext&) {
  if (!is_training() || p == 0.0) return x;
  return E::dropout(x, p, true, gen);
}

std::string Dropout::extra_repr() const {
  std::ostringstream os;
  os << "p=" << p;
  return os.str();
}

// ---------------- activations ----------------
Tensor apply_activation(Activation kind, const Tensor& x) {
  switch (kind) {
    case Activation::relu:
      return E::relu(x);
    case Activation::relu6:
      return E::relu6(x);
    case Activation::gelu:
      return E::gelu(x);
    case Activation::tanh:
      return E::tanh(x);
    case Activation::identity:
      return x;
  }
  DGP_FAIL("apply_activation: unknown activation " << static_cast<int>(kind));
}

Tensor ActivationLayer::forward(const Tensor& x, const BlockContext&) {
  return apply_activation(kind, x);
}

std::string ActivationLayer::type_name() const {
  switch (kind) {
    case Activation::relu:
      return "ReLU";
    case Activation::relu6:
      return "ReLU6";
    case Activation::gelu:
      return "GELU";
    case Activation::tanh:
      return "Tanh";
    case Activation::identity:
      return "Identity";
  }
  return "Activation";
}

// ---------------- pooling ----------------
Tensor Pool2d::forward(const Tensor& x, const BlockContext&) {
  switch (kind) {
    case PoolKind::max:
      return E::max_pool2d(x, kernel, stride, padding);
    case PoolKind::avg:
      return E::avg_pool2d(x, kernel, stride, padding);
    case PoolKind::adaptive_avg:
      return E::adaptive_avg_pool2d(x, kernel, kernel);
  }
  DGP_FAIL("Pool2d: unknown kind");
}

std::string Pool2d::type_name() const {
  switch (kind) {
    case PoolKind::max:
      return "MaxPool2d";
    case PoolKind::avg:
      return "AvgPool2d";
    case PoolKind::adaptive_avg:
      return "AdaptiveAvgPool2d";
  }
  return "Pool2d";
}

std::string Pool2d::extra_repr() const {
  std::ostringstream os;
  if (kind == PoolKind::adaptive_avg)
    os << "out=" << kernel;
  else
    os << "k=" << kernel << ", s=" << stride << ", p=" << padding;
  return os.str();
}

// ---------------- containers ----------------
Sequential::Sequential(std::vector<std::shared_ptr<Module>> modules) {
  for (auto& m : modules) push_back(std::move(m));
}

void Sequential::push_back(std::shared_ptr<Module> m) {
  add_child(std::to_string(items_.size()), m);
  items_.push_back(std::move(m));
}

Tensor Sequential::forward(const Tensor& x, const BlockContext& ctx) {
  Tensor h = x;
  for (auto& m : items_) h = m->forward(h, ctx);
  return h;
}

Block::Block(std::string label, std::vector<std::pair<std::string, std::shared_ptr<Module>>> parts, Fn fn)
    : label_(std::move(label)), fn_(std::move(fn)) {
  DGP_CHECK(fn_ != nullptr, "Block '" << label_ << "': no forward function");
  for (auto& [name, m] : parts) add_child(name, m);
}

}  // namespace dgpipe::layers
