// 2-D pooling: max_pool2d, avg_pool2d and adaptive_avg_pool2d (checks, CPU loops, dispatch, autograd).
// Window geometry follows PyTorch (floor mode, dilation 1): Ho = (H + 2*padding - kernel) / stride + 1, and
// padding may be at most kernel/2 so that every window holds at least one real element.
// Inputs are [N,C,H,W]; a 3-D [C,H,W] input is treated as a batch of one. The CUDA twins are in
// pool_kernels.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "engine/ops.h"
#include "engine/ops/cpu_loops.h"
#include "engine/ops/pool_kernels.h"
#include "engine/parallel.h"

namespace dgpipe::engine {

namespace {

struct PoolGeometry {
  int64_t N = 0, C = 0, H = 0, W = 0, Ho = 0, Wo = 0;
  int64_t kernel = 1, stride = 1, padding = 0;
  int64_t planes() const { return N * C; }
};

void check_pool_input(const Tensor& x, const char* op) {
  DGP_CHECK(x.defined(), op << ": undefined input");
  DGP_CHECK(x.dim() == 4,
            op << ": expected a 3-D [C,H,W] or 4-D [N,C,H,W] input, got " << shape_str(x.shape()));
  DGP_CHECK(is_floating(x.dtype()), op << ": expected a floating input, got " << dtype_name(x.dtype())
                                       << " (input " << shape_str(x.shape()) << ")");
}

PoolGeometry check_window_pool(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding,
                               const char* op) {
  check_pool_input(x, op);
  DGP_CHECK(kernel >= 1 && stride >= 1 && padding >= 0,
            op << ": need kernel >= 1, stride >= 1, padding >= 0; got kernel " << kernel << ", stride "
               << stride << ", padding " << padding << " (input " << shape_str(x.shape()) << ")");
  DGP_CHECK(padding <= kernel / 2, op << ": padding " << padding << " must be at most half the kernel "
                                      << kernel << " (input " << shape_str(x.shape()) << ")");
  PoolGeometry g;
  g.N = x.size(0), g.C = x.size(1), g.H = x.size(2), g.W = x.size(3);
  g.kernel = kernel, g.stride = stride, g.padding = padding;
  DGP_CHECK(g.H + 2 * padding >= kernel && g.W + 2 * padding >= kernel,
            op << ": kernel " << kernel << " is larger than the padded input " << g.H + 2 * padding << "x"
               << g.W + 2 * padding << " (input " << shape_str(x.shape()) << ")");
  g.Ho = (g.H + 2 * padding - kernel) / stride + 1;
  g.Wo = (g.W + 2 * padding - kernel) / stride + 1;
  return g;
}

// Runs f on a 4-D version of x: a 3-D [C,H,W] input becomes a batch of one and the result loses that dim
// again.
template <class F>
Tensor with_batch_dim(const Tensor& x, const char* op, F&& f) {
  DGP_CHECK(x.defined(), op << ": undefined input");
  if (x.dim() == 3) return f(x.unsqueeze(0)).squeeze(0);
  return f(x);
}

Tensor empty_output(const PoolGeometry& g, const Tensor& x) {
  return empty({g.N, g.C, g.Ho, g.Wo}, TensorOptions(x.dtype(), x.device()));
}

// PyTorch's adaptive pooling bounds: cell o of `out` covers [floor(o*in/out), ceil((o+1)*in/out)).
inline int64_t adaptive_start(int64_t o, int64_t out, int64_t in) {
  return (o * in) / out;
}
inline int64_t adaptive_end(int64_t o, int64_t out, int64_t in) {
  return ((o + 1) * in + out - 1) / out;
}

// Calls f(plane) for every [H,W] plane, planes split over the op threads (engine/parallel.h). A plane is
// pooled by one thread alone, so the values do not depend on the thread count.
template <class F>
void for_each_plane(const PoolGeometry& g, F&& f) {
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, g.H * g.W));
  parallel_for(g.planes(), grain, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) f(plane);
  });
}

// ---------------- max ----------------

// Whether v replaces the best value so far: larger, or NaN (NaN wins, as in PyTorch, so that a NaN in the
// input is never hidden by pooling; of several NaNs the last in scan order wins).
template <class T>
inline bool max_pool_takes(T v, T best) {
  return v > best || std::isnan(v);
}

// The 2x2 window of stride 2 without padding (VGG's and most CNNs' pooling): the generic loop below with
// the window's bounds and scan order fixed, written without branches so that it does not stall on
// unpredictable comparisons. Rows and columns past the last full window (odd H or W) are not pooled, as in
// the generic loop. Outputs [ow_begin, Wo) of every row.
template <class T>
void max_pool_2x2_plane(const T* xp, T* op, int64_t* ip, const PoolGeometry& g, int64_t ow_begin = 0) {
  for (int64_t oh = 0; oh < g.Ho; ++oh) {
    const int64_t top = 2 * oh * g.W, bottom = top + g.W;
    for (int64_t ow = ow_begin; ow < g.Wo; ++ow) {
      const int64_t c[4] = {top + 2 * ow, top + 2 * ow + 1, bottom + 2 * ow, bottom + 2 * ow + 1};
      T best = xp[c[0]];  // what the generic loop's -inf start ends at after the first element
      int64_t best_index = c[0];
      for (int k = 1; k < 4; ++k) {
        const T v = xp[c[k]];
        const bool take = max_pool_takes(v, best);
        best = take ? v : best;
        best_index = take ? c[k] : best_index;
      }
      op[oh * g.Wo + ow] = best;
      ip[oh * g.Wo + ow] = best_index;
    }
  }
}

// f32: 8 windows of a row at a time in the compiler's vector lanes (two SSE2 registers on plain x86-64, one
// AVX register in the AVX2 clone), the same comparisons in the same order per window; the rest of each row
// as above. Indices are computed in 32 bits (a plane of 2^31 elements or more takes the loop above).
#if defined(__x86_64__)
__attribute__((target_clones("avx2", "default")))
#endif
void max_pool_2x2_plane_f32(const float* xp, float* op, int64_t* ip, const PoolGeometry& g) {
  typedef float Lanes __attribute__((vector_size(32)));
  typedef int32_t Mask __attribute__((vector_size(32)));
  typedef int64_t Wide __attribute__((vector_size(64)));
  constexpr int64_t kW = 8;
  const int64_t blocks = g.H * g.W < (int64_t(1) << 31) ? g.Wo / kW * kW : 0;
  const Mask even = {0, 2, 4, 6, 8, 10, 12, 14}, odd = {1, 3, 5, 7, 9, 11, 13, 15};
  const Mask lane = {0, 2, 4, 6, 8, 10, 12, 14};  // 2 * (ow - ow0)
  for (int64_t oh = 0; oh < g.Ho; ++oh) {
    const int64_t top = 2 * oh * g.W, bottom = top + g.W;
    for (int64_t ow = 0; ow < blocks; ow += kW) {
      Lanes t0, t1, b0, b1;
      std::memcpy(&t0, xp + top + 2 * ow, sizeof(Lanes));
      std::memcpy(&t1, xp + top + 2 * ow + kW, sizeof(Lanes));
      std::memcpy(&b0, xp + bottom + 2 * ow, sizeof(Lanes));
      std::memcpy(&b1, xp + bottom + 2 * ow + kW, sizeof(Lanes));
      const Mask first = static_cast<int32_t>(top + 2 * ow) + lane;
      Lanes best = __builtin_shuffle(t0, t1, even);
      Mask at = first;
      const Lanes candidates[3] = {__builtin_shuffle(t0, t1, odd), __builtin_shuffle(b0, b1, even),
                                   __builtin_shuffle(b0, b1, odd)};
      const int32_t offsets[3] = {1, static_cast<int32_t>(g.W), static_cast<int32_t>(g.W) + 1};
      for (int k = 0; k < 3; ++k) {
        const Lanes v = candidates[k];
        const Mask take = (v > best) | (v != v);  // max_pool_takes, lane by lane
        best = take ? v : best;
        at = take ? first + offsets[k] : at;
      }
      std::memcpy(op + oh * g.Wo + ow, &best, sizeof(Lanes));
      const Wide wide = __builtin_convertvector(at, Wide);
      std::memcpy(ip + oh * g.Wo + ow, &wide, sizeof(Wide));
    }
  }
  if (blocks < g.Wo) max_pool_2x2_plane(xp, op, ip, g, blocks);
}

template <class T>
void max_pool_forward_cpu(const T* x, T* out, int64_t* indices, const PoolGeometry& g) {
  const bool two_by_two = g.kernel == 2 && g.stride == 2 && g.padding == 0;
  for_each_plane(g, [&](int64_t plane) {
    const T* xp = x + plane * g.H * g.W;
    T* op = out + plane * g.Ho * g.Wo;
    int64_t* ip = indices + plane * g.Ho * g.Wo;
    if (two_by_two) {
      if constexpr (std::is_same_v<T, float>)
        max_pool_2x2_plane_f32(xp, op, ip, g);
      else
        max_pool_2x2_plane(xp, op, ip, g);
      return;
    }
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
      const int64_t h0 = std::max<int64_t>(oh * g.stride - g.padding, 0);
      const int64_t h1 = std::min(oh * g.stride - g.padding + g.kernel, g.H);
      for (int64_t ow = 0; ow < g.Wo; ++ow) {
        const int64_t w0 = std::max<int64_t>(ow * g.stride - g.padding, 0);
        const int64_t w1 = std::min(ow * g.stride - g.padding + g.kernel, g.W);
        T best = -std::numeric_limits<T>::infinity();
        int64_t best_index = h0 * g.W + w0;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) {
            const T v = xp[h * g.W + w];
            if (max_pool_takes(v, best)) {
              best = v;
              best_index = h * g.W + w;
            }
          }
        op[oh * g.Wo + ow] = best;
        ip[oh * g.Wo + ow] = best_index;
      }
    }
  });
}

template <class T>
void max_pool_backward_cpu(const T* gout, const int64_t* indices, T* gin, const PoolGeometry& g) {
  const int64_t P = g.Ho * g.Wo;
  for_each_plane(g, [&](int64_t plane) {
    T* gp = gin + plane * g.H * g.W;
    std::fill(gp, gp + g.H * g.W, T(0));
    for (int64_t k = 0; k < P; ++k) gp[indices[plane * P + k]] += gout[plane * P + k];
  });
}

Tensor max_pool_backward_raw(const Tensor& grad_out, const Tensor& indices, const PoolGeometry& g,
                             DType dtype) {
  if (grad_out.device().is_cpu() && is_half(dtype))
    return max_pool_backward_raw(grad_out.to(DType::f32), indices, g, DType::f32).to(dtype);
  Tensor gin = empty({g.N, g.C, g.H, g.W}, TensorOptions(dtype, grad_out.device()));
  const Tensor go = grad_out.contiguous();
  if (go.device().is_cuda()) {
    cuda_kernels::max_pool2d_backward(gin, go, indices);
    return gin;
  }
  DGP_DISPATCH_FLOATING(dtype, "max_pool2d backward", [&] {
    max_pool_backward_cpu(go.data<scalar_t>(), indices.data<int64_t>(), gin.data<scalar_t>(), g);
  });
  return gin;
}

Tensor max_pool2d_4d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  const PoolGeometry g = check_window_pool(x, kernel, stride, padding, "max_pool2d");
  const Tensor xc = x.detach().contiguous();
  Tensor out, indices;
  if (xc.device().is_cpu() && is_half(xc.dtype())) {
    Tensor x32 = xc.to(DType::f32);
    out = empty_output(g, x32);
    indices = empty({g.N, g.C, g.Ho, g.Wo}, TensorOptions(DType::i64, x.device()));
    max_pool_forward_cpu(x32.data<float>(), out.data<float>(), indices.data<int64_t>(), g);
    out = out.to(x.dtype());
  } else {
    out = empty_output(g, xc);
    indices = empty({g.N, g.C, g.Ho, g.Wo}, TensorOptions(DType::i64, x.device()));
    if (xc.device().is_cuda()) {
      cuda_kernels::max_pool2d_forward(out, indices, xc, kernel, stride, padding);
    } else {
      DGP_DISPATCH_FLOATING(xc.dtype(), "max_pool2d", [&] {
        max_pool_forward_cpu(xc.data<scalar_t>(), out.data<scalar_t>(), indices.data<int64_t>(), g);
      });
    }
  }
  if (needs_grad({x})) {
    const DType dtype = x.dtype();
    record("max_pool2d", {x}, out, [g, indices, dtype](const std::vector<Tensor>& grads) {
      return std::vector<Tensor>{max_pool_backward_raw(grads[0], indices, g, dtype)};
    });
  }
  return out;
}

// ---------------- average ----------------

// Window of output (oh, ow) clipped to the input, and its divisor counted over the padded extent.
struct AvgWindow {
  int64_t h0, h1, w0, w1, divisor;
};

inline AvgWindow avg_window(const PoolGeometry& g, int64_t oh, int64_t ow) {
  int64_t h0 = oh * g.stride - g.padding, w0 = ow * g.stride - g.padding;
  int64_t h1 = std::min(h0 + g.kernel, g.H + g.padding), w1 = std::min(w0 + g.kernel, g.W + g.padding);
  const int64_t divisor = (h1 - h0) * (w1 - w0);
  return AvgWindow{std::max<int64_t>(h0, 0), std::min(h1, g.H), std::max<int64_t>(w0, 0), std::min(w1, g.W),
                   divisor};
}

template <class T>
void avg_pool_forward_cpu(const T* x, T* out, const PoolGeometry& g) {
  for_each_plane(g, [&](int64_t plane) {
    const T* xp = x + plane * g.H * g.W;
    T* op = out + plane * g.Ho * g.Wo;
    for (int64_t oh = 0; oh < g.Ho; ++oh)
      for (int64_t ow = 0; ow < g.Wo; ++ow) {
        const AvgWindow win = avg_window(g, oh, ow);
        double acc = 0;
        for (int64_t h = win.h0; h < win.h1; ++h)
          for (int64_t w = win.w0; w < win.w1; ++w) acc += xp[h * g.W + w];
        op[oh * g.Wo + ow] = static_cast<T>(acc / static_cast<double>(win.divisor));
      }
  });
}

template <class T>
void avg_pool_backward_cpu(const T* gout, T* gin, const PoolGeometry& g) {
  for_each_plane(g, [&](int64_t plane) {
    T* gp = gin + plane * g.H * g.W;
    std::fill(gp, gp + g.H * g.W, T(0));
    const T* go = gout + plane * g.Ho * g.Wo;
    for (int64_t oh = 0; oh < g.Ho; ++oh)
      for (int64_t ow = 0; ow < g.Wo; ++ow) {
        const AvgWindow win = avg_window(g, oh, ow);
        const T share = go[oh * g.Wo + ow] / static_cast<T>(win.divisor);
        for (int64_t h = win.h0; h < win.h1; ++h)
          for (int64_t w = win.w0; w < win.w1; ++w) gp[h * g.W + w] += share;
      }
  });
}

Tensor avg_pool_forward_raw(const Tensor& x, const PoolGeometry& g) {
  if (x.device().is_cpu() && is_half(x.dtype()))
    return avg_pool_forward_raw(x.to(DType::f32), g).to(x.dtype());
  const Tensor xc = x.contiguous();
  Tensor out = empty_output(g, xc);
  if (xc.device().is_cuda()) {
    cuda_kernels::avg_pool2d_forward(out, xc, g.kernel, g.stride, g.padding);
    return out;
  }
  DGP_DISPATCH_FLOATING(xc.dtype(), "avg_pool2d",
                        [&] { avg_pool_forward_cpu(xc.data<scalar_t>(), out.data<scalar_t>(), g); });
  return out;
}

Tensor avg_pool_backward_raw(const Tensor& grad_out, const PoolGeometry& g, DType dtype) {
  if (grad_out.device().is_cpu() && is_half(dtype))
    return avg_pool_backward_raw(grad_out.to(DType::f32), g, DType::f32).to(dtype);
  Tensor gin = empty({g.N, g.C, g.H, g.W}, TensorOptions(dtype, grad_out.device()));
  const Tensor go = grad_out.contiguous();
  if (go.device().is_cuda()) {
    cuda_kernels::avg_pool2d_backward(gin, go, g.kernel, g.stride, g.padding);
    return gin;
  }
  DGP_DISPATCH_FLOATING(dtype, "avg_pool2d backward",
                        [&] { avg_pool_backward_cpu(go.data<scalar_t>(), gin.data<scalar_t>(), g); });
  return gin;
}

Tensor avg_pool2d_4d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  const PoolGeometry g = check_window_pool(x, kernel, stride, padding, "avg_pool2d");
  Tensor out = avg_pool_forward_raw(x.detach(), g);
  if (needs_grad({x})) {
    const DType dtype = x.dtype();
    record("avg_pool2d", {x}, out, [g, dtype](const std::vector<Tensor>& grads) {
      return std::vector<Tensor>{avg_pool_backward_raw(grads[0], g, dtype)};
    });
  }
  return out;
}

// ---------------- adaptive average ----------------

template <class T>
void adaptive_forward_cpu(const T* x, T* out, const PoolGeometry& g) {
  for_each_plane(g, [&](int64_t plane) {
    const T* xp = x + plane * g.H * g.W;
    T* op = out + plane * g.Ho * g.Wo;
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
      const int64_t h0 = adaptive_start(oh, g.Ho, g.H), h1 = adaptive_end(oh, g.Ho, g.H);
      for (int64_t ow = 0; ow < g.Wo; ++ow) {
        const int64_t w0 = adaptive_start(ow, g.Wo, g.W), w1 = adaptive_end(ow, g.Wo, g.W);
        double acc = 0;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) acc += xp[h * g.W + w];
        op[oh * g.Wo + ow] = static_cast<T>(acc / static_cast<double>((h1 - h0) * (w1 - w0)));
      }
    }
  });
}

template <class T>
void adaptive_backward_cpu(const T* gout, T* gin, const PoolGeometry& g) {
  for_each_plane(g, [&](int64_t plane) {
    T* gp = gin + plane * g.H * g.W;
    std::fill(gp, gp + g.H * g.W, T(0));
    const T* go = gout + plane * g.Ho * g.Wo;
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
      const int64_t h0 = adaptive_start(oh, g.Ho, g.H), h1 = adaptive_end(oh, g.Ho, g.H);
      for (int64_t ow = 0; ow < g.Wo; ++ow) {
        const int64_t w0 = adaptive_start(ow, g.Wo, g.W), w1 = adaptive_end(ow, g.Wo, g.W);
        const T share = go[oh * g.Wo + ow] / static_cast<T>((h1 - h0) * (w1 - w0));
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) gp[h * g.W + w] += share;
      }
    }
  });
}

Tensor adaptive_forward_raw(const Tensor& x, const PoolGeometry& g) {
  if (x.device().is_cpu() && is_half(x.dtype()))
    return adaptive_forward_raw(x.to(DType::f32), g).to(x.dtype());
  const Tensor xc = x.contiguous();
  Tensor out = empty_output(g, xc);
  if (xc.device().is_cuda()) {
    cuda_kernels::adaptive_avg_pool2d_forward(out, xc);
    return out;
  }
  DGP_DISPATCH_FLOATING(xc.dtype(), "adaptive_avg_pool2d",
                        [&] { adaptive_forward_cpu(xc.data<scalar_t>(), out.data<scalar_t>(), g); });
  return out;
}

Tensor adaptive_backward_raw(const Tensor& grad_out, const PoolGeometry& g, DType dtype) {
  if (grad_out.device().is_cpu() && is_half(dtype))
    return adaptive_backward_raw(grad_out.to(DType::f32), g, DType::f32).to(dtype);
  Tensor gin = empty({g.N, g.C, g.H, g.W}, TensorOptions(dtype, grad_out.device()));
  const Tensor go = grad_out.contiguous();
  if (go.device().is_cuda()) {
    cuda_kernels::adaptive_avg_pool2d_backward(gin, go);
    return gin;
  }
  DGP_DISPATCH_FLOATING(dtype, "adaptive_avg_pool2d backward",
                        [&] { adaptive_backward_cpu(go.data<scalar_t>(), gin.data<scalar_t>(), g); });
  return gin;
}

Tensor adaptive_avg_pool2d_4d(const Tensor& x, int64_t out_h, int64_t out_w) {
  check_pool_input(x, "adaptive_avg_pool2d");
  DGP_CHECK(out_h >= 1 && out_w >= 1, "adaptive_avg_pool2d: output size must be >= 1, got "
                                          << out_h << "x" << out_w << " (input " << shape_str(x.shape())
                                          << ")");
  PoolGeometry g;
  g.N = x.size(0), g.C = x.size(1), g.H = x.size(2), g.W = x.size(3), g.Ho = out_h, g.Wo = out_w;
  DGP_CHECK(g.H >= 1 && g.W >= 1, "adaptive_avg_pool2d: empty spatial input " << shape_str(x.shape()));
  Tensor out = adaptive_forward_raw(x.detach(), g);
  if (needs_grad({x})) {
    const DType dtype = x.dtype();
    record("adaptive_avg_pool2d", {x}, out, [g, dtype](const std::vector<Tensor>& grads) {
      return std::vector<Tensor>{adaptive_backward_raw(grads[0], g, dtype)};
    });
  }
  return out;
}

}  // namespace

Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  return with_batch_dim(x, "max_pool2d",
                        [&](const Tensor& x4) { return max_pool2d_4d(x4, kernel, stride, padding); });
}

Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  return with_batch_dim(x, "avg_pool2d",
                        [&](const Tensor& x4) { return avg_pool2d_4d(x4, kernel, stride, padding); });
}

Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  return with_batch_dim(x, "adaptive_avg_pool2d",
                        [&](const Tensor& x4) { return adaptive_avg_pool2d_4d(x4, out_h, out_w); });
}

}  // namespace dgpipe::engine
