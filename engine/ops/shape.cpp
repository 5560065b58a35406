// concat, split, chunk, stack, index_select.
#include <cstring>

#include "engine/ops.h"
#include "engine/ops/cpu_loops.h"
#include "engine/ops/shape_kernels.h"

namespace dgpipe::engine {

Tensor concat(const std::vector<Tensor>& tensors, int64_t dim) {
  DGP_CHECK(!tensors.empty(), "concat: no tensors given");
  const Tensor& first = tensors[0];
  dim = wrap_dim(dim, first.dim(), "concat");
  Shape shape = first.shape();
  int64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    DGP_CHECK(t.dim() == first.dim(),
              "concat: tensor " << i << " has rank " << t.dim() << ", expected " << first.dim());
    DGP_CHECK(t.dtype() == first.dtype() && t.device() == first.device(),
              "concat: tensor " << i << " is " << dtype_name(t.dtype()) << " on " << t.device().str()
                                << ", expected " << dtype_name(first.dtype()) << " on "
                                << first.device().str());
    for (int64_t d = 0; d < t.dim(); ++d)
      DGP_CHECK(d == dim || t.shape()[d] == shape[d],
                "concat: tensor " << i << " has shape " << shape_str(t.shape()) << ", expected "
                                  << shape_str(shape) << " except dim " << dim);
    total += t.shape()[dim];
  }
  shape[dim] = total;
  Tensor out = empty(shape, TensorOptions(first.dtype(), first.device()));
  std::vector<int64_t> sizes;
  {
    NoGradGuard ng;
    int64_t at = 0;
    for (const Tensor& t : tensors) {
      out.narrow(dim, at, t.shape()[dim]).copy_(t);
      at += t.shape()[dim];
      sizes.push_back(t.shape()[dim]);
    }
  }
  if (needs_grad(tensors)) {
    record("concat", tensors, out, [sizes, dim](const std::vector<Tensor>& g) {
      std::vector<Tensor> grads;
      int64_t at = 0;
      for (int64_t s : sizes) {
        grads.push_back(g[0].narrow(dim, at, s));
        at += s;
      }
      return grads;
    });
  }
  return out;
}

std::vector<Tensor> split(const Tensor& a, const std::vector<int64_t>& sizes, int64_t dim) {
  dim = wrap_dim(dim, a.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    DGP_CHECK(s >= 0, "split: negative size " << s);
    total += s;
  }
  DGP_CHECK(total == a.shape()[dim],
            "split: sizes sum to " << total << " but dim " << dim << " has size " << a.shape()[dim]);
  std::vector<Tensor> out;
  int64_t at = 0;
  for (int64_t s : sizes) {
    out.push_back(a.narrow(dim, at, s));
    at += s;
  }
  return out;
}

std::vector<Tensor> chunk(const Tensor& a, int64_t chunks, int64_t dim) {
  DGP_CHECK(chunks > 0, "chunk: chunks must be positive, got " << chunks);
  dim = wrap_dim(dim, a.dim(), "chunk");
  int64_t n = a.shape()[dim];
  int64_t each = (n + chunks - 1) / chunks;
  std::vector<int64_t> sizes;
  for (int64_t at = 0; at < n; at += each) sizes.push_back(std::min(each, n - at));
  return split(a, sizes, dim);
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  DGP_CHECK(!tensors.empty(), "stack: no tensors given");
  dim = wrap_dim(dim, tensors[0].dim() + 1, "stack");
  std::vector<Tensor> parts;
  for (size_t i = 0; i < tensors.size(); ++i) {
    DGP_CHECK(tensors[i].shape() == tensors[0].shape(),
              "stack: tensor " << i << " has shape " << shape_str(tensors[i].shape()) << ", expected "
                               << shape_str(tensors[0].shape()));
    parts.push_back(tensors[i].unsqueeze(dim));
  }
  return concat(parts, dim);
}

namespace {

// out[..., j, ...] = src[..., index[j], ...] (CPU)
void index_select_cpu(const Tensor& out, const Tensor& src, int64_t dim, const Tensor& index) {
  Tensor s = src.contiguous();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= s.shape()[d];
  for (int64_t d = dim + 1; d < s.dim(); ++d) inner *= s.shape()[d];
  int64_t n = s.shape()[dim], m = index.numel();
  size_t item = s.itemsize();
  const char* sp = static_cast<const char*>(s.raw_data());
  char* op = static_cast<char*>(out.raw_data());
  const int64_t* ix = index.data<int64_t>();
  for (int64_t j = 0; j < m; ++j)
    DGP_CHECK(ix[j] >= 0 && ix[j] < n,
              "index_select: index " << ix[j] << " out of range for dim " << dim << " of size " << n);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < m; ++j)
      std::memcpy(op + ((o * m + j) * inner) * item, sp + ((o * n + ix[j]) * inner) * item, inner * item);
}

// dst[..., index[j], ...] += src[..., j, ...] (CPU, floating)
void index_add_cpu(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src) {
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= dst.shape()[d];
  for (int64_t d = dim + 1; d < dst.dim(); ++d) inner *= dst.shape()[d];
  int64_t n = dst.shape()[dim], m = index.numel();
  const int64_t* ix = index.data<int64_t>();
  Tensor s = src.contiguous();
  DGP_DISPATCH_FLOATING(dst.dtype(), "index_add", [&] {
    scalar_t* dp = dst.data<scalar_t>();
    const scalar_t* sp = s.data<scalar_t>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < m; ++j) {
        scalar_t* drow = dp + (o * n + ix[j]) * inner;
        const scalar_t* srow = sp + (o * m + j) * inner;
        for (int64_t i = 0; i < inner; ++i) drow[i] += srow[i];
      }
  });
}

}  // namespace

Tensor index_select(const Tensor& a, int64_t dim, const Tensor& index_in) {
  dim = wrap_dim(dim, a.dim(), "index_select");
  DGP_CHECK(index_in.dim() <= 1,
            "index_select: index must be 1-D, got shape " << shape_str(index_in.shape()));
  DGP_CHECK(index_in.device() == a.device(),
            "index_select: index on " << index_in.device().str() << ", tensor on " << a.device().str());
  Tensor index = index_in.to(DType::i64).contiguous().reshape({index_in.numel()});
  Shape shape = a.shape();
  shape[dim] = index.numel();
  Tensor out = empty(shape, TensorOptions(a.dtype(), a.device()));
  if (a.device().is_cuda()) {
    cuda_kernels::index_select(out, a.contiguous(), dim, index);
  } else {
    index_select_cpu(out, a, dim, index);
  }
  if (needs_grad({a})) {
    Shape in_shape = a.shape();
    record("index_select", {a}, out, [in_shape, dim, index](const std::vector<Tensor>& g) {
      Tensor gi = zeros(in_shape, TensorOptions(g[0].dtype(), g[0].device()));
      Tensor go = g[0].device().is_cpu() && (g[0].dtype() == DType::f16 || g[0].dtype() == DType::bf16)
                      ? g[0].to(DType::f32)
                      : g[0];
      if (go.dtype() != gi.dtype()) gi = gi.to(go.dtype());
      if (gi.device().is_cuda()) {
        cuda_kernels::index_add(gi, dim, index, go.contiguous());
      } else {
        index_add_cpu(gi, dim, index, go);
      }
      return std::vector<Tensor>{gi.to(g[0].dtype())};
    });
  }
  return out;
}

}  // namespace dgpipe::engine
