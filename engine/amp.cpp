#include "engine/amp.h"

#include <unordered_map>

#include "engine/autograd.h"
#include "engine/ops.h"

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

bool uses_autocast(Precision p) {
  return p == Precision::mixed || p == Precision::mixed_bf16;
}
bool needs_loss_scaling(Precision p) {
  return p == Precision::fp16 || p == Precision::mixed;
}

CastPolicy policy_for(const std::string& op) {
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
      {"batch_norm2d", CastPolicy::fp32},
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

MasterWeights::MasterWeights(std::vector<Tensor> model_params) : model_(std::move(model_params)) {
  NoGradGuard ng;
  for (size_t i = 0; i < model_.size(); ++i) {
    const Tensor& p = model_[i];
    DGP_CHECK(p.defined() && is_floating(p.dtype()), "MasterWeights: parameter " << i << " is not floating");
    Tensor m = p.detach().to(DType::f32).clone().detach();
    m.requires_grad_(true);
    master_.push_back(m);
  }
}

void MasterWeights::copy_grads_to_master() {
  NoGradGuard ng;
  for (size_t i = 0; i < model_.size(); ++i) {
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
    Tensor dst = model_[i].detach();
    dst.copy_(master_[i].detach());
  }
}

}  // namespace dgpipe::engine::amp
