// AdamW: hyper-parameter checks, lazily created moments, and dispatch of the fused per-parameter update.
#include "engine/optim/adamw.h"

#include "engine/ops/cpu_loops.h"
#include "engine/optim/optim_kernels.h"
#include "engine/parallel.h"

namespace dgpipe::engine {

namespace {
OptimizerHyper adamw_hyper(const AdamWOptions& o) {
  OptimizerHyper h;
  h.lr = o.lr;
  h.beta1 = o.beta1;
  h.beta2 = o.beta2;
  h.eps = o.eps;
  h.weight_decay = o.weight_decay;
  return h;
}
}  // namespace

AdamW::AdamW(std::vector<Tensor> params, const AdamWOptions& options)
    : AdamW(single_group(std::move(params)), options) {}

AdamW::AdamW(std::vector<ParamGroupSpec> groups, const AdamWOptions& defaults)
    : Optimizer("AdamW", std::move(groups), adamw_hyper(defaults)) {
  for (size_t g = 0; g < param_groups().size(); ++g) validate(param_groups()[g].hyper, g);
}

void AdamW::validate(const OptimizerHyper& h, size_t group) const {
  DGP_CHECK(h.lr >= 0.0, "AdamW: group " << group << ": invalid learning rate " << h.lr);
  DGP_CHECK(h.eps >= 0.0, "AdamW: group " << group << ": invalid eps " << h.eps);
  DGP_CHECK(h.beta1 >= 0.0 && h.beta1 < 1.0,
            "AdamW: group " << group << ": invalid beta1 " << h.beta1 << " (must be in [0, 1))");
  DGP_CHECK(h.beta2 >= 0.0 && h.beta2 < 1.0,
            "AdamW: group " << group << ": invalid beta2 " << h.beta2 << " (must be in [0, 1))");
  DGP_CHECK(h.weight_decay >= 0.0, "AdamW: group " << group << ": invalid weight_decay " << h.weight_decay);
}

void AdamW::update(const OptimizerHyper& h, int64_t param_index, Tensor& param, const Tensor& grad,
                   std::map<std::string, Tensor>& state) {
  check_update_inputs(param_index, param, grad);
  Tensor g = grad.contiguous();
  if (state.find("exp_avg") == state.end()) {
    state["exp_avg"] = zeros(param.shape(), TensorOptions(param.dtype(), param.device()));
    state["exp_avg_sq"] = zeros(param.shape(), TensorOptions(param.dtype(), param.device()));
    state["step"] = full({}, 0.0, DType::i64);
  }
  Tensor& exp_avg = state["exp_avg"];
  Tensor& exp_avg_sq = state["exp_avg_sq"];
  DGP_CHECK(state.count("step") == 1, "AdamW: parameter " << param_index << " has moments but no step count");
  // The per-parameter step count lives on the host (a 0-d CPU tensor) so the bias corrections need no sync.
  Tensor& step_tensor = state["step"];
  int64_t step = static_cast<int64_t>(step_tensor.item()) + 1;
  step_tensor = full({}, static_cast<double>(step), DType::i64);

  AdamWStepArgs args;
  args.lr = h.lr;
  args.weight_decay = h.weight_decay;
  args.beta1 = h.beta1;
  args.beta2 = h.beta2;
  args.eps = h.eps;
  args.step = step;
  if (param.is_cuda()) {
    cuda_kernels::adamw_step(param, g, exp_avg, exp_avg_sq, args);
    return;
  }
  DGP_DISPATCH_FLOATING(param.dtype(), "AdamW", [&] {
    scalar_t *p = param.data<scalar_t>(), *m = exp_avg.data<scalar_t>(), *v = exp_avg_sq.data<scalar_t>();
    const scalar_t* gp = g.data<scalar_t>();
    // Elements are independent: split over the threads.
    parallel_for(param.numel(), 1 << 15, [&](int64_t i0, int64_t i1) {
      adamw_step_cpu<scalar_t>(p + i0, gp + i0, m + i0, v + i0, i1 - i0, args);
    });
  });
}

}  // namespace dgpipe::engine
