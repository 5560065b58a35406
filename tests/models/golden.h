// Shared by the model tests: paths to tests/data, golden loading, and PyTorch-parity checks.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "engine/io/safetensors.h"
#include "models/model.h"

namespace dgpipe::testing {

inline std::string source_path(const std::string& rel) {
  const char* root = std::getenv("DGPIPE_SOURCE_DIR");
  return (root ? std::string(root) + "/" : std::string()) + rel;
}

// max |a - ref| / max |ref|: the error relative to the tensor's scale (so tiny entries do not dominate).
inline double scaled_error(const engine::Tensor& a, const engine::Tensor& ref) {
  EXPECT_EQ(a.shape(), ref.shape());
  if (a.shape() != ref.shape()) return 1e30;
  std::vector<double> x = a.to_vector(), y = ref.to_vector();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::abs(x[i] - y[i]));
    scale = std::max(scale, std::abs(y[i]));
  }
  return diff / std::max(scale, 1e-12);
}

struct ParityTolerance {
  double logits = 1e-4, loss = 1e-4, grads = 1e-3, buffers = 1e-4;
};

// Loads `weights` into model, runs one train-mode forward/backward and an eval-mode forward on `device`, and
// compares logits, loss, every parameter gradient, the buffers after the step and the eval logits with the
// PyTorch golden (see scripts/goldens_models.py).
inline void expect_matches_golden(models::Model& model, const std::string& weights,
                                  const std::string& golden_path, engine::Device device,
                                  ParityTolerance tol = {}) {
  models::load_checkpoint(model, weights, /*strict=*/true);
  model.to(device);
  engine::SafetensorsFile golden = engine::load_safetensors(golden_path);
  auto g = [&](const std::string& key) {
    auto it = golden.tensors.find(key);
    EXPECT_TRUE(it != golden.tensors.end()) << golden_path << " lacks '" << key << "'";
    return it == golden.tensors.end() ? engine::Tensor() : it->second;
  };
  engine::Tensor input = g("input").to(device), target = g("target").to(device);
  model.train();
  model.zero_grad();
  layers::BlockContext ctx = model.make_context(input);
  engine::Tensor logits = model.forward(input, ctx);
  engine::Tensor loss = model.loss(logits, target);
  loss.backward();
  EXPECT_LT(scaled_error(logits, g("logits")), tol.logits) << "train logits";
  EXPECT_LT(scaled_error(loss.reshape({1}), g("loss")), tol.loss) << "loss " << loss.item();
  // Some gradients are analytically zero: the bias of a conv (or of a BN) whose output feeds a batch norm
  // through only linear maps, since BN removes any per-channel shift. PyTorch then holds float noise (~1e-8
  // of the largest gradient); comparing noise with noise relatively is meaningless, so there both must be
  // tiny.
  double grad_scale = 0;
  for (auto& [k, t] : golden.tensors)
    if (k.rfind("grad/", 0) == 0) grad_scale = std::max(grad_scale, engine::max(engine::abs(t)).item());
  size_t grads = 0;
  for (auto& [name, p] : model.named_parameters()) {
    engine::Tensor ref = g("grad/" + name);
    ASSERT_TRUE(p.grad().defined()) << "no gradient reached " << name;
    double ref_max = engine::max(engine::abs(ref)).item();
    if (ref_max < 1e-6 * grad_scale)
      EXPECT_LT(engine::max(engine::abs(p.grad())).item(), 1e-5 * grad_scale)
          << "gradient of " << name << " should be ~0";
    else
      EXPECT_LT(scaled_error(p.grad(), ref), tol.grads) << "gradient of " << name;
    ++grads;
  }
  size_t golden_grads = 0;
  for (auto& [k, t] : golden.tensors) golden_grads += k.rfind("grad/", 0) == 0;
  EXPECT_EQ(grads, golden_grads) << "the model and PyTorch have different parameter sets";
  for (auto& [name, b] : model.named_buffers()) {
    engine::Tensor ref = g("after/" + name);
    if (name.size() > 19 && name.compare(name.size() - 19, 19, "num_batches_tracked") == 0)
      EXPECT_EQ(b.item(), ref.item()) << name;
    else
      EXPECT_LT(scaled_error(b, ref), tol.buffers) << "buffer " << name << " after the train step";
  }
  model.eval();
  engine::NoGradGuard no_grad;
  engine::Tensor eval_logits = model.forward(input, model.make_context(input));
  EXPECT_LT(scaled_error(eval_logits, g("eval_logits")), tol.logits) << "eval logits";
}

// The "## <title> params=N entries=M" section of tests/data/models/param_names.txt as (name, shape) lines.
struct NameList {
  int64_t params = -1;
  std::vector<std::string> lines;
};
inline NameList read_name_list(const std::string& title) {
  std::ifstream in(source_path("tests/data/models/param_names.txt"));
  EXPECT_TRUE(in.good()) << "cannot open tests/data/models/param_names.txt";
  NameList out;
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    if (line.rfind("## ", 0) == 0) {
      inside = line.rfind("## " + title + " params=", 0) == 0;
      if (inside) out.params = std::stoll(line.substr(line.find("params=") + 7));
      continue;
    }
    if (inside && !line.empty() && line[0] != '#') out.lines.push_back(line);
  }
  EXPECT_GE(out.params, 0) << "no section '" << title << "' in param_names.txt";
  return out;
}

inline std::vector<std::string> model_name_list(const models::Model& model) {
  std::vector<std::string> out;
  for (auto& [n, t] : model.state_dict()) {
    std::ostringstream os;
    os << n << " ";
    for (int64_t d = 0; d < t.dim(); ++d) os << (d ? "," : "") << t.size(d);
    out.push_back(os.str());
  }
  return out;
}

// The model's parameter count and its state_dict names and shapes, in order, against section `title` of
// tests/data/models/param_names.txt (what PyTorch / Hugging Face build).
inline void expect_matches_name_list(const models::Model& model, const std::string& title) {
  NameList ref = read_name_list(title);
  EXPECT_EQ(model.num_parameters(), ref.params) << title;
  EXPECT_EQ(model_name_list(model), ref.lines) << title;
}

}  // namespace dgpipe::testing
