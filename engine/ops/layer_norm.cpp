// layer_norm over the trailing dims: y = (x - mean) / sqrt(var + eps) * weight + bias, biased variance
// (PyTorch). The input is made contiguous and seen as [rows, cols] with cols = prod(normalized_shape); the
// per-row mean and rstd = 1/sqrt(var + eps) are kept for the backward pass instead of the normalised
// activations.
#include <algorithm>
#include <cmath>

#include "engine/ops.h"
#include "engine/ops/cpu_loops.h"
#include "engine/ops/layer_norm_kernels.h"
#include "engine/parallel.h"

namespace dgpipe::engine {

namespace {

// Statistics dtype: f64 for f64 inputs (the gradcheck oracle), f32 otherwise.
DType stats_dtype(DType x) {
  return x == DType::f64 ? DType::f64 : DType::f32;
}

template <class T>
void forward_row(T* yr, T* mean, T* rstd, const T* xr, const T* w, const T* b, int64_t cols, double eps) {
  // Two passes in double: the CPU twin is the reference, so it trades speed for accuracy.
  double s = 0;
  for (int64_t c = 0; c < cols; ++c) s += xr[c];
  const double mu = s / static_cast<double>(cols);
  double sq = 0;
  for (int64_t c = 0; c < cols; ++c) {
    double d = xr[c] - mu;
    sq += d * d;
  }
  const double rs = 1.0 / std::sqrt(sq / static_cast<double>(cols) + eps);
  *mean = static_cast<T>(mu);
  *rstd = static_cast<T>(rs);
  for (int64_t c = 0; c < cols; ++c) {
    double v = (xr[c] - mu) * rs;
    if (w) v *= w[c];
    if (b) v += b[c];
    yr[c] = static_cast<T>(v);
  }
}

template <class T>
void forward_cpu(T* y, T* mean, T* rstd, const T* x, const T* w, const T* b, int64_t rows, int64_t cols,
                 double eps) {
  // Rows are independent: split over the threads.
  parallel_for(rows, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, cols)),
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r)
                   forward_row(y + r * cols, mean + r, rstd + r, x + r * cols, w, b, cols, eps);
               });
}

// With xhat = (x - mean) * rstd and dxhat = dy * w:
//   dx = rstd * (dxhat - mean_c(dxhat) - xhat * mean_c(dxhat * xhat)),  dw = sum_rows(dy * xhat),  db =
//   sum_rows(dy)
template <class T>
void backward_cpu(T* dx, T* dw, T* db, const T* dy, const T* x, const T* mean, const T* rstd, const T* w,
                  int64_t rows, int64_t cols) {
  std::vector<double> dw_acc(dw ? cols : 0, 0.0), db_acc(db ? cols : 0, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    const T* gr = dy + r * cols;
    const double mu = mean[r], rs = rstd[r];
    double sum_dxhat = 0, sum_dxhat_xhat = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const double xhat = (xr[c] - mu) * rs;
      const double dxhat = w ? gr[c] * static_cast<double>(w[c]) : static_cast<double>(gr[c]);
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * xhat;
      if (dw) dw_acc[c] += gr[c] * xhat;
      if (db) db_acc[c] += gr[c];
    }
    const double inv_cols = 1.0 / static_cast<double>(cols);
    const double m1 = sum_dxhat * inv_cols, m2 = sum_dxhat_xhat * inv_cols;
    T* dxr = dx + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const double xhat = (xr[c] - mu) * rs;
      const double dxhat = w ? gr[c] * static_cast<double>(w[c]) : static_cast<double>(gr[c]);
      dxr[c] = static_cast<T>(rs * (dxhat - m1 - xhat * m2));
    }
  }
  for (int64_t c = 0; c < static_cast<int64_t>(dw_acc.size()); ++c) dw[c] = static_cast<T>(dw_acc[c]);
  for (int64_t c = 0; c < static_cast<int64_t>(db_acc.size()); ++c) db[c] = static_cast<T>(db_acc[c]);
}

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
template <class T>
T* mut_ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

struct Stats {
  Tensor mean, rstd;
};

// Raw forward on contiguous operands; returns y and fills the statistics.
Tensor forward_raw(const Tensor& x, const Tensor& w, const Tensor& b, int64_t rows, int64_t cols, double eps,
                   Stats& stats) {
  if (x.device().is_cpu() && is_half(x.dtype())) {
    Tensor y = forward_raw(x.to(DType::f32), w.defined() ? w.to(DType::f32) : w,
                           b.defined() ? b.to(DType::f32) : b, rows, cols, eps, stats);
    return y.to(x.dtype());
  }
  Tensor y = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  stats.mean = empty({rows}, TensorOptions(stats_dtype(x.dtype()), x.device()));
  stats.rstd = empty({rows}, TensorOptions(stats_dtype(x.dtype()), x.device()));
  if (x.device().is_cuda()) {
    cuda_kernels::layer_norm_forward(y, stats.mean, stats.rstd, x, w, b, rows, cols, eps);
    return y;
  }
  DGP_DISPATCH_FLOATING(x.dtype(), "layer_norm", [&] {
    forward_cpu<scalar_t>(y.data<scalar_t>(), stats.mean.data<scalar_t>(), stats.rstd.data<scalar_t>(),
                          x.data<scalar_t>(), ptr_or_null<scalar_t>(w), ptr_or_null<scalar_t>(b), rows, cols,
                          eps);
  });
  return y;
}

struct Grads {
  Tensor dx, dw, db;
};

Grads backward_raw(const Tensor& dy, const Tensor& x, const Tensor& w, const Stats& stats, bool need_dw,
                   bool need_db, int64_t rows, int64_t cols) {
  Grads g;
  if (x.device().is_cpu() && is_half(x.dtype())) {
    Grads f = backward_raw(dy.to(DType::f32), x.to(DType::f32), w.defined() ? w.to(DType::f32) : w, stats,
                           need_dw, need_db, rows, cols);
    g.dx = f.dx.to(x.dtype());
    if (f.dw.defined()) g.dw = f.dw.to(x.dtype());
    if (f.db.defined()) g.db = f.db.to(x.dtype());
    return g;
  }
  Shape param_shape{cols};
  g.dx = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  if (need_dw) g.dw = empty(param_shape, TensorOptions(x.dtype(), x.device()));
  if (need_db) g.db = empty(param_shape, TensorOptions(x.dtype(), x.device()));
  if (x.device().is_cuda()) {
    cuda_kernels::layer_norm_backward(g.dx, g.dw, g.db, dy, x, stats.mean, stats.rstd, w, rows, cols);
    return g;
  }
  DGP_DISPATCH_FLOATING(x.dtype(), "layer_norm backward", [&] {
    backward_cpu<scalar_t>(g.dx.data<scalar_t>(), mut_ptr_or_null<scalar_t>(g.dw),
                           mut_ptr_or_null<scalar_t>(g.db), dy.data<scalar_t>(), x.data<scalar_t>(),
                           stats.mean.data<scalar_t>(), stats.rstd.data<scalar_t>(), ptr_or_null<scalar_t>(w),
                           rows, cols);
  });
  return g;
}

void check_param(const Tensor& p, const char* what, const Tensor& x, const Shape& normalized_shape) {
  if (!p.defined()) return;
  DGP_CHECK(p.shape() == normalized_shape, "layer_norm: " << what << " has shape " << shape_str(p.shape())
                                                          << " but normalized_shape is "
                                                          << shape_str(normalized_shape));
  DGP_CHECK(p.dtype() == x.dtype(), "layer_norm: " << what << " is " << dtype_name(p.dtype())
                                                   << " but input is " << dtype_name(x.dtype()));
  DGP_CHECK(p.device() == x.device(),
            "layer_norm: " << what << " on " << p.device().str() << " but input on " << x.device().str());
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  double eps) {
  DGP_CHECK(x.defined(), "layer_norm: undefined input");
  DGP_CHECK(is_floating(x.dtype()), "layer_norm: expected a floating input, got " << dtype_name(x.dtype()));
  DGP_CHECK(!normalized_shape.empty(), "layer_norm: normalized_shape is empty");
  const int64_t k = static_cast<int64_t>(normalized_shape.size());
  DGP_CHECK(x.dim() >= k, "layer_norm: input " << shape_str(x.shape())
                                               << " has fewer dims than normalized_shape "
                                               << shape_str(normalized_shape));
  for (int64_t i = 0; i < k; ++i)
    DGP_CHECK(x.shape()[x.dim() - k + i] == normalized_shape[i],
              "layer_norm: input " << shape_str(x.shape()) << " does not end with normalized_shape "
                                   << shape_str(normalized_shape));
  DGP_CHECK(eps >= 0, "layer_norm: eps must be non-negative, got " << eps);
  check_param(weight, "weight", x, normalized_shape);
  check_param(bias, "bias", x, normalized_shape);

  const int64_t cols = shape_numel(normalized_shape);
  DGP_CHECK(cols > 0, "layer_norm: normalized_shape " << shape_str(normalized_shape) << " has no elements");
  const int64_t rows = x.numel() / cols;
  Tensor xc = x.detach().contiguous();
  Tensor wc = weight.defined() ? weight.detach().contiguous().view({cols}) : Tensor();
  Tensor bc = bias.defined() ? bias.detach().contiguous().view({cols}) : Tensor();
  Stats stats;
  Tensor y = forward_raw(xc, wc, bc, rows, cols, eps, stats);

  if (needs_grad({x, weight, bias})) {
    const bool need_dx = x.requires_grad();
    const bool need_dw = weight.defined() && weight.requires_grad();
    const bool need_db = bias.defined() && bias.requires_grad();
    Shape pshape = normalized_shape;
    record("layer_norm", {x, weight, bias}, y,
           [xc, wc, stats, need_dx, need_dw, need_db, rows, cols, pshape](const std::vector<Tensor>& g) {
             Grads gr = backward_raw(g[0].contiguous(), xc, wc, stats, need_dw, need_db, rows, cols);
             return std::vector<Tensor>{need_dx ? gr.dx : Tensor(), need_dw ? gr.dw.view(pshape) : Tensor(),
                                        need_db ? gr.db.view(pshape) : Tensor()};
           });
  }
  return y;
}

}  // namespace dgpipe::engine
