// Dynamic loss scaling.
#include "engine/optim/loss_scaler.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/optim/optimizer.h"

namespace dgpipe::engine {

DynamicLossScaler::DynamicLossScaler(const LossScalerOptions& options)
    : options_(options), scale_(options.enabled ? options.init_scale : 1.0) {
  DGP_CHECK(options.init_scale > 0.0 && std::isfinite(options.init_scale),
            "DynamicLossScaler: init_scale " << options.init_scale << " must be positive and finite");
  DGP_CHECK(options.growth_factor > 1.0,
            "DynamicLossScaler: growth_factor " << options.growth_factor << " must be > 1");
  DGP_CHECK(options.backoff_factor > 0.0 && options.backoff_factor < 1.0,
            "DynamicLossScaler: backoff_factor " << options.backoff_factor << " must be in (0, 1)");
  DGP_CHECK(options.growth_interval > 0,
            "DynamicLossScaler: growth_interval " << options.growth_interval << " must be positive");
}

Tensor DynamicLossScaler::scale(const Tensor& loss) const {
  DGP_CHECK(loss.defined(), "DynamicLossScaler::scale: undefined loss");
  if (!options_.enabled) return loss;
  return mul(loss, scale_);
}

bool DynamicLossScaler::unscale(Optimizer& optimizer) {
  std::vector<Tensor> params;
  for (ParamGroup& group : optimizer.param_groups())
    for (Tensor& p : group.params) params.push_back(p);
  return unscale(params);
}

bool DynamicLossScaler::unscale(const std::vector<Tensor>& params) {
  if (!options_.enabled) return true;
  DGP_CHECK(!unscaled_, "DynamicLossScaler::unscale: already called since the last update()");
  DGP_CHECK(!stepped_or_skipped_, "DynamicLossScaler::unscale: called after step(); call update() first");
  NoGradGuard no_grad;
  // Multiply by the reciprocal computed in f32, as GradScaler does, so unscaled values match PyTorch bit for
  // bit.
  const double inv_scale = static_cast<double>(1.0f / static_cast<float>(scale_));
  // The finite check stays on the gradients' device and is read back once for all of them (not once per
  // gradient): g * 0 is 0 where g is finite and NaN where it is Inf or NaN, so the f32 sum of those sums over
  // every gradient is 0 exactly when all gradients are finite.
  Tensor poison;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    // Checked after the multiply: a gradient that is Inf/NaN now was Inf/NaN before, or overflowed when
    // unscaled (possible only once the scale fell below 1); either way the step must be skipped.
    mul_(g, inv_scale);
    Tensor marker = cast(sum(mul(g, 0.0)), DType::f32);
    if (poison.defined() && marker.device() != poison.device()) marker = marker.to(poison.device());
    poison = poison.defined() ? add(poison, marker) : marker;
  }
  const bool all_finite = !poison.defined() || poison.item() == 0.0;
  found_inf_ = !all_finite;
  unscaled_ = true;
  return all_finite;
}

void DynamicLossScaler::agree(bool all_finite) {
  if (!options_.enabled) return;
  DGP_CHECK(unscaled_, "DynamicLossScaler::agree: call unscale() first");
  DGP_CHECK(!stepped_or_skipped_, "DynamicLossScaler::agree: called after step(); call update() first");
  if (!all_finite) found_inf_ = true;
}

bool DynamicLossScaler::step(Optimizer& optimizer) {
  return step(&optimizer);
}

bool DynamicLossScaler::step(Optimizer* optimizer) {
  if (!options_.enabled) {
    if (optimizer) optimizer->step();
    return true;
  }
  DGP_CHECK(!stepped_or_skipped_, "DynamicLossScaler::step: called twice without update()");
  if (!unscaled_) {
    if (optimizer)
      unscale(*optimizer);
    else
      unscale(std::vector<Tensor>{});
  }
  stepped_or_skipped_ = true;
  if (found_inf_) {
    ++skipped_;
    return false;
  }
  if (optimizer) optimizer->step();
  return true;
}

void DynamicLossScaler::update() {
  if (!options_.enabled) return;
  DGP_CHECK(stepped_or_skipped_, "DynamicLossScaler::update: call step() first (no step this iteration)");
  if (found_inf_) {
    scale_ *= options_.backoff_factor;
    good_steps_ = 0;
  } else if (++good_steps_ == options_.growth_interval) {
    scale_ *= options_.growth_factor;
    good_steps_ = 0;
  }
  unscaled_ = false;
  found_inf_ = false;
  stepped_or_skipped_ = false;
}

std::map<std::string, Tensor> DynamicLossScaler::state_dict() const {
  return {{"scale", full({}, scale_, DType::f64)},
          {"growth_tracker", full({}, static_cast<double>(good_steps_), DType::i64)}};
}

void DynamicLossScaler::load_state_dict(const std::map<std::string, Tensor>& state) {
  auto s = state.find("scale");
  auto g = state.find("growth_tracker");
  DGP_CHECK(s != state.end() && g != state.end(),
            "DynamicLossScaler::load_state_dict: needs keys 'scale' and 'growth_tracker'");
  DGP_CHECK(s->second.numel() == 1 && g->second.numel() == 1,
            "DynamicLossScaler::load_state_dict: 'scale' and 'growth_tracker' must be one-element tensors");
  double scale = s->second.item();
  DGP_CHECK(scale > 0.0 && std::isfinite(scale),
            "DynamicLossScaler::load_state_dict: invalid scale " << scale);
  scale_ = scale;
  good_steps_ = static_cast<int64_t>(g->second.item());
}

}  // namespace dgpipe::engine
