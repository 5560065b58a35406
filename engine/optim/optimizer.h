// Optimizer base: parameter groups with their own hyper-parameters, step/zero_grad/set_lr, and export/import
// of the optimizer state as a flat map of tensors (what a safetensors checkpoint stores).
//
// State keys (param index i counts parameters over all groups, in group order):
//   "step"                       0-d i64, number of step() calls
//   "state.<i>.<name>"           per-parameter buffers, e.g. momentum_buffer, exp_avg, exp_avg_sq
//   "state.<i>.step"             0-d i64, updates this parameter received (AdamW bias corrections)
//   "param_groups.<g>.lr" / ".weight_decay"   0-d f64, so a resumed run sees the same hyper-parameters
#pragma once
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace dgpipe::engine {

// Hyper-parameters of one parameter group. SGD reads lr, weight_decay, momentum, dampening, nesterov;
// AdamW reads lr, weight_decay, beta1, beta2, eps.
struct OptimizerHyper {
  double lr = 1e-3;
  double weight_decay = 0.0;
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

// What a caller passes: parameters plus optional per-group overrides of the optimizer's defaults
// (the PyTorch param_groups idea).
struct ParamGroupSpec {
  std::vector<Tensor> params;
  std::optional<double> lr, weight_decay, momentum, dampening, beta1, beta2, eps;
  std::optional<bool> nesterov;
};

// One group holding all of params, with no overrides.
inline std::vector<ParamGroupSpec> single_group(std::vector<Tensor> params) {
  ParamGroupSpec spec;
  spec.params = std::move(params);
  return {std::move(spec)};
}

// A resolved group, as the optimizer holds it.
struct ParamGroup {
  std::vector<Tensor> params;
  OptimizerHyper hyper;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Updates every parameter that has a gradient (others are skipped and keep their state), under NoGradGuard.
  void step();
  // Drops the gradients (set to none, PyTorch's default), so the next backward starts from nothing.
  void zero_grad();
  // Sets the learning rate of every group (what a schedule calls each iteration).
  void set_lr(double lr);
  double lr(size_t group = 0) const;

  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  int64_t num_params() const;
  int64_t step_count() const { return steps_; }
  const char* name() const { return name_; }

  // Optimizer state as tensors (copies are not made: the map shares the live buffers).
  std::map<std::string, Tensor> state_dict() const;
  // Restores a state_dict() of an optimizer of the same kind over parameters of the same shapes. Buffers are
  // copied into tensors on each parameter's device. Unknown keys, bad indices and shape mismatches throw.
  void load_state_dict(const std::map<std::string, Tensor>& state);

 protected:
  Optimizer(const char* name, std::vector<ParamGroupSpec> groups, const OptimizerHyper& defaults);

  // Checks a group's hyper-parameters (throws naming the optimizer and the group).
  virtual void validate(const OptimizerHyper& h, size_t group) const = 0;
  // Updates one parameter. `state` holds this parameter's buffers (created here on first use).
  virtual void update(const OptimizerHyper& h, int64_t param_index, Tensor& param, const Tensor& grad,
                      std::map<std::string, Tensor>& state) = 0;
  // Names of the per-parameter tensors this optimizer keeps (for load_state_dict validation).
  virtual std::vector<std::string> state_names() const = 0;

  // Checks that a parameter/gradient pair can be updated by the raw kernels (same dtype/device/shape,
  // contiguous, f32/f64) and throws naming the optimizer and the parameter index otherwise.
  void check_update_inputs(int64_t param_index, const Tensor& param, const Tensor& grad) const;

 private:
  const char* name_;
  std::vector<ParamGroup> groups_;
  std::vector<std::map<std::string, Tensor>> state_;  // one per parameter, global index
  int64_t steps_ = 0;
};

// Splits named parameters into two groups: {decayed with weight_decay} and {no decay: weight_decay 0}.
// A parameter goes to the no-decay group when no_decay(name, param) is true; the default predicate
// (default_no_decay) picks 1-D parameters (biases, norm scales) and names containing "bias", "norm",
// "LayerNorm" or "bn". Empty groups are omitted.
bool default_no_decay(const std::string& name, const Tensor& param);
std::vector<ParamGroupSpec> param_groups_no_decay(
    const std::vector<std::pair<std::string, Tensor>>& named_params, double weight_decay,
    const std::function<bool(const std::string&, const Tensor&)>& no_decay = default_no_decay);

}  // namespace dgpipe::engine
