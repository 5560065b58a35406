// CUDA launchers of the 2-D convolution (engine/ops/conv.cu, backed by cuDNN). The CPU twins live in
// conv.cpp. All tensors are contiguous NCHW on one CUDA device and share a floating dtype; outputs are
// allocated by the caller (conv.cpp) with the shapes it has already checked, so a launcher only has to fill
// them.
#pragma once
#include <string>
#include <vector>

#include "engine/ops.h"

namespace dgpipe::engine {

// How the CUDA convolution settles on an algorithm for a shape (host-side policy, tested without a device):
// cuDNN's heuristics rank the candidates; they are tried in that order until one runs (cuDNN may refuse a
// candidate at run time, or its workspace may not fit in memory), and the one that ran is cached. `attempt`
// returns "" when the candidate ran, else why not; the reasons of the failed ones are appended to
// `failures`. Returns the position of the candidate that ran, or -1 when none did.
template <class Candidate, class Attempt>
int try_in_order(const std::vector<Candidate>& candidates, Attempt&& attempt, std::string& failures) {
  for (size_t i = 0; i < candidates.size(); ++i) {
    const std::string why = attempt(candidates[i]);
    if (why.empty()) return static_cast<int>(i);
    failures += (failures.empty() ? "" : "; ") + why;
  }
  return -1;
}

}  // namespace dgpipe::engine

namespace dgpipe::engine::cuda_kernels {

// out [N,O,Ho,Wo] = conv(input [N,C,H,W], weight [O,C/groups,kh,kw]) + bias [O] (bias may be undefined).
void conv2d_forward(const Tensor& out, const Tensor& input, const Tensor& weight, const Tensor& bias,
                    const Conv2dParams& p);
// grad_input [N,C,H,W] = the transposed convolution of grad_out with weight (overwritten, not accumulated).
void conv2d_backward_data(const Tensor& grad_input, const Tensor& grad_out, const Tensor& weight,
                          const Conv2dParams& p);
// grad_weight [O,C/groups,kh,kw] from grad_out and the forward input (overwritten).
void conv2d_backward_filter(const Tensor& grad_weight, const Tensor& grad_out, const Tensor& input,
                            const Conv2dParams& p);
// grad_bias [O] = sum of grad_out over N, Ho, Wo (overwritten).
void conv2d_backward_bias(const Tensor& grad_bias, const Tensor& grad_out);

}  // namespace dgpipe::engine::cuda_kernels
