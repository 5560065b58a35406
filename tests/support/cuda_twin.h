// CUDA twin cases: one row of a table per comparison of a CUDA launcher with its CPU twin. A case names the
// launchers its CUDA run goes through, builds its inputs on the CPU, runs the op on the CPU in f32 (the
// oracle) and, when a device exists, on CUDA in the case's dtype, and compares the outputs, and the gradients
// of every floating input, within the case's tolerances. The tables (engine: tests/support/cuda_op_cases.cpp,
// codecs: tests/compress/test_cuda_codecs.cpp) also drive bench/bench_cuda_ops.cpp, and a coverage check
// fails when a launcher declared in a *_kernels.h header has no case naming it.
//
// Nothing here needs googletest (the benchmark compiles cuda_twin.cpp too): compare_twins returns its
// findings as text for the test to report.
#pragma once
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "support/gradcheck.h"

namespace dgpipe::testing {

// A plain op: its output for inputs already placed on the device under test.
using OpFn = std::function<engine::Tensor(const Inputs&)>;
// One call of a case (what is timed by the benchmark, and compared after `steps` calls by the test).
using Step = std::function<engine::Tensor()>;
// A stateful op (an optimizer, a factory that needs the device): builds its state from the inputs on `device`
// once and returns the step.
using Prepare = std::function<Step(const Inputs&, engine::Device device)>;
// Distance of the CUDA result from the CPU oracle (both on the CPU, in f32); default max_rel_diff.
using Metric = std::function<double(const engine::Tensor& cuda, const engine::Tensor& cpu)>;

// A benchmark size of a case (bench/bench_cuda_ops.cpp): the same op on device-sized inputs.
struct CudaBench {
  std::string name;  // google-benchmark name; bench/engine_vs_pytorch.py knows the PyTorch twin of each
  // The inputs, built directly on the device in `opts` (the case's dtype on cuda:0).
  std::function<Inputs(engine::TensorOptions opts)> inputs;
  double bytes = 0;  // memory-bound ops: bytes one call must move (GB/s, and the fraction of copy bandwidth)
  double flops = 0;  // compute-bound ops: floating-point operations of one call (TFLOP/s)
};

struct CudaTwinCase {
  std::string name;                    // unique; names the test instance
  std::vector<std::string> launchers;  // the cuda_kernels launchers the CUDA run goes through
  OpFn op;                             // either op ...
  Prepare prepare;                     // ... or prepare (which wins when set)
  Inputs inputs;                       // built on the CPU; floating ones in f32, others in their own dtype
  engine::DType dtype = engine::DType::f32;  // dtype of the floating inputs on CUDA; the oracle runs in f32
  double tol = 1e-4;                         // forward: metric(cuda, cpu) <= tol
  double grad_tol = -1;                      // gradients: metric <= grad_tol; negative means 4 * tol
  bool backward = true;                      // compare the gradients of the floating inputs too
  int steps = 1;                             // calls of the step before the comparison (stateful ops)
  bool tf32 = false;  // TF32 allowed on CUDA for fp32 GEMM and convolution; off, fp32 is compared exactly
  Metric metric;      // empty: max_rel_diff
  std::vector<CudaBench> bench;  // benchmark sizes of this case (usually none)
};

// The step of a case on inputs already on `device` (wraps a plain op).
Step prepare_step(const CudaTwinCase& c, const Inputs& inputs, engine::Device device);

// One run of a case: its output and the gradient of every floating input (undefined for the others), as f32
// CPU tensors.
struct TwinRun {
  engine::Tensor out;
  std::vector<engine::Tensor> grads;
};
// Runs a case on `device`: the floating inputs in f32 on the CPU (the oracle) or in c.dtype on CUDA, `steps`
// calls of the step, then, for a backward case with a floating output, the backward pass of sum(out * w) for
// a fixed random direction w of the output's shape (the same on every device).
TwinRun run_case(const CudaTwinCase& c, engine::Device device);
// Compares the CUDA run with the CPU oracle within the case's tolerances; one line per mismatch (none when
// they agree).
std::vector<std::string> compare_twins(const CudaTwinCase& c, const TwinRun& cpu, const TwinRun& cuda);

// A case name as a test name: runs of other characters become one '_' ("sub broadcast [3,5]" ->
// "sub_broadcast_3_5"; gtest names are letters, digits and underscores).
std::string test_identifier(const std::string& case_name);

// Uniform f32 values in [lo, hi) from Philox seed `seed`, on the CPU.
engine::Tensor uniform_input(const engine::Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0);

// The launchers declared in the *_kernels.h headers below `folder` (relative to the repository root, found
// through $DGPIPE_SOURCE_DIR or the working directory): every function declared inside a `namespace
// ...cuda_kernels` block. Throws when the folder has no such header.
std::set<std::string> declared_launchers(const std::string& folder);
// The same scan over the text of one header.
std::set<std::string> launchers_in_header_text(const std::string& text);
// Launchers of `declared` that no case names, and launchers cases name that are not declared.
struct LauncherCoverage {
  std::vector<std::string> without_case;
  std::vector<std::string> unknown;
};
LauncherCoverage launcher_coverage(const std::set<std::string>& declared,
                                   const std::vector<CudaTwinCase>& cases);

}  // namespace dgpipe::testing
