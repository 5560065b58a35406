// batch_norm2d: checks, CPU kernels, dispatch and autograd. The CUDA twin is behind batch_norm_kernels.h.
//
// Per channel c, with M = N*H*W values: training normalises with the batch mean and the biased variance
// (divide by M) and folds the unbiased variance (divide by M-1) into running_var, as PyTorch does; eval
// normalises with the running statistics. Both cases reduce to per-channel (mean, invstd) that are saved for
// the backward pass. Statistics are accumulated in double on the CPU, so the f32 path is as exact as
// PyTorch's. The input may be [N,C,H,W] or, for the same op over fewer dims, [N,C] / [N,C,L].
#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/ops/batch_norm_kernels.h"
#include "engine/ops/copy_kernels.h"
#include "engine/ops/cpu_loops.h"
#include "engine/parallel.h"

namespace dgpipe::engine {

namespace {

struct BnGeometry {
  int64_t N = 0, C = 0, inner = 1;  // inner = product of the dims after C
  int64_t per_channel() const { return N * inner; }
};

std::string describe(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& rm, const Tensor& rv) {
  std::ostringstream s;
  s << " (input " << shape_str(x.shape());
  if (w.defined()) s << ", weight " << shape_str(w.shape());
  if (b.defined()) s << ", bias " << shape_str(b.shape());
  if (rm.defined()) s << ", running_mean " << shape_str(rm.shape());
  if (rv.defined()) s << ", running_var " << shape_str(rv.shape());
  s << ")";
  return s.str();
}

void check_channel_vector(const Tensor& t, const char* what, const Tensor& x, int64_t C, bool same_dtype,
                          const std::string& ctx) {
  if (!t.defined()) return;
  DGP_CHECK(t.dim() == 1 && t.size(0) == C, "batch_norm2d: " << what << " must have shape [" << C << "], got "
                                                             << shape_str(t.shape()) << ctx);
  DGP_CHECK(t.device() == x.device(), "batch_norm2d: " << what << " on " << t.device().str()
                                                       << " but input on " << x.device().str() << ctx);
  if (same_dtype)
    DGP_CHECK(t.dtype() == x.dtype(), "batch_norm2d: " << what << " dtype " << dtype_name(t.dtype())
                                                       << " differs from input dtype "
                                                       << dtype_name(x.dtype()) << ctx);
  else
    DGP_CHECK(is_floating(t.dtype()),
              "batch_norm2d: " << what << " must be floating, got " << dtype_name(t.dtype()) << ctx);
}

BnGeometry check_batch_norm(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& rm,
                            const Tensor& rv, bool training, double momentum, double eps) {
  DGP_CHECK(x.defined(), "batch_norm2d: undefined input");
  const std::string ctx = describe(x, w, b, rm, rv);
  DGP_CHECK(x.dim() >= 2,
            "batch_norm2d: expected an [N,C,H,W] (or [N,C,...]) input, got " << shape_str(x.shape()));
  DGP_CHECK(is_floating(x.dtype()),
            "batch_norm2d: expected a floating input, got " << dtype_name(x.dtype()) << ctx);
  BnGeometry g;
  g.N = x.size(0);
  g.C = x.size(1);
  for (int64_t d = 2; d < x.dim(); ++d) g.inner *= x.size(d);
  check_channel_vector(w, "weight", x, g.C, true, ctx);
  check_channel_vector(b, "bias", x, g.C, true, ctx);
  check_channel_vector(rm, "running_mean", x, g.C, false, ctx);
  check_channel_vector(rv, "running_var", x, g.C, false, ctx);
  DGP_CHECK(rm.defined() == rv.defined(),
            "batch_norm2d: running_mean and running_var must both be given or both be undefined" << ctx);
  DGP_CHECK(eps >= 0, "batch_norm2d: eps must be >= 0, got " << eps << ctx);
  if (training) {
    DGP_CHECK(g.per_channel() > 1,
              "batch_norm2d: training needs more than 1 value per channel, got " << g.per_channel() << ctx);
    DGP_CHECK(momentum >= 0 && momentum <= 1,
              "batch_norm2d: momentum must lie in [0,1], got " << momentum << ctx);
  } else {
    DGP_CHECK(rm.defined(), "batch_norm2d: eval mode needs running_mean and running_var" << ctx);
  }
  return g;
}

// ---------------- CPU kernels (contiguous x) ----------------

// Calls f(c) for every channel, channels split over cpu_threads(): each channel's sums keep their serial
// order, so the result does not depend on the thread count.
template <class F>
void for_each_channel(const BnGeometry& g, F&& f) {
  const int64_t grain = std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, g.per_channel()));
  parallel_for(g.C, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) f(c);
  });
}

// Channel sums in lanes (cpu_loops.h).
using cpu::add_row;
using cpu::LaneSums;

// Fills mean/invstd [C] with the batch statistics and, when running stats are given, updates them in place.
template <class T>
void batch_stats_cpu(const T* x, const BnGeometry& g, double eps, double momentum, const Tensor& running_mean,
                     const Tensor& running_var, T* mean_out, T* invstd_out) {
  const double M = static_cast<double>(g.per_channel());
  for_each_channel(g, [&](int64_t c) {
    LaneSums sum;
    for (int64_t n = 0; n < g.N; ++n) {
      const T* p = x + (n * g.C + c) * g.inner;
      add_row(sum, g.inner, [p](int64_t k) { return static_cast<double>(p[k]); });
    }
    const double mean = sum.total() / M;
    // Second pass over centred values: no cancellation when |mean| >> std.
    LaneSums squares;
    for (int64_t n = 0; n < g.N; ++n) {
      const T* p = x + (n * g.C + c) * g.inner;
      add_row(squares, g.inner, [p, mean](int64_t k) {
        const double d = p[k] - mean;
        return d * d;
      });
    }
    const double sq = squares.total();
    const double var = sq / M;
    mean_out[c] = static_cast<T>(mean);
    invstd_out[c] = static_cast<T>(1.0 / std::sqrt(var + eps));
    if (running_mean.defined()) {
      void* rm = running_mean.storage()->data();
      void* rv = running_var.storage()->data();
      const int64_t om = running_mean.offset() + c * running_mean.stride(0);
      const int64_t ov = running_var.offset() + c * running_var.stride(0);
      const double old_m = load_as_double(rm, om, running_mean.dtype());
      const double old_v = load_as_double(rv, ov, running_var.dtype());
      store_from_double(rm, om, running_mean.dtype(), (1 - momentum) * old_m + momentum * mean);
      store_from_double(rv, ov, running_var.dtype(), (1 - momentum) * old_v + momentum * sq / (M - 1));
    }
  });
}

template <class T>
void running_stats_cpu(const Tensor& running_mean, const Tensor& running_var, const BnGeometry& g, double eps,
                       T* mean_out, T* invstd_out) {
  const void* rm = running_mean.storage()->data();
  const void* rv = running_var.storage()->data();
  for (int64_t c = 0; c < g.C; ++c) {
    mean_out[c] = static_cast<T>(
        load_as_double(rm, running_mean.offset() + c * running_mean.stride(0), running_mean.dtype()));
    const double var =
        load_as_double(rv, running_var.offset() + c * running_var.stride(0), running_var.dtype());
    invstd_out[c] = static_cast<T>(1.0 / std::sqrt(var + eps));
  }
}

// y = (x - mean) * invstd * w + b, as one multiply-add per element: y = x * scale + shift.
template <class T>
void normalize_cpu(const T* x, const T* w, const T* b, const T* mean, const T* invstd, T* out,
                   const BnGeometry& g) {
  for_each_channel(g, [&](int64_t c) {
    const double scale = static_cast<double>(invstd[c]) * (w != nullptr ? w[c] : T(1));
    const double shift = (b != nullptr ? b[c] : T(0)) - static_cast<double>(mean[c]) * scale;
    const T s = static_cast<T>(scale), t = static_cast<T>(shift);
    for (int64_t n = 0; n < g.N; ++n) {
      const T* p = x + (n * g.C + c) * g.inner;
      T* o = out + (n * g.C + c) * g.inner;
      for (int64_t k = 0; k < g.inner; ++k) o[k] = p[k] * s + t;
    }
  });
}

// With xhat = (x - mean) * invstd and gamma = w (or 1):
//   grad_bias = sum(g), grad_weight = sum(g * xhat)
//   eval (mean, invstd constants):  grad_x = g * gamma * invstd
//   training (they depend on x):    grad_x = gamma * invstd * (g - sum(g)/M - xhat * sum(g * xhat)/M)
template <class T>
void batch_norm_backward_cpu(const T* gout, const T* x, const T* w, const T* mean, const T* invstd, T* gx,
                             T* gw, T* gb, const BnGeometry& g, bool training) {
  const double M = static_cast<double>(g.per_channel());
  for_each_channel(g, [&](int64_t c) {
    const double mu = mean[c], is = invstd[c];
    LaneSums lanes_g, lanes_gxhat;
    for (int64_t n = 0; n < g.N; ++n) {
      const T* gp = gout + (n * g.C + c) * g.inner;
      const T* xp = x + (n * g.C + c) * g.inner;
      add_row(lanes_g, g.inner, [gp](int64_t k) { return static_cast<double>(gp[k]); });
      add_row(lanes_gxhat, g.inner, [gp, xp, mu, is](int64_t k) { return gp[k] * ((xp[k] - mu) * is); });
    }
    const double sum_g = lanes_g.total(), sum_gxhat = lanes_gxhat.total();
    if (gw != nullptr) gw[c] = static_cast<T>(sum_gxhat);
    if (gb != nullptr) gb[c] = static_cast<T>(sum_g);
    if (gx == nullptr) return;
    const double gamma_is = (w != nullptr ? static_cast<double>(w[c]) : 1.0) * is;
    const double mean_g = sum_g / M, mean_gxhat = sum_gxhat / M;
    for (int64_t n = 0; n < g.N; ++n) {
      const T* gp = gout + (n * g.C + c) * g.inner;
      const T* xp = x + (n * g.C + c) * g.inner;
      T* o = gx + (n * g.C + c) * g.inner;
      if (training) {
        for (int64_t k = 0; k < g.inner; ++k) {
          const double xhat = (xp[k] - mu) * is;
          o[k] = static_cast<T>(gamma_is * (gp[k] - mean_g - xhat * mean_gxhat));
        }
      } else {
        for (int64_t k = 0; k < g.inner; ++k) o[k] = static_cast<T>(gamma_is * gp[k]);
      }
    }
  });
}

Tensor contiguous_or_null(const Tensor& t) {
  return t.defined() ? t.contiguous() : Tensor();
}
Tensor to_or_null(const Tensor& t, DType d) {
  return t.defined() ? t.to(d) : Tensor();
}

struct BnForward {
  Tensor out, mean, invstd;  // mean/invstd [C] in the compute dtype (f32 for half inputs)
};

BnForward batch_norm_forward_raw(const Tensor& x, const Tensor& w, const Tensor& b,
                                 const Tensor& running_mean, const Tensor& running_var, bool training,
                                 double momentum, double eps, const BnGeometry& g) {
  if (x.device().is_cpu() && is_half(x.dtype())) {
    BnForward r =
        batch_norm_forward_raw(x.to(DType::f32), to_or_null(w, DType::f32), to_or_null(b, DType::f32),
                               running_mean, running_var, training, momentum, eps, g);
    r.out = r.out.to(x.dtype());
    return r;
  }
  const TensorOptions opts(x.dtype(), x.device());
  // The statistics stay in f32 for half inputs (here only on CUDA: the CPU computed in f32 above).
  const TensorOptions stat_opts(is_half(x.dtype()) ? DType::f32 : x.dtype(), x.device());
  BnForward r;
  r.out = empty(x.shape(), opts);
  r.mean = empty({g.C}, stat_opts);
  r.invstd = empty({g.C}, stat_opts);
  const Tensor xc = x.contiguous(), wc = contiguous_or_null(w), bc = contiguous_or_null(b);
  if (x.device().is_cuda()) {
    if (training)
      cuda_kernels::batch_norm_forward_training(r.out, r.mean, r.invstd, xc, wc, bc, running_mean,
                                                running_var, momentum, eps);
    else
      cuda_kernels::batch_norm_forward_inference(r.out, xc, wc, bc, running_mean, running_var, eps);
    // The backward pass needs (mean, invstd) in eval mode too; they are cheap [C] vectors.
    if (!training) {
      NoGradGuard ng;
      r.mean.copy_(running_mean);
      r.invstd.copy_(rsqrt(add(running_var.to(r.invstd.dtype()), eps)));
    }
    return r;
  }
  DGP_DISPATCH_FLOATING(x.dtype(), "batch_norm2d", [&] {
    scalar_t* mean = r.mean.data<scalar_t>();
    scalar_t* invstd = r.invstd.data<scalar_t>();
    if (training)
      batch_stats_cpu(xc.data<scalar_t>(), g, eps, momentum, running_mean, running_var, mean, invstd);
    else
      running_stats_cpu(running_mean, running_var, g, eps, mean, invstd);
    normalize_cpu(xc.data<scalar_t>(), wc.defined() ? wc.data<scalar_t>() : nullptr,
                  bc.defined() ? bc.data<scalar_t>() : nullptr, mean, invstd, r.out.data<scalar_t>(), g);
  });
  return r;
}

struct BnGrads {
  Tensor x, weight, bias;
};

BnGrads batch_norm_backward_raw(const Tensor& grad_out, const Tensor& x, const Tensor& w, const Tensor& mean,
                                const Tensor& invstd, const BnGeometry& g, bool training, bool need_x,
                                bool need_w, bool need_b) {
  const DType dtype = x.dtype();
  if (x.device().is_cpu() && is_half(dtype)) {
    BnGrads r = batch_norm_backward_raw(grad_out.to(DType::f32), x.to(DType::f32), to_or_null(w, DType::f32),
                                        mean, invstd, g, training, need_x, need_w, need_b);
    if (r.x.defined()) r.x = r.x.to(dtype);
    if (r.weight.defined()) r.weight = r.weight.to(dtype);
    if (r.bias.defined()) r.bias = r.bias.to(dtype);
    return r;
  }
  const TensorOptions opts(dtype, x.device());
  BnGrads r;
  if (need_x) r.x = empty(x.shape(), opts);
  if (need_w) r.weight = empty({g.C}, opts);
  if (need_b) r.bias = empty({g.C}, opts);
  const Tensor go = grad_out.contiguous(), xc = x.contiguous(), wc = contiguous_or_null(w);
  if (x.device().is_cuda()) {
    cuda_kernels::batch_norm_backward(r.x, r.weight, r.bias, go, xc, wc, mean, invstd, training);
    return r;
  }
  DGP_DISPATCH_FLOATING(dtype, "batch_norm2d backward", [&] {
    batch_norm_backward_cpu(go.data<scalar_t>(), xc.data<scalar_t>(),
                            wc.defined() ? wc.data<scalar_t>() : nullptr, mean.data<scalar_t>(),
                            invstd.data<scalar_t>(), need_x ? r.x.data<scalar_t>() : nullptr,
                            need_w ? r.weight.data<scalar_t>() : nullptr,
                            need_b ? r.bias.data<scalar_t>() : nullptr, g, training);
  });
  return r;
}

}  // namespace

Tensor batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                    Tensor running_var, bool training, double momentum, double eps) {
  const BnGeometry g = check_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps);
  BnForward f = batch_norm_forward_raw(x.detach(), weight.defined() ? weight.detach() : Tensor(),
                                       bias.defined() ? bias.detach() : Tensor(), running_mean, running_var,
                                       training, momentum, eps, g);
  if (needs_grad({x, weight, bias})) {
    const bool need_x = x.requires_grad();
    const bool need_w = weight.defined() && weight.requires_grad();
    const bool need_b = bias.defined() && bias.requires_grad();
    const Tensor saved_x = x.detach();
    const Tensor saved_w = weight.defined() ? weight.detach() : Tensor();
    const Tensor mean = f.mean, invstd = f.invstd;
    record("batch_norm2d", {x, weight, bias}, f.out,
           [g, saved_x, saved_w, mean, invstd, training, need_x, need_w,
            need_b](const std::vector<Tensor>& grads) {
             BnGrads r = batch_norm_backward_raw(grads[0], saved_x, saved_w, mean, invstd, g, training,
                                                 need_x, need_w, need_b);
             return std::vector<Tensor>{r.x, r.weight, r.bias};
           });
  }
  return f.out;
}

}  // namespace dgpipe::engine
