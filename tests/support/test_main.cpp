// gtest main for every suite: prints once whether CUDA tests will run, so a skipped GPU suite is visible.
#include <gtest/gtest.h>

#include <cstdio>

#include "engine/device.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (!dgpipe::engine::cuda_available())
    std::printf("[dgpipe] no CUDA device: CUDA tests in this suite are skipped\n");
  return RUN_ALL_TESTS();
}
