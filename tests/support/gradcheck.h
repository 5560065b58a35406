// Finite-difference gradient checker shared by every op test (the Caffe idea, in double precision).
//
// gradcheck(f, inputs) projects the output on a fixed random direction w (loss = sum(f(x) * w)), computes the
// analytic gradient of every input that requires grad with backward(), and compares it with central
// differences (f(x + h e_i) - f(x - h e_i)) / 2h for every element i. Inputs should be f64 and small.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "engine/ops.h"

namespace dgpipe::testing {

using engine::Tensor;
// The inputs of a checked function, and the function as gradcheck takes it.
using Inputs = std::vector<Tensor>;
using Fn = std::function<Tensor(const Inputs&)>;

struct GradcheckOptions {
  double eps = 1e-6;   // finite-difference step
  double atol = 1e-5;  // |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-4;
  uint64_t seed = 1234;  // for the projection direction
};

// Returns an empty string on success, otherwise a description of the first mismatch.
std::string gradcheck(const Fn& f, const Inputs& inputs, GradcheckOptions opts = {});

// Random f64 leaf requiring grad, values in [lo, hi).
Tensor random_leaf(const engine::Shape& shape, double lo = -1.0, double hi = 1.0, uint64_t seed = 7);

// Max |a-b| / max(1, |b|) over all elements (shapes must match).
double max_rel_diff(const Tensor& a, const Tensor& b);

// True when a CUDA device is present; CUDA tests call DGP_SKIP_WITHOUT_CUDA() first, which skips with
// no_cuda_reason(): why there is none ("no NVIDIA driver on this machine", or the CUDA error of a driver that
// is present but unusable, which a GPU check must not count as a pass).
bool have_cuda();
std::string no_cuda_reason();

}  // namespace dgpipe::testing

#define DGP_SKIP_WITHOUT_CUDA()                                                               \
  do {                                                                                        \
    if (!::dgpipe::testing::have_cuda()) GTEST_SKIP() << ::dgpipe::testing::no_cuda_reason(); \
  } while (0)

#define EXPECT_GRADCHECK(f, inputs, ...)                                          \
  do {                                                                            \
    std::string dgp_gc_ = ::dgpipe::testing::gradcheck(f, inputs, ##__VA_ARGS__); \
    EXPECT_TRUE(dgp_gc_.empty()) << dgp_gc_;                                      \
  } while (0)
