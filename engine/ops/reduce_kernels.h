// Reduction kernels; CPU in reduce.cpp, CUDA in reduce.cu. Every reduction is brought to rows of a
// contiguous [outer, inner] view reduced over the last dim, except CUDA sums over dims that are not last (a
// bias gradient sums [rows, features] over rows), which read the input where it lies (sum_middle) instead of
// copying it transposed.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace dgpipe::engine {

// The dims of a contiguous tensor of `shape` merged into alternating groups of kept and reduced dims,
// outermost first (size-1 dims dropped): a sum over {0, 1} of [8, 16, 768] is {8*16 reduced, 768 kept}, over
// {0, 2, 3} of [N, C, H, W] is {N reduced, C kept, H*W reduced}. Empty when nothing is left.
struct ReduceGroup {
  int64_t size = 1;
  bool reduced = false;
};
inline std::vector<ReduceGroup> reduction_groups(const Shape& shape, const std::vector<bool>& reduced) {
  std::vector<ReduceGroup> groups;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!groups.empty() && groups.back().reduced == reduced[d])
      groups.back().size *= shape[d];
    else
      groups.push_back(ReduceGroup{shape[d], reduced[d]});
  }
  return groups;
}

}  // namespace dgpipe::engine

namespace dgpipe::engine::cuda_kernels {
void sum_lastdim(const Tensor& out, const Tensor& x2d);  // out [outer]
// out [outer, inner] = the sum over r of x [outer, reduce, inner] (contiguous); out contiguous.
void sum_middle(const Tensor& out, const Tensor& x, int64_t outer, int64_t reduce, int64_t inner);
void maxmin_lastdim(const Tensor& values, const Tensor& indices, const Tensor& x2d, bool is_max);
}  // namespace dgpipe::engine::cuda_kernels
