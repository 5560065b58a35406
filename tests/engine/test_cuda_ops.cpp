// Every CUDA launcher of the engine against its CPU twin: one test per row of the table in
// tests/support/cuda_op_cases.cpp (forward values and the gradients of every floating input; odd sizes,
// broadcasts, non-contiguous views, f16/bf16 against the f32 oracle). Without a device the CPU half of every
// row still runs (so the table's shapes and ops are checked in CI) and the CUDA half reports itself skipped.
// A coverage check fails when a launcher declared in an engine/**/*_kernels.h header has no row naming it.
#include <gtest/gtest.h>

#include <cmath>

#include "support/cuda_op_cases.h"
#include "support/gradcheck.h"

using namespace dgpipe::engine;
using namespace dgpipe::testing;

namespace {

std::string test_name(const ::testing::TestParamInfo<size_t>& info) {
  return test_identifier(engine_cuda_cases()[info.param].name);
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

}  // namespace

class CudaOpTwin : public ::testing::TestWithParam<size_t> {};

TEST_P(CudaOpTwin, MatchesTheCpuOracle) {
  const CudaTwinCase& c = engine_cuda_cases()[GetParam()];
  const TwinRun cpu = run_case(c, Device::cpu());
  ASSERT_TRUE(cpu.out.defined()) << c.name << ": the op returned no tensor";
  if (!have_cuda()) GTEST_SKIP() << no_cuda_reason() << ": the CPU half ran, the CUDA half is skipped";
  const TwinRun cuda = run_case(c, Device::cuda(0));
  for (const std::string& problem : compare_twins(c, cpu, cuda)) ADD_FAILURE() << c.name << ": " << problem;
}

INSTANTIATE_TEST_SUITE_P(Table, CudaOpTwin, ::testing::Range<size_t>(0, engine_cuda_cases().size()),
                         test_name);

TEST(CudaOpCases, EveryEngineLauncherHasACase) {
  const std::set<std::string> declared = declared_launchers("engine");
  const LauncherCoverage cov = launcher_coverage(declared, engine_cuda_cases());
  EXPECT_TRUE(cov.without_case.empty())
      << "CUDA launchers with no case in tests/support/cuda_op_cases.cpp: " << joined(cov.without_case);
  EXPECT_TRUE(cov.unknown.empty()) << "cases name launchers that no engine/**/*_kernels.h declares: "
                                   << joined(cov.unknown);
  EXPECT_GE(declared.size(), 30u) << "the header scan found too few launchers: " << declared.size();
}

// The scan reads declarations inside `namespace ...cuda_kernels` blocks and nothing else.
TEST(CudaOpCases, HeaderScanFindsLaunchers) {
  const std::string text = R"(// void not_this(int);
#pragma once
namespace dgpipe::engine {
DGP_HD float shared_math(float x) {
  return x;
}
namespace cuda_kernels {
// out = f(x)
void launcher_one(const Tensor& out,
                  const Tensor& x);
bool launcher_two(const Tensor& x);
constexpr int64_t kLimit = 64;
}  // namespace cuda_kernels
void after(int);
}  // namespace dgpipe::engine
namespace dgpipe::compress::cuda_kernels {
void launcher_three(const engine::Tensor& x, int64_t k);
}  // namespace dgpipe::compress::cuda_kernels
)";
  EXPECT_EQ(launchers_in_header_text(text),
            (std::set<std::string>{"launcher_one", "launcher_two", "launcher_three"}));
}

// The comparison itself, without a device: a CPU run agrees with itself, and a perturbed output, a NaN the
// oracle does not have, a perturbed gradient or a missing gradient is reported.
TEST(CudaOpCases, ComparisonReportsMismatches) {
  const CudaTwinCase& c = engine_cuda_cases()[0];
  ASSERT_TRUE(c.backward);
  const TwinRun cpu = run_case(c, Device::cpu());
  EXPECT_TRUE(compare_twins(c, cpu, cpu).empty());
  TwinRun off = cpu;
  off.out = add(cpu.out, 10 * c.tol);
  EXPECT_EQ(compare_twins(c, cpu, off).size(), 1u);
  std::vector<double> with_nan = cpu.out.to_vector();
  with_nan[0] = NAN;
  off.out = from_vector(with_nan, cpu.out.shape());
  EXPECT_EQ(compare_twins(c, cpu, off).size(), 1u);
  off = cpu;
  off.grads[1] = add(cpu.grads[1], 10 * c.tol);
  EXPECT_EQ(compare_twins(c, cpu, off).size(), 1u);
  off = cpu;
  off.grads[0] = Tensor();
  EXPECT_EQ(compare_twins(c, cpu, off).size(), 1u);
}
