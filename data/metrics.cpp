#include "data/metrics.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "engine/error.h"

namespace dgpipe::data {
namespace {

void check_pair(const char* metric, const std::vector<int64_t>& predictions,
                const std::vector<int64_t>& labels) {
  DGP_CHECK(predictions.size() == labels.size(),
            metric << ": " << predictions.size() << " predictions for " << labels.size() << " labels");
  DGP_CHECK(!labels.empty(), metric << ": no examples");
}

}  // namespace

double accuracy(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels) {
  check_pair("accuracy", predictions, labels);
  size_t correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) correct += predictions[i] == labels[i];
  return static_cast<double>(correct) / static_cast<double>(labels.size());
}

double matthews_corrcoef(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels) {
  check_pair("matthews_corrcoef", predictions, labels);
  // From the confusion matrix: c = correct, s = total, t_k = true count of class k, p_k = predicted count.
  std::map<int64_t, double> true_count, pred_count;
  double correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    true_count[labels[i]] += 1;
    pred_count[predictions[i]] += 1;
    correct += predictions[i] == labels[i];
  }
  const double s = static_cast<double>(labels.size());
  double tp_sum = 0, pp_sum = 0, tt_sum = 0;
  for (const auto& [k, t] : true_count) {
    auto it = pred_count.find(k);
    tp_sum += t * (it == pred_count.end() ? 0.0 : it->second);
    tt_sum += t * t;
  }
  for (const auto& [k, p] : pred_count) pp_sum += p * p;
  const double cov_tp = correct * s - tp_sum, cov_pp = s * s - pp_sum, cov_tt = s * s - tt_sum;
  const double denom = std::sqrt(cov_tt * cov_pp);
  return denom == 0.0 ? 0.0 : cov_tp / denom;
}

double f1_score(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels,
                int64_t positive) {
  check_pair("f1_score", predictions, labels);
  double tp = 0, fp = 0, fn = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    const bool p = predictions[i] == positive, t = labels[i] == positive;
    tp += p && t;
    fp += p && !t;
    fn += !p && t;
  }
  const double denom = 2 * tp + fp + fn;
  return denom == 0.0 ? 0.0 : 2 * tp / denom;
}

std::vector<int64_t> argmax_rows(const engine::Tensor& scores) {
  DGP_CHECK(scores.dim() == 2,
            "argmax_rows: expected [N, C] scores, got " << engine::shape_str(scores.shape()));
  const std::vector<double> values = scores.to_vector();
  const int64_t n = scores.size(0), c = scores.size(1);
  DGP_CHECK(c > 0, "argmax_rows: no classes in " << engine::shape_str(scores.shape()));
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const auto row = values.begin() + i * c;
    out[static_cast<size_t>(i)] = std::max_element(row, row + c) - row;
  }
  return out;
}

}  // namespace dgpipe::data
