// embedding: out[..., :] = weight[indices[...], :]. The backward scatter-adds the output gradient into a [V,
// D] gradient (repeated indices accumulate); the padding_idx row gets none, as in PyTorch.
#include <cstring>

#include "engine/ops.h"
#include "engine/ops/cpu_loops.h"
#include "engine/ops/embedding_kernels.h"

namespace dgpipe::engine {

namespace {

// Validates every index on the host (CPU tensors) and returns them as i64.
template <class I>
void check_indices_cpu(const I* ix, int64_t n, int64_t vocab) {
  for (int64_t j = 0; j < n; ++j)
    DGP_CHECK(ix[j] >= 0 && ix[j] < vocab, "embedding: index " << static_cast<int64_t>(ix[j])
                                                               << " at position " << j
                                                               << " is out of range for a table of " << vocab
                                                               << " rows (valid: 0.." << vocab - 1 << ")");
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& indices, int64_t padding_idx) {
  DGP_CHECK(weight.defined() && indices.defined(), "embedding: undefined weight or indices");
  DGP_CHECK(weight.dim() == 2, "embedding: weight must be [V,D], got " << shape_str(weight.shape()));
  DGP_CHECK(is_floating(weight.dtype()),
            "embedding: weight must be floating, got " << dtype_name(weight.dtype()));
  DGP_CHECK(indices.dtype() == DType::i64 || indices.dtype() == DType::i32,
            "embedding: indices must be i32 or i64, got " << dtype_name(indices.dtype()));
  DGP_CHECK(indices.device() == weight.device(),
            "embedding: indices on " << indices.device().str() << ", weight on " << weight.device().str());
  const int64_t vocab = weight.size(0), width = weight.size(1);
  DGP_CHECK(padding_idx >= -1 && padding_idx < vocab, "embedding: padding_idx "
                                                          << padding_idx << " out of range for " << vocab
                                                          << " rows (-1 means none)");

  const int64_t n = indices.numel();
  Shape out_shape = indices.shape();
  out_shape.push_back(width);
  Tensor w = weight.detach().contiguous();
  Tensor ix = indices.detach().contiguous();
  Tensor out = empty({n, width}, TensorOptions(weight.dtype(), weight.device()));
  if (weight.device().is_cuda()) {
    // The GPU path does not validate indices (that would need a host synchronisation): the kernel reports an
    // out-of-range index, which throws at the next synchronisation (cuda::check_device_errors).
    ix = ix.to(DType::i64);
    cuda_kernels::embedding_forward(out, w, ix);
  } else {
    DGP_DISPATCH_INDEX(ix.dtype(), "embedding", [&] {
      const index_t* ip = ix.data<index_t>();
      check_indices_cpu(ip, n, vocab);
      const size_t row_bytes = static_cast<size_t>(width) * w.itemsize();
      const char* src = static_cast<const char*>(w.raw_data());
      char* dst = static_cast<char*>(out.raw_data());
      for (int64_t j = 0; j < n; ++j)
        std::memcpy(dst + j * row_bytes, src + static_cast<int64_t>(ip[j]) * row_bytes, row_bytes);
    });
  }
  out = out.view(out_shape);

  if (needs_grad({weight})) {
    Shape wshape = weight.shape();
    record("embedding", {weight}, out, [ix, wshape, n, width, padding_idx](const std::vector<Tensor>& g) {
      Tensor go = g[0].contiguous().view({n, width});
      const bool half_cpu = go.device().is_cpu() && (go.dtype() == DType::f16 || go.dtype() == DType::bf16);
      Tensor acc_src = half_cpu ? go.to(DType::f32) : go;
      Tensor gw = zeros(wshape, TensorOptions(acc_src.dtype(), go.device()));
      if (go.device().is_cuda()) {
        cuda_kernels::embedding_backward(gw, acc_src, ix, padding_idx);
      } else {
        DGP_DISPATCH_INDEX(ix.dtype(), "embedding backward", [&] {
          const index_t* ip = ix.data<index_t>();
          DGP_DISPATCH_FLOATING(gw.dtype(), "embedding backward", [&] {
            scalar_t* dst = gw.data<scalar_t>();
            const scalar_t* src = acc_src.data<scalar_t>();
            for (int64_t j = 0; j < n; ++j) {
              const int64_t row = static_cast<int64_t>(ip[j]);
              if (row == padding_idx) continue;
              scalar_t* d = dst + row * width;
              const scalar_t* s = src + j * width;
              for (int64_t k = 0; k < width; ++k) d[k] += s[k];
            }
          });
        });
      }
      return std::vector<Tensor>{gw.dtype() == g[0].dtype() ? gw : gw.to(g[0].dtype())};
    });
  }
  return out;
}

}  // namespace dgpipe::engine
