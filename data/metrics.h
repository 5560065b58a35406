// Classification metrics of the GLUE and CIFAR evaluations: accuracy, Matthews correlation (CoLA), F1 (MRPC).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace dgpipe::data {

double accuracy(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels);
// Matthews correlation coefficient; the multi-class generalisation (Gorodkin's R_K, as scikit-learn computes
// it) equals the usual binary formula for two classes. 0 when undefined (a constant prediction or label
// column).
double matthews_corrcoef(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels);
// Binary F1 of the `positive` class: 2 TP / (2 TP + FP + FN); 0 when there is no positive prediction or
// label.
double f1_score(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels,
                int64_t positive = 1);
// Arg-max over the last dimension of a [N, C] tensor of scores (any float dtype, any device).
std::vector<int64_t> argmax_rows(const engine::Tensor& scores);

}  // namespace dgpipe::data
