// What the optimizer tests (tests/engine/test_sgd.cpp, test_adamw.cpp) share: the golden problem of
// tests/data/optim.json (written by scripts/goldens_optim.py: parameters from "init", one gradient per
// parameter and step in "grads", null where a parameter gets none, and per optimizer the PyTorch parameters
// after every step), copies of parameters for resume tests, and the CUDA twin run of an optimizer.
#pragma once
#include <cmath>
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/ops.h"
#include "engine/optim/optimizer.h"

namespace dgpipe::testing {

// Fresh leaf parameters with the golden initial values.
inline std::vector<engine::Tensor> golden_params(const nlohmann::json& golden) {
  std::vector<engine::Tensor> params;
  for (size_t i = 0; i < golden["shapes"].size(); ++i) {
    engine::Tensor p = engine::from_vector(golden["init"][i].get<std::vector<double>>(),
                                           golden["shapes"][i].get<engine::Shape>());
    p.requires_grad_();
    params.push_back(p);
  }
  return params;
}

// The gradients of golden step `step` (a parameter without one gets its gradient cleared).
inline void set_golden_grads(const nlohmann::json& golden, std::vector<engine::Tensor>& params, size_t step) {
  for (size_t i = 0; i < params.size(); ++i) {
    const nlohmann::json& g = golden["grads"][step][i];
    if (g.is_null())
      params[i].zero_grad();
    else
      params[i].set_grad(engine::from_vector(g.get<std::vector<double>>(), params[i].shape()));
  }
}

// The parameters against PyTorch's after one step (`after` holds one list of values per parameter).
inline void expect_params_match(const std::vector<engine::Tensor>& params, const nlohmann::json& after,
                                const std::string& label) {
  for (size_t i = 0; i < params.size(); ++i) {
    std::vector<double> got = params[i].to_vector();
    std::vector<double> want = after[i].get<std::vector<double>>();
    ASSERT_EQ(got.size(), want.size());
    for (size_t k = 0; k < got.size(); ++k)
      EXPECT_NEAR(got[k], want[k], 1e-6 + 1e-6 * std::abs(want[k]))
          << label << " param " << i << " element " << k;
  }
}

// Steps `opt` (over `params`, fresh golden_params) through the golden gradients, checking the parameters
// after every step against PyTorch's under golden[which]["after"].
inline void replay_golden_steps(const nlohmann::json& golden, const std::string& which,
                                std::vector<engine::Tensor>& params, engine::Optimizer& opt) {
  const nlohmann::json& after = golden[which]["after"];
  for (size_t step = 0; step < golden["grads"].size(); ++step) {
    set_golden_grads(golden, params, step);
    opt.step();
    expect_params_match(params, after[step], which + ": step " + std::to_string(step));
  }
}

// New leaves with the values of `params` (a second optimizer to restore a saved state into).
inline std::vector<engine::Tensor> detached_copies(const std::vector<engine::Tensor>& params) {
  std::vector<engine::Tensor> copies;
  for (const engine::Tensor& p : params) {
    engine::Tensor q = p.detach().clone();
    q.requires_grad_();
    copies.push_back(q);
  }
  return copies;
}

// Three steps of random gradients through the optimizer on the CPU and its twin on cuda:0 from the same
// start: the parameters must agree. Returns the CUDA optimizer's state. Needs a CUDA device.
template <class Optim, class Options>
std::map<std::string, engine::Tensor> expect_cuda_steps_match_cpu(const Options& options, uint64_t seed) {
  using engine::Device;
  engine::Generator gen(seed);
  engine::Tensor init = engine::randn({1000}, engine::DType::f32, &gen);
  std::vector<engine::Tensor> grads;
  for (int s = 0; s < 3; ++s) grads.push_back(engine::randn({1000}, engine::DType::f32, &gen));
  engine::Tensor cpu = init.clone(), gpu = init.to(Device::cuda(0));
  cpu.requires_grad_();
  gpu.requires_grad_();
  Optim opt_cpu({cpu}, options), opt_gpu({gpu}, options);
  for (const engine::Tensor& g : grads) {
    cpu.set_grad(g);
    gpu.set_grad(g.to(Device::cuda(0)));
    opt_cpu.step();
    opt_gpu.step();
  }
  std::vector<double> a = cpu.to_vector(), b = gpu.to_vector();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6 + 1e-6 * std::abs(a[i])) << i;
  return opt_gpu.state_dict();
}

}  // namespace dgpipe::testing
