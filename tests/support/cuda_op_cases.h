// The table of CUDA twin cases of the engine: every launcher declared in engine/**/*_kernels.h against its
// CPU twin (tests/engine/test_cuda_ops.cpp runs them and checks that coverage), and the benchmark sizes of
// bench/bench_cuda_ops.cpp.
#pragma once
#include <vector>

#include "support/cuda_twin.h"

namespace dgpipe::testing {

// Built once, on first use (inputs are CPU tensors).
const std::vector<CudaTwinCase>& engine_cuda_cases();

}  // namespace dgpipe::testing
