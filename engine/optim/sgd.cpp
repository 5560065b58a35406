// SGD: hyper-parameter checks and dispatch of the per-parameter update to the CPU loop or the CUDA kernel.
#include "engine/optim/sgd.h"

#include "engine/ops/cpu_loops.h"
#include "engine/optim/optim_kernels.h"
#include "engine/parallel.h"

namespace dgpipe::engine {

namespace {
OptimizerHyper sgd_hyper(const SGDOptions& o) {
  OptimizerHyper h;
  h.lr = o.lr;
  h.momentum = o.momentum;
  h.dampening = o.dampening;
  h.weight_decay = o.weight_decay;
  h.nesterov = o.nesterov;
  return h;
}
}  // namespace

SGD::SGD(std::vector<Tensor> params, const SGDOptions& options)
    : SGD(single_group(std::move(params)), options) {}

SGD::SGD(std::vector<ParamGroupSpec> groups, const SGDOptions& defaults)
    : Optimizer("SGD", std::move(groups), sgd_hyper(defaults)) {
  for (size_t g = 0; g < param_groups().size(); ++g) validate(param_groups()[g].hyper, g);
}

void SGD::validate(const OptimizerHyper& h, size_t group) const {
  DGP_CHECK(h.lr >= 0.0, "SGD: group " << group << ": invalid learning rate " << h.lr);
  DGP_CHECK(h.momentum >= 0.0, "SGD: group " << group << ": invalid momentum " << h.momentum);
  DGP_CHECK(h.weight_decay >= 0.0, "SGD: group " << group << ": invalid weight_decay " << h.weight_decay);
  DGP_CHECK(!h.nesterov || (h.momentum > 0.0 && h.dampening == 0.0),
            "SGD: group " << group << ": Nesterov momentum needs momentum > 0 and dampening 0 (momentum "
                          << h.momentum << ", dampening " << h.dampening << ")");
}

void SGD::update(const OptimizerHyper& h, int64_t param_index, Tensor& param, const Tensor& grad,
                 std::map<std::string, Tensor>& state) {
  check_update_inputs(param_index, param, grad);
  Tensor g = grad.contiguous();
  SGDStepArgs args;
  args.lr = h.lr;
  args.weight_decay = h.weight_decay;
  args.momentum = h.momentum;
  args.dampening = h.dampening;
  args.nesterov = h.nesterov;
  Tensor buffer;
  if (h.momentum != 0.0) {
    auto it = state.find("momentum_buffer");
    args.first_step = it == state.end();
    if (args.first_step) {
      buffer = empty(param.shape(), TensorOptions(param.dtype(), param.device()));
      state["momentum_buffer"] = buffer;
    } else {
      buffer = it->second;
    }
  }
  if (param.is_cuda()) {
    cuda_kernels::sgd_step(param, g, buffer, args);
    return;
  }
  DGP_DISPATCH_FLOATING(param.dtype(), "SGD", [&] {
    scalar_t* p = param.data<scalar_t>();
    const scalar_t* gp = g.data<scalar_t>();
    scalar_t* b = buffer.defined() ? buffer.data<scalar_t>() : nullptr;
    // Elements are independent: split over the threads.
    parallel_for(param.numel(), 1 << 15, [&](int64_t i0, int64_t i1) {
      sgd_step_cpu<scalar_t>(p + i0, gp + i0, b != nullptr ? b + i0 : nullptr, i1 - i0, args);
    });
  });
}

}  // namespace dgpipe::engine
