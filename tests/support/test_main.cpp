// gtest main for every suite: prints once what CUDA this process sees, so a skipped GPU suite is visible in
// its log and a GPU check can tell "no GPU here" (CI) from "a GPU the runtime could not use" (a failure):
//   [dgpipe] no CUDA device: no NVIDIA driver on this machine: CUDA tests in this suite are skipped
//   [dgpipe] CUDA ERROR: cudaErrorInsufficientDriver (...): CUDA tests in this suite are skipped
//   [dgpipe] 1 CUDA device(s); driver supports CUDA 13.0, runtime 13.0; cuda:0 NVIDIA H200 (...), cuBLAS ...
#include <gtest/gtest.h>

#include <cstdio>

#include "engine/cuda.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  namespace cuda = dgpipe::engine::cuda;
  const cuda::DeviceStatus status = cuda::device_status();
  if (status.count == 0)
    std::printf("[dgpipe] %s: CUDA tests in this suite are skipped\n", cuda::describe(status).c_str());
  else
    std::printf("[dgpipe] %s; %s\n", cuda::describe(status).c_str(), cuda::runtime_report().c_str());
  std::fflush(stdout);
  return RUN_ALL_TESTS();
}
