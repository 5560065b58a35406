// Dynamic loss scaling for mixed-precision training (the torch.cuda.amp.GradScaler policy).
//
// Half-precision gradients underflow when the loss is small, so the loss is multiplied by a large scale
// before backward and the gradients are divided by it before the optimizer step. When any gradient holds an
// Inf or NaN the step is skipped and the scale is cut (backoff); after growth_interval consecutive good steps
// it grows.
//
//   Tensor loss = ...;
//   scaler.scale(loss).backward();
//   scaler.unscale(optimizer);            // optional: needed before clip_grad_norm
//   scaler.agree(all_finite);             // pipelines: the verdict of every stage (optional)
//   bool stepped = scaler.step(optimizer); // skipped when a gradient is not finite
//   scaler.update();
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace dgpipe::engine {

class Optimizer;

struct LossScalerOptions {
  double init_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  bool enabled = true;  // disabled: scale 1, never skips (fp32 runs use the same code path)
};

class DynamicLossScaler {
 public:
  explicit DynamicLossScaler(const LossScalerOptions& options = {});

  // loss * scale (differentiable), in the loss's dtype.
  Tensor scale(const Tensor& loss) const;
  // Divides every gradient of the optimizer's parameters by the scale, once per step, and records whether any
  // is Inf/NaN. Returns true when all gradients are finite. Calling it twice before update() throws.
  bool unscale(Optimizer& optimizer);
  // The same over a list of parameters (an empty one: a pipeline stage without parameters, which still takes
  // part in every decision).
  bool unscale(const std::vector<Tensor>& params);
  // Takes the verdict of every scaler that shares this iteration (the stages of a pipeline, each unscaling
  // its own gradients): when all_finite is false, this one skips its step too, so no stage steps while
  // another skips. Call after unscale() and before step().
  void agree(bool all_finite);
  // Unscales (if not done yet) and runs optimizer.step() unless a gradient was not finite. Returns whether
  // the optimizer stepped.
  bool step(Optimizer& optimizer);
  // optimizer null: nothing to update, the iteration's bookkeeping only.
  bool step(Optimizer* optimizer);
  // Adjusts the scale from the outcome of this iteration and resets the per-iteration state. Must follow
  // step().
  void update();

  double scale_value() const { return scale_; }
  int64_t growth_tracker() const { return good_steps_; }
  bool enabled() const { return options_.enabled; }
  int64_t skipped_steps() const { return skipped_; }  // total over the run, for logs

  // {"scale": 0-d f64, "growth_tracker": 0-d i64} for checkpoints.
  std::map<std::string, Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, Tensor>& state);

 private:
  LossScalerOptions options_;
  double scale_;
  int64_t good_steps_ = 0;
  int64_t skipped_ = 0;
  // Per-iteration state, reset by update().
  bool unscaled_ = false;
  bool found_inf_ = false;
  bool stepped_or_skipped_ = false;
};

}  // namespace dgpipe::engine
