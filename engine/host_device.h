// DGP_HD marks the math that a CPU twin and its CUDA kernel share (elementwise formulas, optimizer updates,
// the Philox generator, dtype loads and stores, codec quantizers): written once, compiled by the C++ compiler
// as an inline function and by nvcc as __host__ __device__. This header pulls in no CUDA header, so CPU-only
// code includes it freely. Inside a DGP_HD function, `#ifdef __CUDA_ARCH__` selects a device intrinsic where
// the two compilers need different spellings of the same operation.
#pragma once

#ifdef __CUDACC__
#define DGP_HD __host__ __device__ __forceinline__
#else
#define DGP_HD inline
#endif
