// softmax, log_softmax and the fused cross-entropy loss.
//
// A softmax along dim d of a contiguous tensor is computed on the [outer, dim_size, inner] view of it (inner
// is the product of the dims after d), so any dim works without a transpose. Rows are max-subtracted for
// stability. cross_entropy fuses log-softmax and NLL: the forward keeps only the per-row logsumexp, and the
// backward writes softmax - target distribution directly, never materialising log-probabilities.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/ops.h"
#include "engine/ops/cpu_loops.h"
#include "engine/ops/softmax_kernels.h"
#include "engine/ops/vec_math.h"
#include "engine/parallel.h"

namespace dgpipe::engine {

namespace {

struct Layout {
  int64_t outer = 1, size = 1, inner = 1;
};

Layout layout_of(const Shape& shape, int64_t dim) {
  Layout l;
  for (int64_t d = 0; d < dim; ++d) l.outer *= shape[d];
  l.size = shape.empty() ? 1 : shape[dim];
  for (int64_t d = dim + 1; d < static_cast<int64_t>(shape.size()); ++d) l.inner *= shape[d];
  return l;
}

// Calls f(o) for every outer index, split over the threads: the softmaxes are independent.
template <class F>
void for_each_outer(const Layout& l, F&& f) {
  const int64_t grain = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, l.size * l.inner));
  parallel_for(l.outer, grain, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) f(o);
  });
}

template <class T>
void softmax_forward_cpu(T* y, const T* x, Layout l, bool log) {
  for_each_outer(l, [&](int64_t o) {
    for (int64_t i = 0; i < l.inner; ++i) {
      const int64_t base = o * l.size * l.inner + i;
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t c = 0; c < l.size; ++c) m = std::max<double>(m, x[base + c * l.inner]);
      double s = 0;
      for (int64_t c = 0; c < l.size; ++c) s += std::exp(x[base + c * l.inner] - m);
      if (log) {
        const double lse = m + std::log(s);
        for (int64_t c = 0; c < l.size; ++c)
          y[base + c * l.inner] = static_cast<T>(x[base + c * l.inner] - lse);
      } else {
        const double inv = 1.0 / s;
        for (int64_t c = 0; c < l.size; ++c)
          y[base + c * l.inner] = static_cast<T>(std::exp(x[base + c * l.inner] - m) * inv);
      }
    }
  });
}

// f32: the exponentials in float through vec_math.h's vectorised exp (each row's own, computed once and
// kept), summed in double; a strided row (dim not the last) is gathered first. Every row is computed alike
// whichever thread takes it.
template <>
void softmax_forward_cpu<float>(float* y, const float* x, Layout l, bool log) {
  for_each_outer(l, [&](int64_t o) {
    thread_local std::vector<float> row, e;
    row.resize(static_cast<size_t>(l.size));
    e.resize(static_cast<size_t>(l.size));
    for (int64_t i = 0; i < l.inner; ++i) {
      const int64_t base = o * l.size * l.inner + i;
      const float* xr = x + base;
      if (l.inner != 1) {
        for (int64_t c = 0; c < l.size; ++c) row[c] = x[base + c * l.inner];
        xr = row.data();
      }
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t c = 0; c < l.size; ++c) m = std::max(m, xr[c]);
      cpu::exp_shifted(xr, l.size, m, e.data());
      double part[4] = {0, 0, 0,
                        0};  // four running sums in a fixed order: the adds need not wait on each other
      for (int64_t c = 0; c < l.size; ++c) part[c % 4] += e[c];
      const double s = (part[0] + part[1]) + (part[2] + part[3]);
      if (log) {
        const double lse = m + std::log(s);
        for (int64_t c = 0; c < l.size; ++c) y[base + c * l.inner] = static_cast<float>(xr[c] - lse);
      } else {
        const double inv = 1.0 / s;
        for (int64_t c = 0; c < l.size; ++c) y[base + c * l.inner] = static_cast<float>(e[c] * inv);
      }
    }
  });
}

template <class T>
void softmax_backward_cpu(T* dx, const T* dy, const T* y, Layout l, bool log) {
  for_each_outer(l, [&](int64_t o) {
    for (int64_t i = 0; i < l.inner; ++i) {
      const int64_t base = o * l.size * l.inner + i;
      double s = 0;
      for (int64_t c = 0; c < l.size; ++c) {
        const int64_t k = base + c * l.inner;
        s += log ? static_cast<double>(dy[k]) : static_cast<double>(dy[k]) * y[k];
      }
      for (int64_t c = 0; c < l.size; ++c) {
        const int64_t k = base + c * l.inner;
        dx[k] = log ? static_cast<T>(dy[k] - std::exp(static_cast<double>(y[k])) * s)
                    : static_cast<T>(y[k] * (dy[k] - s));
      }
    }
  });
}

Tensor softmax_forward_raw(const Tensor& x, Layout l, bool log) {
  if (x.device().is_cpu() && is_half(x.dtype()))
    return softmax_forward_raw(x.to(DType::f32), l, log).to(x.dtype());
  Tensor y = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  if (x.device().is_cuda()) {
    cuda_kernels::softmax_forward(y, x, l.outer, l.size, l.inner, log);
    return y;
  }
  const char* op = log ? "log_softmax" : "softmax";
  DGP_DISPATCH_FLOATING(
      x.dtype(), op, [&] { softmax_forward_cpu<scalar_t>(y.data<scalar_t>(), x.data<scalar_t>(), l, log); });
  return y;
}

Tensor softmax_backward_raw(const Tensor& dy, const Tensor& y, Layout l, bool log) {
  if (y.device().is_cpu() && is_half(y.dtype()))
    return softmax_backward_raw(dy.to(DType::f32), y.to(DType::f32), l, log).to(y.dtype());
  Tensor dx = empty(y.shape(), TensorOptions(y.dtype(), y.device()));
  if (y.device().is_cuda()) {
    cuda_kernels::softmax_backward(dx, dy, y, l.outer, l.size, l.inner, log);
    return dx;
  }
  const char* op = log ? "log_softmax backward" : "softmax backward";
  DGP_DISPATCH_FLOATING(y.dtype(), op, [&] {
    softmax_backward_cpu<scalar_t>(dx.data<scalar_t>(), dy.data<scalar_t>(), y.data<scalar_t>(), l, log);
  });
  return dx;
}

Tensor softmax_impl(const Tensor& x, int64_t dim, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  DGP_CHECK(x.defined(), op << ": undefined input");
  DGP_CHECK(is_floating(x.dtype()), op << ": expected a floating input, got " << dtype_name(x.dtype()));
  dim = wrap_dim(dim, x.dim(), op);
  Layout l = layout_of(x.shape(), dim);
  Tensor xc = x.detach().contiguous();
  Tensor y = softmax_forward_raw(xc, l, log);
  if (needs_grad({x})) {
    // Both backward formulas need only the output; saved detached (capturing y itself would form a cycle).
    Tensor saved = y.detach();
    record(op, {x}, y, [saved, l, log](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{softmax_backward_raw(g[0].contiguous(), saved, l, log)};
    });
  }
  return y;
}

// ---- cross-entropy ----

// Per-row smoothed NLL and logsumexp. Out-of-range targets throw here, naming the row, the target and C.
template <class T>
void cross_entropy_forward_cpu(T* row_loss, T* row_lse, const T* x, const int64_t* target, int64_t n,
                               int64_t c, double eps, int64_t ignore_index) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = target[i];
    const T* xr = x + i * c;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t k = 0; k < c; ++k) m = std::max<double>(m, xr[k]);
    double s = 0, sum_x = 0;
    for (int64_t k = 0; k < c; ++k) {
      s += std::exp(xr[k] - m);
      sum_x += xr[k];
    }
    const double lse = m + std::log(s);
    row_lse[i] = static_cast<T>(lse);
    if (t == ignore_index) {
      row_loss[i] = T(0);
      continue;
    }
    DGP_CHECK(t >= 0 && t < c, "cross_entropy: target "
                                   << t << " at position " << i << " is out of range for " << c
                                   << " classes (valid: 0.." << c - 1 << ", or ignore_index " << ignore_index
                                   << ")");
    const double nll = lse - xr[t];
    const double smooth = lse - sum_x / static_cast<double>(c);  // mean_c(-log p_c)
    row_loss[i] = static_cast<T>((1.0 - eps) * nll + eps * smooth);
  }
}

template <class T>
void cross_entropy_backward_cpu(T* dx, const T* x, const T* row_lse, const int64_t* target, int64_t n,
                                int64_t c, double scale, double eps, int64_t ignore_index) {
  const double off_target = eps / static_cast<double>(c);
  for (int64_t i = 0; i < n; ++i) {
    T* dr = dx + i * c;
    const int64_t t = target[i];
    if (t == ignore_index) {
      for (int64_t k = 0; k < c; ++k) dr[k] = T(0);
      continue;
    }
    const T* xr = x + i * c;
    const double lse = row_lse[i];
    for (int64_t k = 0; k < c; ++k) {
      const double q = off_target + (k == t ? 1.0 - eps : 0.0);
      dr[k] = static_cast<T>(scale * (std::exp(xr[k] - lse) - q));
    }
  }
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) {
  return softmax_impl(x, dim, false);
}
Tensor log_softmax(const Tensor& x, int64_t dim) {
  return softmax_impl(x, dim, true);
}

// Mean reduction over the non-ignored rows, as PyTorch. When every target is ignore_index PyTorch returns NaN
// (0/0); we return 0 with a zero gradient instead, because a micro-batch made only of padding is legitimate
// in a pipeline and a NaN would poison the sum of micro-batch losses and trip the inf/nan step skipping.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, double label_smoothing,
                     int64_t ignore_index) {
  DGP_CHECK(logits.defined() && target.defined(), "cross_entropy: undefined logits or target");
  DGP_CHECK(is_floating(logits.dtype()),
            "cross_entropy: logits must be floating, got " << dtype_name(logits.dtype()));
  DGP_CHECK(logits.dim() == 2, "cross_entropy: logits must be [N,C], got " << shape_str(logits.shape()));
  DGP_CHECK(target.dtype() == DType::i64 || target.dtype() == DType::i32,
            "cross_entropy: target must be i64 (or i32) class indices, got " << dtype_name(target.dtype()));
  DGP_CHECK(target.dim() == 1 && target.size(0) == logits.size(0),
            "cross_entropy: target " << shape_str(target.shape()) << " does not match logits "
                                     << shape_str(logits.shape()) << " (expected [" << logits.size(0)
                                     << "])");
  DGP_CHECK(target.device() == logits.device(),
            "cross_entropy: target on " << target.device().str() << ", logits on " << logits.device().str());
  DGP_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0,
            "cross_entropy: label_smoothing must be in [0,1], got " << label_smoothing);
  const int64_t n = logits.size(0), c = logits.size(1);
  DGP_CHECK(c > 0, "cross_entropy: logits have no classes (" << shape_str(logits.shape()) << ")");

  // Work in the logits' dtype, f32 for half logits on the CPU.
  const DType work = (logits.device().is_cpu() && is_half(logits.dtype())) ? DType::f32 : logits.dtype();
  const DType row_dtype = is_half(work) ? DType::f32 : work;
  Tensor x = logits.detach().to(work).contiguous();
  Tensor t = target.detach().to(DType::i64).contiguous();
  Tensor row_loss = empty({n}, TensorOptions(row_dtype, x.device()));
  Tensor row_lse = empty({n}, TensorOptions(row_dtype, x.device()));
  Tensor loss, denom;
  {
    NoGradGuard ng;
    if (x.device().is_cuda()) {
      cuda_kernels::cross_entropy_forward(row_loss, row_lse, x, t, label_smoothing, ignore_index);
    } else {
      DGP_DISPATCH_FLOATING(work, "cross_entropy", [&] {
        cross_entropy_forward_cpu<scalar_t>(row_loss.data<scalar_t>(), row_lse.data<scalar_t>(),
                                            x.data<scalar_t>(), t.data<int64_t>(), n, c, label_smoothing,
                                            ignore_index);
      });
    }
    // Number of non-ignored rows, clamped to 1 so that an all-ignored batch gives 0 (see above). Tensor ops
    // keep this on the device: no host synchronisation on the GPU path.
    Tensor ignore = full({}, static_cast<double>(ignore_index), TensorOptions(DType::i64, t.device()));
    Tensor count = sum(cast(ne(t, ignore), row_dtype));
    denom = clamp(count, 1.0, std::nullopt);
    loss = div(sum(row_loss), denom);
    if (loss.dtype() != logits.dtype()) loss = loss.to(logits.dtype());
  }

  if (needs_grad({logits})) {
    DType out_dtype = logits.dtype();
    record(
        "cross_entropy", {logits}, loss,
        [x, t, row_lse, denom, label_smoothing, ignore_index, n, c, out_dtype](const std::vector<Tensor>& g) {
          Tensor scale = div(cast(g[0], denom.dtype()), denom);  // 0-d, stays on the device
          Tensor dx = empty({n, c}, TensorOptions(x.dtype(), x.device()));
          if (x.device().is_cuda()) {
            cuda_kernels::cross_entropy_backward(dx, x, row_lse, t, scale, label_smoothing, ignore_index);
          } else {
            const double s = scale.item();
            DGP_DISPATCH_FLOATING(x.dtype(), "cross_entropy backward", [&] {
              cross_entropy_backward_cpu<scalar_t>(dx.data<scalar_t>(), x.data<scalar_t>(),
                                                   row_lse.data<scalar_t>(), t.data<int64_t>(), n, c, s,
                                                   label_smoothing, ignore_index);
            });
          }
          return std::vector<Tensor>{dx.dtype() == out_dtype ? dx : dx.to(out_dtype)};
        });
  }
  return loss;
}

}  // namespace dgpipe::engine
