// Gradient clipping by global norm, with the semantics of torch.nn.utils.clip_grad_norm_.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace dgpipe::engine {

// Total norm of the gradients of params (norm_type 2, or infinity for the max-abs norm), computed as if all
// gradients were one vector. When max_norm / (total + 1e-6) < 1 every gradient is scaled by that factor.
// Parameters without a gradient are skipped. Returns the total norm before clipping (NaN/Inf when a gradient
// holds one; the gradients are then scaled by a NaN factor as in PyTorch, unless error_if_nonfinite).
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0,
                      bool error_if_nonfinite = false);

// Total norm of the gradients without changing them.
double grad_norm(const std::vector<Tensor>& params, double norm_type = 2.0);

// The scaling step of clip_grad_norm for a total norm computed elsewhere: a pipeline stage holds only part of
// the gradients, so the stages agree on the total first and each scales its own by the same factor.
void scale_grads_to_norm(const std::vector<Tensor>& params, double max_norm, double norm);

}  // namespace dgpipe::engine
