// The CPU convolution's two backends: the hand-written reference (im2col + OpenBLAS GEMM, a direct loop for
// depthwise; engine/ops/conv.cpp) and oneDNN's JIT convolutions (engine/ops/conv_onednn.cpp), for f32. The
// reference stays the oracle the oneDNN path is tested against, and the only backend of a build without
// oneDNN (DGPIPE_WITH_ONEDNN=OFF).
#pragma once
#include <cstdint>

#include "engine/ops.h"

namespace dgpipe::engine {

enum class CpuConvBackend { reference, onednn };

// The process-wide backend: DGPIPE_CPU_CONV=reference|onednn, or unset, oneDNN where the build has it.
CpuConvBackend cpu_conv_backend();
void set_cpu_conv_backend(CpuConvBackend backend);  // throws for onednn in a build without it
bool onednn_built();
// Whether the environment variable `var` chooses oneDNN: unset or empty, where the build has it; "onednn"; or
// `other` (false). Anything else, or "onednn" in a build without it, is an error naming the variable.
bool onednn_chosen_by(const char* var, const char* other);
const char* cpu_conv_backend_name(CpuConvBackend backend);

// The sizes of one checked convolution (conv.cpp checks them; both backends read them).
struct ConvGeometry {
  int64_t N = 0, C = 0, H = 0, W = 0;  // input
  int64_t O = 0, kh = 0, kw = 0;       // weight
  int64_t Ho = 0, Wo = 0;              // output
  int64_t Cg = 0, Og = 0;              // input / output channels per group
  Conv2dParams p;

  int64_t K() const { return Cg * kh * kw; }
  int64_t in_plane() const { return H * W; }
  int64_t out_plane() const { return Ho * Wo; }
  // One input channel per group (depthwise, possibly with a channel multiplier): the direct loop beats a
  // GEMM whose inner dimension would only be kh*kw.
  bool depthwise() const { return p.groups > 1 && Cg == 1; }
  // A 1x1, stride-1, unpadded convolution: col would be a copy of the input, so the GEMM reads the input
  // itself.
  bool col_is_input() const {
    return kh == 1 && kw == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
  }
};

// oneDNN convolutions on contiguous f32 NCHW buffers (weights [O, C/groups, kh, kw]), on cpu_threads() OpenMP
// threads. Each returns false, having written nothing, where oneDNN has no implementation for the shape (or
// the build has no oneDNN): the caller then runs the reference kernel. Outputs are overwritten.
namespace onednn {
bool conv_forward(const float* x, const float* w, const float* b, float* out, const ConvGeometry& g);
bool conv_backward_data(const float* grad_out, const float* w, float* grad_in, const ConvGeometry& g);
bool conv_backward_weights(const float* grad_out, const float* x, float* grad_w, const ConvGeometry& g);
}  // namespace onednn

}  // namespace dgpipe::engine
