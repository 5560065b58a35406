// AdamW (decoupled weight decay), with the exact semantics of torch.optim.AdamW:
//   p *= 1 - lr * weight_decay
//   m = beta1 * m + (1 - beta1) * g          v = beta2 * v + (1 - beta2) * g^2
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// where t counts the updates this parameter received (a parameter without a gradient keeps its t).
#pragma once
#include "engine/optim/optimizer.h"

namespace dgpipe::engine {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

class AdamW : public Optimizer {
 public:
  AdamW(std::vector<Tensor> params, const AdamWOptions& options);
  AdamW(std::vector<ParamGroupSpec> groups, const AdamWOptions& defaults);

 protected:
  void validate(const OptimizerHyper& h, size_t group) const override;
  void update(const OptimizerHyper& h, int64_t param_index, Tensor& param, const Tensor& grad,
              std::map<std::string, Tensor>& state) override;
  std::vector<std::string> state_names() const override { return {"exp_avg", "exp_avg_sq"}; }
};

}  // namespace dgpipe::engine
