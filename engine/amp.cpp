#include "engine/amp.h"

#include <unordered_map>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/optim/optimizer.h"

namespace dgpipe::engine::amp {

Precision parse_precision(const std::string& text) {
  if (text == "fp32") return Precision::fp32;
  if (text == "fp16") return Precision::fp16;
  if (text == "bf16") return Precision::bf16;
  if (text == "mixed" || text == "mixed-fp16") return Precision::mixed;
  if (text == "mixed-bf16") return Precision::mixed_bf16;
  DGP_FAIL("--precision: unknown value '" << text << "' (expected fp32, fp16, bf16, mixed or mixed-bf16)");
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::fp32:
      return "fp32";
    case Precision::fp16:
      return "fp16";
    case Precision::bf16:
      return "bf16";
    case Precision::mixed:
      return "mixed";
    case Precision::mixed_bf16:
      return "mixed-bf16";
  }
  return "?";
}

DType compute_dtype(Precision p) {
  switch (p) {
    case Precision::fp32:
      return DType::f32;
    case Precision::fp16:
    case Precision::mixed:
      return DType::f16;
    case Precision::bf16:
    case Precision::mixed_bf16:
      return DType::bf16;
  }
  return DType::f32;
}

DType storage_dtype(Precision p) {
  return uses_master_weights(p) ? compute_dtype(p) : DType::f32;
}

bool uses_autocast(Precision p) {
  return p == Precision::mixed || p == Precision::mixed_bf16;
}
bool uses_master_weights(Precision p) {
  return p == Precision::fp16 || p == Precision::bf16;
}
bool needs_loss_scaling(Precision p) {
  return p == Precision::fp16 || p == Precision::mixed;
}

CastPolicy policy_for(const std::string& op) {
  // Batch norm is not listed (keep), as in PyTorch: the layer computes in its fp32 parameters' dtype and
  // returns its input's dtype (layers/layers.cpp), so a CNN's activations stay half between convolutions.
  static const std::unordered_map<std::string, CastPolicy> table = {
      // tensor-core work
      {"matmul", CastPolicy::lower_precision},
      {"bmm", CastPolicy::lower_precision},
      {"linear", CastPolicy::lower_precision},
      {"conv2d", CastPolicy::lower_precision},
      {"attention", CastPolicy::lower_precision},
      // numerically sensitive: fp32
      {"softmax", CastPolicy::fp32},
      {"log_softmax", CastPolicy::fp32},
      {"cross_entropy", CastPolicy::fp32},
      {"layer_norm", CastPolicy::fp32},
      {"sum", CastPolicy::fp32},
      {"mean", CastPolicy::fp32},
      {"var", CastPolicy::fp32},
      {"exp", CastPolicy::fp32},
      {"log", CastPolicy::fp32},
      {"pow", CastPolicy::fp32},
      {"rsqrt", CastPolicy::fp32},
      {"loss", CastPolicy::fp32},
  };
  auto it = table.find(op);
  return it == table.end() ? CastPolicy::keep : it->second;
}

namespace {
thread_local bool t_enabled = false;
thread_local DType t_dtype = DType::f16;
}  // namespace

bool autocast_enabled() {
  return t_enabled;
}
DType autocast_dtype() {
  return t_dtype;
}

AutocastGuard::AutocastGuard(bool enabled, DType dtype) : prev_enabled_(t_enabled), prev_dtype_(t_dtype) {
  DGP_CHECK(dtype == DType::f16 || dtype == DType::bf16,
            "AutocastGuard: the low-precision dtype must be f16 or bf16, got " << dtype_name(dtype));
  t_enabled = enabled;
  t_dtype = dtype;
}
AutocastGuard::AutocastGuard(Precision p)
    : AutocastGuard(uses_autocast(p), uses_autocast(p) ? compute_dtype(p) : DType::f16) {}
AutocastGuard::~AutocastGuard() {
  t_enabled = prev_enabled_;
  t_dtype = prev_dtype_;
}

Tensor autocast(const Tensor& t, const std::string& op) {
  if (!t_enabled || !t.defined() || !is_floating(t.dtype())) return t;
  CastPolicy p = policy_for(op);
  if (p == CastPolicy::keep) return t;
  // f64 is the CPU oracle's dtype: never lowered silently.
  if (t.dtype() == DType::f64) return t;
  DType want = p == CastPolicy::lower_precision ? t_dtype : DType::f32;
  return t.dtype() == want ? t : cast(t, want);
}

std::vector<Tensor> autocast(const std::vector<Tensor>& ts, const std::string& op) {
  std::vector<Tensor> out;
  out.reserve(ts.size());
  for (const Tensor& t : ts) out.push_back(autocast(t, op));
  return out;
}

std::pair<Tensor, Tensor> promote(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined() || a.dtype() == b.dtype() || !is_floating(a.dtype()) ||
      !is_floating(b.dtype()))
    return {a, b};
  auto width = [](DType t) { return t == DType::f64 ? 2 : t == DType::f32 ? 1 : 0; };
  // Two different half types meet in f32, which holds both exactly.
  const DType common = width(a.dtype()) == width(b.dtype())  ? DType::f32
                       : width(a.dtype()) > width(b.dtype()) ? a.dtype()
                                                             : b.dtype();
  return {cast(a, common), cast(b, common)};
}

// ---------------- MasterWeights ----------------

MasterWeights::MasterWeights(std::vector<Tensor> model_params, const std::vector<Tensor>& initial_values)
    : model_(std::move(model_params)) {
  DGP_CHECK(
      initial_values.empty() || initial_values.size() == model_.size(),
      "MasterWeights: " << initial_values.size() << " initial values for " << model_.size() << " parameters");
  NoGradGuard ng;
  for (size_t i = 0; i < model_.size(); ++i) {
    const Tensor& p = model_[i];
    DGP_CHECK(p.defined() && is_floating(p.dtype()), "MasterWeights: parameter " << i << " is not floating");
    if (!is_half(p.dtype())) {
      master_.push_back(p);
      continue;
    }
    const Tensor& from = initial_values.empty() ? p : initial_values[i];
    DGP_CHECK(from.shape() == p.shape(), "MasterWeights: initial value "
                                             << i << " has shape " << shape_str(from.shape())
                                             << ", the parameter " << shape_str(p.shape()));
    Tensor m = from.detach().to(p.device()).to(DType::f32).contiguous().clone().detach();
    m.requires_grad_(true);
    master_.push_back(m);
  }
}

void MasterWeights::copy_grads_to_master() {
  NoGradGuard ng;
  for (size_t i = 0; i < model_.size(); ++i) {
    if (!has_copy(i)) continue;
    Tensor g = model_[i].grad();
    if (!g.defined()) {
      master_[i].zero_grad();
      continue;
    }
    master_[i].set_grad(g.to(DType::f32).contiguous().clone());
  }
}

void MasterWeights::copy_master_to_model() {
  NoGradGuard ng;
  for (size_t i = 0; i < model_.size(); ++i) {
    if (!has_copy(i)) continue;
    Tensor dst = model_[i].detach();
    dst.copy_(master_[i].detach());
  }
}

void MasterWeights::zero_model_grads() {
  for (size_t i = 0; i < model_.size(); ++i)
    if (has_copy(i)) model_[i].zero_grad();
}

// ---------------- PrecisionStep ----------------

namespace {
LossScalerOptions scaler_for(Precision p, LossScalerOptions o) {
  o.enabled = o.enabled && needs_loss_scaling(p);
  return o;
}
}  // namespace

PrecisionStep::PrecisionStep(Precision precision, std::vector<Tensor> params, const LossScalerOptions& scaler,
                             const std::vector<Tensor>& initial_values)
    : precision_(precision), params_(std::move(params)), scaler_(scaler_for(precision, scaler)) {
  if (uses_master_weights(precision)) masters_ = std::make_unique<MasterWeights>(params_, initial_values);
}

const std::vector<Tensor>& PrecisionStep::optimizer_params() const {
  return masters_ ? masters_->master() : params_;
}

Tensor PrecisionStep::scale_loss(const Tensor& loss) const {
  DGP_CHECK(loss.defined(), "PrecisionStep::scale_loss: undefined loss");
  return scaler_.scale(is_half(loss.dtype()) ? cast(loss, DType::f32) : loss);
}

bool PrecisionStep::unscale(Optimizer* optimizer) {
  DGP_CHECK(!unscaled_, "PrecisionStep::unscale: called twice without step()");
  unscaled_ = true;
  if (masters_) masters_->copy_grads_to_master();
  if (!scaler_.enabled()) return true;
  return optimizer ? scaler_.unscale(*optimizer) : scaler_.unscale(std::vector<Tensor>{});
}

bool PrecisionStep::step(Optimizer* optimizer, bool all_finite) {
  DGP_CHECK(unscaled_, "PrecisionStep::step: call unscale() first");
  unscaled_ = false;
  scaler_.agree(all_finite);
  const bool stepped = scaler_.step(optimizer);
  scaler_.update();
  if (stepped && masters_) masters_->copy_master_to_model();
  if (optimizer) optimizer->zero_grad();
  if (masters_) masters_->zero_model_grads();
  return stepped;
}

std::map<std::string, Tensor> PrecisionStep::state_dict() const {
  std::map<std::string, Tensor> out = scaler_.state_dict();
  if (masters_)
    for (size_t i = 0; i < params_.size(); ++i)
      if (masters_->has_copy(i)) out["master." + std::to_string(i)] = masters_->master()[i].detach();
  return out;
}

void PrecisionStep::load_state_dict(const std::map<std::string, Tensor>& state) {
  std::map<std::string, Tensor> scaler_state;
  size_t masters_seen = 0;
  for (const auto& [key, t] : state) {
    if (key == "scale" || key == "growth_tracker") {
      scaler_state[key] = t;
      continue;
    }
    DGP_CHECK(masters_ && key.rfind("master.", 0) == 0, "precision state: unexpected key '"
                                                            << key << "' for --precision "
                                                            << precision_name(precision_));
    size_t i = 0;
    try {
      i = std::stoul(key.substr(7));
    } catch (const std::exception&) {
      DGP_FAIL("precision state: bad key '" << key << "'");
    }
    DGP_CHECK(i < params_.size() && masters_->has_copy(i),
              "precision state: '" << key << "' names no half-precision parameter (there are "
                                   << params_.size() << " parameters)");
    const Tensor& m = masters_->master()[i];
    DGP_CHECK(t.shape() == m.shape(), "precision state: '" << key << "' has shape " << shape_str(t.shape())
                                                           << ", the parameter " << shape_str(m.shape()));
    NoGradGuard ng;
    Tensor dst = m.detach();
    dst.copy_(t);
    ++masters_seen;
  }
  scaler_.load_state_dict(scaler_state);
  if (masters_) {
    size_t expected = 0;
    for (size_t i = 0; i < params_.size(); ++i) expected += masters_->has_copy(i) ? 1 : 0;
    DGP_CHECK(masters_seen == expected, "precision state: " << masters_seen << " master weights for "
                                                            << expected << " half-precision parameters");
    masters_->copy_master_to_model();
  }
}

}  // namespace dgpipe::engine::amp
