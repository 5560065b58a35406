// Mixed precision: the precisions a run can train in, the autocast policy, fp32 master weights, and the
// optimizer step that ties them to dynamic loss scaling (DynamicLossScaler, engine/optim/loss_scaler.h).
//
// Policy (as PyTorch's autocast): GEMM-like ops (matmul, bmm, linear, conv2d) run in the low-precision dtype
// (f16 or bf16: tensor cores); softmax/log_softmax, layer norm, reductions and losses run in fp32; everything
// else keeps its inputs' dtype. Parameters stay fp32 (the master copy): a layer casts them with autocast() at
// use, and the cast's backward returns an fp32 gradient, so the optimizer only ever sees fp32.
//
//   amp::AutocastGuard ac(true, DType::f16);
//   Tensor y = linear(amp::autocast(x, "linear"), amp::autocast(w, "linear"), amp::autocast(b, "linear"));
//   Tensor p = softmax(amp::autocast(y, "softmax"), -1);   // back to fp32
//
// On the CPU the same policy runs as the GPU's twin: half tensors are stored as half, every op computes them
// in f32 and rounds its output to the half type, so casts, master weights, loss scaling and skipped steps are
// exercised without a device.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/optim/loss_scaler.h"
#include "engine/tensor.h"

namespace dgpipe::engine {
class Optimizer;
}

namespace dgpipe::engine::amp {

// The --precision choices.
//   fp32        everything in f32.
//   mixed       autocast with f16 compute, fp32 parameters, dynamic loss scaling.
//   mixed_bf16  autocast with bf16 compute, fp32 parameters, no loss scaling (bf16 has fp32's range).
//   fp16, bf16  parameters and activations stored in half precision, fp32 master copies in the optimizer;
//               normalisation layers keep fp32 parameters (batch norm also its running statistics) and
//               compute in fp32. fp16 uses dynamic loss scaling.
enum class Precision { fp32, fp16, bf16, mixed, mixed_bf16 };
Precision parse_precision(const std::string& text);  // "fp32", "fp16", "bf16", "mixed" (= "mixed-fp16"),
                                                     // "mixed-bf16"
const char* precision_name(Precision p);
// The dtype GEMMs run in under p (f32, f16 or bf16).
DType compute_dtype(Precision p);
// The dtype model parameters (other than normalisation layers') are stored in: half for fp16/bf16, else f32.
DType storage_dtype(Precision p);
bool uses_autocast(Precision p);
bool uses_master_weights(Precision p);  // fp16 and bf16
bool needs_loss_scaling(Precision p);   // fp16 and mixed (f16 underflows); the bf16 variants do not

enum class CastPolicy {
  lower_precision,  // run in the autocast dtype
  fp32,             // run in f32
  keep,             // leave inputs alone
};
// Policy of an op by its engine name ("matmul", "linear", "conv2d", "softmax", "layer_norm", ...).
CastPolicy policy_for(const std::string& op);

// Autocast state of the calling thread (a pipeline stage sets it on its own worker thread).
bool autocast_enabled();
DType autocast_dtype();

class AutocastGuard {
 public:
  explicit AutocastGuard(bool enabled, DType dtype = DType::f16);
  // The autocast state precision p asks for (off for fp32, fp16 and bf16).
  explicit AutocastGuard(Precision p);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool prev_enabled_;
  DType prev_dtype_;
};

// t converted to the dtype op should run in under the current autocast state: unchanged when autocast is off,
// t is undefined or not floating, the policy is keep, or t already has that dtype. Differentiable.
Tensor autocast(const Tensor& t, const std::string& op);
std::vector<Tensor> autocast(const std::vector<Tensor>& ts, const std::string& op);

// Both operands in the wider of their floating dtypes (f16 or bf16 with f32 -> f32, f16 with bf16 -> f32), so
// that an elementwise op can combine a half and an f32 tensor (a residual add under autocast).
// Differentiable; the pair is returned unchanged when the dtypes agree or one is not floating.
std::pair<Tensor, Tensor> promote(const Tensor& a, const Tensor& b);

// fp32 master copies of half-precision parameters (Precision::fp16 / bf16). A parameter that already is f32
// (a normalisation layer's) is its own master: no copy is made. The optimizer is built over master(); after
// backward, copy_grads_to_master() moves the half gradients into the masters' .grad (as f32), and after the
// optimizer step, copy_master_to_model() rounds the updated values back into the model.
class MasterWeights {
 public:
  // initial_values[i], when given, is what the master of parameter i starts from: the fp32 value the half
  // parameter was rounded from (a pretrained weight keeps its digits); default: the parameter's own value.
  explicit MasterWeights(std::vector<Tensor> model_params, const std::vector<Tensor>& initial_values = {});
  const std::vector<Tensor>& master() const { return master_; }
  const std::vector<Tensor>& model() const { return model_; }
  // Whether parameter i has a master copy of its own (it is half) or is its own master (f32).
  bool has_copy(size_t i) const { return !master_[i].same(model_[i]); }
  void copy_grads_to_master();
  void copy_master_to_model();
  // Drops the gradients of the model's half parameters (the masters' are the optimizer's to drop).
  void zero_model_grads();

 private:
  std::vector<Tensor> model_;
  std::vector<Tensor> master_;
};

// The optimizer step of one set of parameters (a pipeline stage's) under a precision: fp32 master weights for
// fp16/bf16, dynamic loss scaling for fp16 and mixed; fp32 goes through the same calls as a plain step.
//
//   PrecisionStep ps(precision, params, scaler_options);
//   auto opt = make_optimizer(ps.optimizer_params());
//   ... backward of ps.scale_loss(loss) (every gradient, also those crossing stages, is scaled) ...
//   bool finite = ps.unscale(opt.get());         // this stage's verdict
//   bool all_finite = agree(finite);             // every stage of the step must take the same decision
//   bool stepped = ps.step(opt.get(), all_finite);
//
// The optimizer may be null (a stage without parameters): the stage still scales its loss and follows the
// scale, so that its scale never drifts from the other stages'.
//
// A skipped step changes no parameter and no optimizer state, cuts the scale by the backoff factor and
// still drops the gradients, so the next step starts clean.
class PrecisionStep {
 public:
  // initial_values: see MasterWeights (fp16/bf16 only).
  PrecisionStep(Precision precision, std::vector<Tensor> params, const LossScalerOptions& scaler = {},
                const std::vector<Tensor>& initial_values = {});
  Precision precision() const { return precision_; }
  // The tensors the optimizer updates: the fp32 masters (fp16/bf16), else the parameters themselves.
  const std::vector<Tensor>& optimizer_params() const;
  // The model parameter that optimizer_params()[i] stands for.
  const std::vector<Tensor>& model_params() const { return params_; }
  // loss * scale, in f32 (a half loss would overflow once scaled). Differentiable.
  Tensor scale_loss(const Tensor& loss) const;
  double loss_scale() const { return scaler_.scale_value(); }
  const DynamicLossScaler& scaler() const { return scaler_; }
  // Moves half gradients into the masters and divides the optimizer's gradients by the scale. Returns
  // whether every one of them is finite.
  bool unscale(Optimizer* optimizer);
  // Steps the optimizer unless all_finite is false (a gradient here or at another stage was not finite),
  // rounds the masters back into the model, updates the scale and drops every gradient. Returns whether
  // the optimizer stepped. unscale() must come first.
  bool step(Optimizer* optimizer, bool all_finite);

  // {"scale", "growth_tracker", "master.<i>" for every parameter with a master copy} for checkpoints.
  std::map<std::string, Tensor> state_dict() const;
  // Restores a state_dict() of the same precision over parameters of the same shapes and rounds the masters
  // into the model.
  void load_state_dict(const std::map<std::string, Tensor>& state);

 private:
  Precision precision_;
  std::vector<Tensor> params_;
  std::unique_ptr<MasterWeights> masters_;  // fp16 / bf16 only
  DynamicLossScaler scaler_;
  bool unscaled_ = false;
};

}  // namespace dgpipe::engine::amp
