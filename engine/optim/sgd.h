// Stochastic gradient descent with momentum, dampening, Nesterov momentum and (coupled) weight decay,
// with the exact semantics of torch.optim.SGD:
//   g = grad + weight_decay * p
//   buf = g on the first update, else momentum * buf + (1 - dampening) * g
//   g = nesterov ? g + momentum * buf : buf        (when momentum != 0)
//   p -= lr * g
#pragma once
#include "engine/optim/optimizer.h"

namespace dgpipe::engine {

struct SGDOptions {
  double lr = 0.1;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, const SGDOptions& options);
  SGD(std::vector<ParamGroupSpec> groups, const SGDOptions& defaults);

 protected:
  void validate(const OptimizerHyper& h, size_t group) const override;
  void update(const OptimizerHyper& h, int64_t param_index, Tensor& param, const Tensor& grad,
              std::map<std::string, Tensor>& state) override;
  std::vector<std::string> state_names() const override { return {"momentum_buffer"}; }
};

}  // namespace dgpipe::engine
