#include "support/cuda_twin.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "engine/cuda.h"
#include "support/gradcheck.h"

namespace dgpipe::testing {

using namespace dgpipe::engine;

Step prepare_step(const CudaTwinCase& c, const Inputs& inputs, Device device) {
  if (c.prepare) return c.prepare(inputs, device);
  OpFn op = c.op;
  return [op, inputs] { return op(inputs); };
}

std::string test_identifier(const std::string& case_name) {
  std::string name;
  for (char ch : case_name) {
    const bool keep = std::isalnum(static_cast<unsigned char>(ch));
    if (keep || (!name.empty() && name.back() != '_')) name += keep ? ch : '_';
  }
  while (!name.empty() && name.back() == '_') name.pop_back();
  return name;
}

Tensor uniform_input(const Shape& shape, uint64_t seed, double lo, double hi) {
  Generator g(seed);
  return add(mul(rand(shape, DType::f32, &g), hi - lo), lo);
}

TwinRun run_case(const CudaTwinCase& c, Device device) {
  // The math modes are pinned for the whole run, backward pass included (TF32 is on for convolutions by
  // default).
  cuda::MathModeGuard modes(c.tf32, c.tf32);
  const DType dtype = device.is_cpu() ? DType::f32 : c.dtype;
  Inputs xs;
  for (const Tensor& x : c.inputs) {
    Tensor t = x.detach();
    if (is_floating(t.dtype())) t = t.to(dtype);
    t = t.to(device).detach();
    if (c.backward && is_floating(t.dtype())) t.requires_grad_(true);
    xs.push_back(t);
  }
  Step step = prepare_step(c, xs, device);
  TwinRun r;
  for (int i = 0; i < c.steps; ++i) r.out = step();
  if (c.backward && is_floating(r.out.dtype())) {
    Tensor w = uniform_input(r.out.shape(), 99).to(r.out.dtype()).to(device);
    sum(mul(r.out, w)).backward();
    for (const Tensor& x : xs)
      r.grads.push_back(x.requires_grad() && x.grad().defined() ? x.grad().to(Device::cpu()).to(DType::f32)
                                                                : Tensor());
  }
  r.out = r.out.detach().to(Device::cpu());
  if (is_floating(r.out.dtype())) r.out = r.out.to(DType::f32);
  return r;
}

namespace {

// Number of elements that are NaN on one side only. The metrics compare numbers (max_rel_diff passes over a
// NaN), so a NaN the oracle does not have is counted on its own.
int64_t nan_mismatches(const Tensor& a, const Tensor& b) {
  const std::vector<double> va = a.to_vector(), vb = b.to_vector();
  int64_t n = 0;
  for (size_t i = 0; i < va.size() && i < vb.size(); ++i) n += std::isnan(va[i]) != std::isnan(vb[i]);
  return n;
}

}  // namespace

std::vector<std::string> compare_twins(const CudaTwinCase& c, const TwinRun& cpu, const TwinRun& cuda) {
  std::vector<std::string> problems;
  const Metric base = c.metric ? c.metric : Metric(max_rel_diff);
  auto metric = [&](const Tensor& a, const Tensor& b) {
    return nan_mismatches(a, b) > 0 ? INFINITY : base(a, b);
  };
  auto report = [&](const std::string& what, double dist, double tol) {
    std::ostringstream os;
    os << what << ": cuda is " << dist << " from the cpu oracle (inf: NaN where the oracle has none, or the"
       << " reverse), tolerance " << tol;
    problems.push_back(os.str());
  };
  if (cuda.out.shape() != cpu.out.shape()) {
    problems.push_back("output shape " + shape_str(cuda.out.shape()) + " on cuda, " +
                       shape_str(cpu.out.shape()) + " on cpu");
    return problems;
  }
  const double d = metric(cuda.out, cpu.out);
  if (!(d <= c.tol)) report("forward", d, c.tol);
  const double grad_tol = c.grad_tol >= 0 ? c.grad_tol : 4 * c.tol;
  for (size_t i = 0; i < cpu.grads.size(); ++i) {
    if (!cpu.grads[i].defined()) continue;
    if (i >= cuda.grads.size() || !cuda.grads[i].defined()) {
      problems.push_back("input " + std::to_string(i) + " got no gradient on cuda");
      continue;
    }
    const double g = metric(cuda.grads[i], cpu.grads[i]);
    if (!(g <= grad_tol)) report("gradient of input " + std::to_string(i), g, grad_tol);
  }
  return problems;
}

// ---- launcher coverage ----

std::set<std::string> launchers_in_header_text(const std::string& text) {
  // Launchers are the functions declared at the top level of a `namespace ...cuda_kernels {` block (one
  // declaration per line start, as clang-format writes them); everything else in the header is skipped.
  static const std::regex open(R"(^namespace\s+[\w:]*\bcuda_kernels\s*\{)");
  static const std::regex close(R"(^\}\s*//\s*namespace\s+[\w:]*\bcuda_kernels\b)");
  static const std::regex declaration(R"(^(?:[\w:<>]+[\s&*]+)+(\w+)\()");
  std::set<std::string> names;
  std::istringstream in(text);
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    if (std::regex_search(line, open)) {
      inside = true;
      continue;
    }
    if (std::regex_search(line, close)) {
      inside = false;
      continue;
    }
    std::smatch m;
    if (inside && line.rfind("//", 0) != 0 && line.rfind("constexpr", 0) != 0 &&
        std::regex_search(line, m, declaration))
      names.insert(m[1]);
  }
  return names;
}

std::set<std::string> declared_launchers(const std::string& folder) {
  namespace fs = std::filesystem;
  const char* root = std::getenv("DGPIPE_SOURCE_DIR");
  const fs::path dir = fs::path(root ? root : ".") / folder;
  DGP_CHECK(fs::is_directory(dir), "declared_launchers: no folder " << dir << " (set DGPIPE_SOURCE_DIR)");
  std::set<std::string> names;
  int headers = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    const std::string file = entry.path().filename().string();
    if (!entry.is_regular_file() || file.size() < 11 || file.substr(file.size() - 10) != "_kernels.h")
      continue;
    std::ifstream f(entry.path());
    std::stringstream text;
    text << f.rdbuf();
    for (const std::string& n : launchers_in_header_text(text.str())) names.insert(n);
    ++headers;
  }
  DGP_CHECK(headers > 0, "declared_launchers: no *_kernels.h header below " << dir);
  return names;
}

LauncherCoverage launcher_coverage(const std::set<std::string>& declared,
                                   const std::vector<CudaTwinCase>& cases) {
  std::set<std::string> named;
  for (const CudaTwinCase& c : cases) named.insert(c.launchers.begin(), c.launchers.end());
  LauncherCoverage cov;
  for (const std::string& d : declared)
    if (!named.count(d)) cov.without_case.push_back(d);
  for (const std::string& n : named)
    if (!declared.count(n)) cov.unknown.push_back(n);
  return cov;
}

}  // namespace dgpipe::testing
