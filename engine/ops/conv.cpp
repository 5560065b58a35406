// conv2d: checks, the reference CPU kernels (im2col + GEMM; a direct per-tap loop for depthwise), dispatch
// and autograd. f32 goes to oneDNN where the backend is onednn (conv_onednn.h); the GPU twin is cuDNN behind
// the launchers in conv_kernels.h.
//
// CPU layout: for one image and one group, im2col unrolls the input into col[K, Ho*Wo] with K = Cg*kh*kw
// (row (c, i, j) holds input channel c shifted by kernel tap (i, j)), so the convolution is the GEMM
// out_g[Og, Ho*Wo] = W_g[Og, K] * col. The backward pass reuses the same unrolling:
//   grad_col = W_g^T * grad_out_g, folded back into the input by col2im (overlapping taps add up),
//   grad_W_g += grad_out_g * col^T (summed over the batch).
#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/ops/conv_kernels.h"
#include "engine/ops/conv_onednn.h"
#include "engine/ops/cpu_loops.h"
#include "engine/ops/gemm.h"
#include "engine/parallel.h"

namespace dgpipe::engine {

namespace {

std::string describe(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p) {
  std::ostringstream s;
  s << " (input " << shape_str(x.shape()) << ", weight " << shape_str(w.shape());
  if (b.defined()) s << ", bias " << shape_str(b.shape());
  s << ", stride " << p.stride_h << "x" << p.stride_w << ", padding " << p.pad_h << "x" << p.pad_w
    << ", dilation " << p.dilation_h << "x" << p.dilation_w << ", groups " << p.groups << ")";
  return s.str();
}

ConvGeometry check_conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p) {
  DGP_CHECK(x.defined(), "conv2d: undefined input");
  DGP_CHECK(w.defined(), "conv2d: undefined weight");
  const std::string ctx = describe(x, w, b, p);
  DGP_CHECK(x.dim() == 4, "conv2d: expected a 4-D input [N,C,H,W], got " << shape_str(x.shape()) << ctx);
  DGP_CHECK(w.dim() == 4,
            "conv2d: expected a 4-D weight [O,C/groups,kh,kw], got " << shape_str(w.shape()) << ctx);
  DGP_CHECK(is_floating(x.dtype()),
            "conv2d: expected a floating input, got " << dtype_name(x.dtype()) << ctx);
  DGP_CHECK(x.dtype() == w.dtype(), "conv2d: dtype mismatch between input ("
                                        << dtype_name(x.dtype()) << ") and weight (" << dtype_name(w.dtype())
                                        << ")" << ctx);
  DGP_CHECK(x.device() == w.device(),
            "conv2d: input on " << x.device().str() << " but weight on " << w.device().str() << ctx);
  DGP_CHECK(p.groups >= 1, "conv2d: groups must be >= 1, got " << p.groups << ctx);
  DGP_CHECK(p.stride_h >= 1 && p.stride_w >= 1, "conv2d: stride must be >= 1" << ctx);
  DGP_CHECK(p.dilation_h >= 1 && p.dilation_w >= 1, "conv2d: dilation must be >= 1" << ctx);
  DGP_CHECK(p.pad_h >= 0 && p.pad_w >= 0, "conv2d: padding must be >= 0" << ctx);
  ConvGeometry g;
  g.p = p;
  g.N = x.size(0), g.C = x.size(1), g.H = x.size(2), g.W = x.size(3);
  g.O = w.size(0), g.kh = w.size(2), g.kw = w.size(3);
  DGP_CHECK(g.C % p.groups == 0,
            "conv2d: input channels " << g.C << " not divisible by groups " << p.groups << ctx);
  DGP_CHECK(g.O % p.groups == 0,
            "conv2d: output channels " << g.O << " not divisible by groups " << p.groups << ctx);
  g.Cg = g.C / p.groups;
  g.Og = g.O / p.groups;
  DGP_CHECK(w.size(1) == g.Cg, "conv2d: input has " << g.C << " channels, so with groups " << p.groups
                                                    << " weight dim 1 must be " << g.Cg << ", got "
                                                    << w.size(1) << ctx);
  DGP_CHECK(g.kh >= 1 && g.kw >= 1 && g.O >= 1, "conv2d: weight has an empty dimension" << ctx);
  if (b.defined()) {
    DGP_CHECK(b.dim() == 1 && b.size(0) == g.O,
              "conv2d: bias must have shape [" << g.O << "], got " << shape_str(b.shape()) << ctx);
    DGP_CHECK(b.dtype() == x.dtype(), "conv2d: bias dtype " << dtype_name(b.dtype())
                                                            << " differs from input dtype "
                                                            << dtype_name(x.dtype()) << ctx);
    DGP_CHECK(b.device() == x.device(),
              "conv2d: bias on " << b.device().str() << " but input on " << x.device().str() << ctx);
  }
  const int64_t span_h = p.dilation_h * (g.kh - 1) + 1, span_w = p.dilation_w * (g.kw - 1) + 1;
  DGP_CHECK(span_h <= g.H + 2 * p.pad_h && span_w <= g.W + 2 * p.pad_w,
            "conv2d: dilated kernel " << span_h << "x" << span_w << " is larger than the padded input "
                                      << g.H + 2 * p.pad_h << "x" << g.W + 2 * p.pad_w << ctx);
  g.Ho = (g.H + 2 * p.pad_h - span_h) / p.stride_h + 1;
  g.Wo = (g.W + 2 * p.pad_w - span_w) / p.stride_w + 1;
  return g;
}

// Output columns [lo, hi) whose input column o*stride + offset lies inside [0, extent): the taps outside are
// padding, handled without a branch in the inner loop.
inline void valid_range(int64_t out_extent, int64_t in_extent, int64_t stride, int64_t offset, int64_t& lo,
                        int64_t& hi) {
  lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  hi = in_extent - 1 - offset >= 0 ? (in_extent - 1 - offset) / stride + 1 : 0;
  lo = std::min(lo, out_extent);
  hi = std::max(lo, std::min(hi, out_extent));
}

// ---------------- CPU kernels (contiguous NCHW) ----------------

// The inner loops of the direct (depthwise) kernels, with a unit-stride version the compiler can vectorise.
template <class T>
inline void axpy_gather(T* y, const T* x, T a, int64_t lo, int64_t hi, int64_t stride) {  // y[o] += a*x[o*s]
  if (stride == 1)
    for (int64_t o = lo; o < hi; ++o) y[o] += a * x[o];
  else
    for (int64_t o = lo; o < hi; ++o) y[o] += a * x[o * stride];
}
template <class T>
inline void axpy_scatter(T* y, const T* x, T a, int64_t lo, int64_t hi, int64_t stride) {  // y[o*s] += a*x[o]
  if (stride == 1)
    for (int64_t o = lo; o < hi; ++o) y[o] += a * x[o];
  else
    for (int64_t o = lo; o < hi; ++o) y[o * stride] += a * x[o];
}
// acc[o] += g[o] * x[o*s]: an elementwise product into a row of partial sums (a scalar running sum would be
// a serial dependency chain that cannot be vectorised without reassociating).
template <class T>
inline void mul_acc_gather(T* acc, const T* g, const T* x, int64_t lo, int64_t hi, int64_t stride) {
  if (stride == 1)
    for (int64_t o = lo; o < hi; ++o) acc[o] += g[o] * x[o];
  else
    for (int64_t o = lo; o < hi; ++o) acc[o] += g[o] * x[o * stride];
}

// x: one image's group [Cg,H,W] -> col [K, Ho*Wo].
template <class T>
void im2col(const T* x, const ConvGeometry& g, T* col) {
  const Conv2dParams& p = g.p;
  for (int64_t c = 0; c < g.Cg; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        T* row = col + ((c * g.kh + i) * g.kw + j) * g.out_plane();
        const int64_t off_w = j * p.dilation_w - p.pad_w;
        int64_t lo, hi;
        valid_range(g.Wo, g.W, p.stride_w, off_w, lo, hi);
        for (int64_t oh = 0; oh < g.Ho; ++oh) {
          T* r = row + oh * g.Wo;
          const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dilation_h;
          if (ih < 0 || ih >= g.H) {
            std::fill(r, r + g.Wo, T(0));
            continue;
          }
          const T* xr = x + (c * g.H + ih) * g.W + off_w;
          std::fill(r, r + lo, T(0));
          for (int64_t ow = lo; ow < hi; ++ow) r[ow] = xr[ow * p.stride_w];
          std::fill(r + hi, r + g.Wo, T(0));
        }
      }
}

// The adjoint of im2col: adds col [K, Ho*Wo] back into x [Cg,H,W] (x must be initialised by the caller).
template <class T>
void col2im_add(const T* col, const ConvGeometry& g, T* x) {
  const Conv2dParams& p = g.p;
  for (int64_t c = 0; c < g.Cg; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        const T* row = col + ((c * g.kh + i) * g.kw + j) * g.out_plane();
        const int64_t off_w = j * p.dilation_w - p.pad_w;
        int64_t lo, hi;
        valid_range(g.Wo, g.W, p.stride_w, off_w, lo, hi);
        for (int64_t oh = 0; oh < g.Ho; ++oh) {
          const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dilation_h;
          if (ih < 0 || ih >= g.H) continue;
          const T* r = row + oh * g.Wo;
          T* xr = x + (c * g.H + ih) * g.W + off_w;
          for (int64_t ow = lo; ow < hi; ++ow) xr[ow * p.stride_w] += r[ow];
        }
      }
}

// Calls f(begin, end) over ranges of images, split over cpu_threads(). Images are independent in the forward
// pass and in the input gradient, so every output element is computed as in the serial loop.
template <class F>
void for_images(const ConvGeometry& g, F&& f) {
  parallel_for(g.N, 1, f);
}

template <class T>
void conv_forward_gemm(const T* x, const T* w, const T* b, T* out, const ConvGeometry& g) {
  const int64_t K = g.K(), P = g.out_plane();
  for_images(g, [&](int64_t n0, int64_t n1) {
    std::vector<T> col(g.col_is_input() ? 0 : static_cast<size_t>(K * P));  // one per thread
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t grp = 0; grp < g.p.groups; ++grp) {
        const T* xg = x + (n * g.C + grp * g.Cg) * g.in_plane();
        const T* colp = xg;
        if (!g.col_is_input()) {
          im2col(xg, g, col.data());
          colp = col.data();
        }
        cpu::gemm(false, false, g.Og, P, K, T(1), w + grp * g.Og * K, K, colp, P, T(0),
                  out + (n * g.O + grp * g.Og) * P, P);
        if (b != nullptr)
          for (int64_t o = grp * g.Og; o < (grp + 1) * g.Og; ++o) {
            T* plane = out + (n * g.O + o) * P;
            for (int64_t k = 0; k < P; ++k) plane[k] += b[o];
          }
      }
  });
}

// Depthwise: output channel oc reads input channel oc / Og only. Loops over taps outermost so the innermost
// loop is a strided axpy over one output row.
template <class T>
void conv_forward_depthwise(const T* x, const T* w, const T* b, T* out, const ConvGeometry& g) {
  const Conv2dParams& p = g.p;
  const int64_t P = g.out_plane();
  parallel_for(g.N * g.O, std::max<int64_t>(1, 4096 / P), [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / g.O, oc = plane % g.O;
      T* o = out + plane * P;
      std::fill(o, o + P, b != nullptr ? b[oc] : T(0));
      const T* xc = x + (n * g.C + oc / g.Og) * g.in_plane();
      for (int64_t i = 0; i < g.kh; ++i)
        for (int64_t j = 0; j < g.kw; ++j) {
          const T wv = w[(oc * g.kh + i) * g.kw + j];
          const int64_t off_w = j * p.dilation_w - p.pad_w;
          int64_t lo, hi;
          valid_range(g.Wo, g.W, p.stride_w, off_w, lo, hi);
          for (int64_t oh = 0; oh < g.Ho; ++oh) {
            const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dilation_h;
            if (ih < 0 || ih >= g.H) continue;
            const T* xr = xc + ih * g.W + off_w;
            T* orow = o + oh * g.Wo;
            axpy_gather(orow, xr, wv, lo, hi, p.stride_w);
          }
        }
    }
  });
}

// grad_w += grad_out_g * col^T over every (image, group) in the serial order, so the sum does not depend on
// the thread count: the threads unroll the next cpu_threads() columns at once, the GEMMs then run in order.
template <class T>
void conv_weight_grad_gemm(const T* gout, const T* x, T* grad_w, const ConvGeometry& g) {
  const int64_t K = g.K(), P = g.out_plane(), units = g.N * g.p.groups;
  const int64_t ahead = g.col_is_input() ? units : std::min<int64_t>(cpu_threads(), units);
  std::vector<T> cols(g.col_is_input() ? 0 : static_cast<size_t>(ahead * K * P));
  const auto input_of = [&](int64_t u) {
    return x + ((u / g.p.groups) * g.C + (u % g.p.groups) * g.Cg) * g.in_plane();
  };
  std::fill(grad_w, grad_w + g.O * K, T(0));
  for (int64_t u0 = 0; u0 < units; u0 += ahead) {
    const int64_t u1 = std::min(units, u0 + ahead);
    if (!g.col_is_input())
      parallel_for(u1 - u0, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) im2col(input_of(u0 + i), g, cols.data() + i * K * P);
      });
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t n = u / g.p.groups, grp = u % g.p.groups;
      const T* colp = g.col_is_input() ? input_of(u) : cols.data() + (u - u0) * K * P;
      cpu::gemm(false, true, g.Og, K, P, T(1), gout + (n * g.O + grp * g.Og) * P, P, colp, P, T(1),
                grad_w + grp * g.Og * K, K);
    }
  }
}

// grad_in = col2im(W_g^T * grad_out_g), images split over the threads.
template <class T>
void conv_input_grad_gemm(const T* gout, const T* w, T* grad_in, const ConvGeometry& g) {
  const int64_t K = g.K(), P = g.out_plane();
  if (!g.col_is_input()) std::fill(grad_in, grad_in + g.N * g.C * g.in_plane(), T(0));
  for_images(g, [&](int64_t n0, int64_t n1) {
    std::vector<T> col(g.col_is_input() ? 0 : static_cast<size_t>(K * P));  // one per thread
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t grp = 0; grp < g.p.groups; ++grp) {
        const T* go = gout + (n * g.O + grp * g.Og) * P;
        const T* wg = w + grp * g.Og * K;
        T* gi = grad_in + (n * g.C + grp * g.Cg) * g.in_plane();
        if (g.col_is_input()) {
          // grad_col is the input gradient itself (same [Cg, H*W] layout).
          cpu::gemm(true, false, K, P, g.Og, T(1), wg, K, go, P, T(0), gi, P);
        } else {
          cpu::gemm(true, false, K, P, g.Og, T(1), wg, K, go, P, T(0), col.data(), P);
          col2im_add(col.data(), g, gi);
        }
      }
  });
}

// One (image, output channel) of the depthwise backward: adds into that image's input-channel gradient and
// into the channel's weight-gradient sums wacc[taps] (both may be null). acc_row: Wo scratch values.
template <class T>
void depthwise_backward_plane(const T* go, const T* x, const T* w, T* grad_in, double* wacc, T* acc_row,
                              const ConvGeometry& g) {
  const Conv2dParams& p = g.p;
  for (int64_t i = 0; i < g.kh; ++i)
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t off_w = j * p.dilation_w - p.pad_w;
      int64_t lo, hi;
      valid_range(g.Wo, g.W, p.stride_w, off_w, lo, hi);
      const T wv = w != nullptr ? w[i * g.kw + j] : T(0);
      if (wacc != nullptr) std::fill(acc_row, acc_row + g.Wo, T(0));
      for (int64_t oh = 0; oh < g.Ho; ++oh) {
        const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dilation_h;
        if (ih < 0 || ih >= g.H) continue;
        const T* gr = go + oh * g.Wo;
        const int64_t row = ih * g.W + off_w;
        if (grad_in != nullptr) axpy_scatter(grad_in + row, gr, wv, lo, hi, p.stride_w);
        if (wacc != nullptr) mul_acc_gather(acc_row, gr, x + row, lo, hi, p.stride_w);
      }
      if (wacc != nullptr)
        for (int64_t ow = lo; ow < hi; ++ow) wacc[i * g.kw + j] += acc_row[ow];
    }
}

// Input channels split over the threads; within one, images then output channels in the serial order, so each
// weight-gradient sum (over images) and each input-gradient element (over output channels) adds up as before.
template <class T>
void conv_backward_depthwise(const T* gout, const T* x, const T* w, T* grad_in, T* grad_w,
                             const ConvGeometry& g) {
  const int64_t P = g.out_plane(), taps = g.kh * g.kw;
  if (grad_in != nullptr) std::fill(grad_in, grad_in + g.N * g.C * g.in_plane(), T(0));
  std::vector<double> wacc(grad_w != nullptr ? static_cast<size_t>(g.O * taps) : 0, 0.0);
  parallel_for(g.C, 1, [&](int64_t c0, int64_t c1) {
    std::vector<T> acc_row(static_cast<size_t>(g.Wo), T(0));  // per-column partial sums of one tap's gradient
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t n = 0; n < g.N; ++n)
        for (int64_t oc = c * g.Og; oc < (c + 1) * g.Og; ++oc) {
          const int64_t in_off = (n * g.C + c) * g.in_plane();
          depthwise_backward_plane(gout + (n * g.O + oc) * P, x != nullptr ? x + in_off : nullptr,
                                   w != nullptr ? w + oc * taps : nullptr,
                                   grad_in != nullptr ? grad_in + in_off : nullptr,
                                   grad_w != nullptr ? wacc.data() + oc * taps : nullptr, acc_row.data(), g);
        }
  });
  if (grad_w != nullptr)
    for (int64_t k = 0; k < g.O * taps; ++k) grad_w[k] = static_cast<T>(wacc[k]);
}

// grad_b[o] = the sum of channel o's output gradient over images and positions: channels split over the op
// threads, each summed by one thread in lanes (cpu_loops.h), so the bits do not depend on the thread count.
template <class T>
void conv_backward_bias(const T* gout, T* grad_b, const ConvGeometry& g) {
  const int64_t P = g.out_plane();
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, g.N * P));
  parallel_for(g.O, grain, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      cpu::LaneSums acc;
      for (int64_t n = 0; n < g.N; ++n) {
        const T* plane = gout + (n * g.O + o) * P;
        cpu::add_row(acc, P, [plane](int64_t k) { return static_cast<double>(plane[k]); });
      }
      grad_b[o] = static_cast<T>(acc.total());
    }
  });
}

// oneDNN takes the f32 convolutions (f16/bf16 arrive here converted to f32) but depthwise, which keeps its
// direct loop; f64 has no oneDNN convolution and stays on the reference kernels.
bool uses_onednn(DType dtype, const ConvGeometry& g) {
  return dtype == DType::f32 && !g.depthwise() && cpu_conv_backend() == CpuConvBackend::onednn;
}

Tensor contiguous_or_null(const Tensor& t) {
  return t.defined() ? t.contiguous() : Tensor();
}

// ---------------- raw dispatch (no autograd; inputs already checked and detached) ----------------

Tensor conv2d_forward_raw(const Tensor& x, const Tensor& w, const Tensor& b, const ConvGeometry& g) {
  if (x.device().is_cpu() && is_half(x.dtype())) {
    Tensor b32 = b.defined() ? b.to(DType::f32) : Tensor();
    return conv2d_forward_raw(x.to(DType::f32), w.to(DType::f32), b32, g).to(x.dtype());
  }
  Tensor out = empty({g.N, g.O, g.Ho, g.Wo}, TensorOptions(x.dtype(), x.device()));
  const Tensor xc = x.contiguous(), wc = w.contiguous(), bc = contiguous_or_null(b);
  if (x.device().is_cuda()) {
    cuda_kernels::conv2d_forward(out, xc, wc, bc, g.p);
    return out;
  }
  if (uses_onednn(x.dtype(), g) &&
      onednn::conv_forward(xc.data<float>(), wc.data<float>(), bc.defined() ? bc.data<float>() : nullptr,
                           out.data<float>(), g))
    return out;
  DGP_DISPATCH_FLOATING(x.dtype(), "conv2d", [&] {
    const scalar_t* bp = bc.defined() ? bc.data<scalar_t>() : nullptr;
    if (g.depthwise())
      conv_forward_depthwise(xc.data<scalar_t>(), wc.data<scalar_t>(), bp, out.data<scalar_t>(), g);
    else
      conv_forward_gemm(xc.data<scalar_t>(), wc.data<scalar_t>(), bp, out.data<scalar_t>(), g);
  });
  return out;
}

struct ConvGrads {
  Tensor input, weight, bias;
};

// x is needed only for the weight gradient, w only for the input gradient.
ConvGrads conv2d_backward_raw(const Tensor& grad_out, const Tensor& x, const Tensor& w, const ConvGeometry& g,
                              DType dtype, bool need_input, bool need_weight, bool need_bias) {
  if (grad_out.device().is_cpu() && is_half(dtype)) {
    ConvGrads r = conv2d_backward_raw(grad_out.to(DType::f32), x.defined() ? x.to(DType::f32) : Tensor(),
                                      w.defined() ? w.to(DType::f32) : Tensor(), g, DType::f32, need_input,
                                      need_weight, need_bias);
    if (r.input.defined()) r.input = r.input.to(dtype);
    if (r.weight.defined()) r.weight = r.weight.to(dtype);
    if (r.bias.defined()) r.bias = r.bias.to(dtype);
    return r;
  }
  const TensorOptions opts(dtype, grad_out.device());
  ConvGrads r;
  if (need_input) r.input = empty({g.N, g.C, g.H, g.W}, opts);
  if (need_weight) r.weight = empty({g.O, g.Cg, g.kh, g.kw}, opts);
  if (need_bias) r.bias = empty({g.O}, opts);
  const Tensor go = grad_out.contiguous();
  const Tensor xc = need_weight ? x.contiguous() : Tensor();
  const Tensor wc = need_input ? w.contiguous() : Tensor();
  if (go.device().is_cuda()) {
    if (need_input) cuda_kernels::conv2d_backward_data(r.input, go, wc, g.p);
    if (need_weight) cuda_kernels::conv2d_backward_filter(r.weight, go, xc, g.p);
    if (need_bias) cuda_kernels::conv2d_backward_bias(r.bias, go);
    return r;
  }
  bool onednn_data = false, onednn_weights = false;
  if (uses_onednn(dtype, g)) {
    if (need_input)
      onednn_data = onednn::conv_backward_data(go.data<float>(), wc.data<float>(), r.input.data<float>(), g);
    if (need_weight)
      onednn_weights =
          onednn::conv_backward_weights(go.data<float>(), xc.data<float>(), r.weight.data<float>(), g);
  }
  DGP_DISPATCH_FLOATING(dtype, "conv2d backward", [&] {
    const scalar_t* gp = go.data<scalar_t>();
    const scalar_t* xp = need_weight ? xc.data<scalar_t>() : nullptr;
    const scalar_t* wp = need_input ? wc.data<scalar_t>() : nullptr;
    scalar_t* gi = need_input ? r.input.data<scalar_t>() : nullptr;
    scalar_t* gw = need_weight ? r.weight.data<scalar_t>() : nullptr;
    if (g.depthwise() && (need_input || need_weight)) {
      conv_backward_depthwise(gp, xp, wp, gi, gw, g);
    } else {
      if (need_weight && !onednn_weights) conv_weight_grad_gemm(gp, xp, gw, g);
      if (need_input && !onednn_data) conv_input_grad_gemm(gp, wp, gi, g);
    }
    if (need_bias) conv_backward_bias(gp, r.bias.data<scalar_t>(), g);
  });
  return r;
}

}  // namespace

Tensor conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias, const Conv2dParams& p) {
  const ConvGeometry g = check_conv2d(input, weight, bias, p);
  Tensor out =
      conv2d_forward_raw(input.detach(), weight.detach(), bias.defined() ? bias.detach() : Tensor(), g);
  if (needs_grad({input, weight, bias})) {
    const bool need_input = input.requires_grad();
    const bool need_weight = weight.requires_grad();
    const bool need_bias = bias.defined() && bias.requires_grad();
    // Save only what the requested gradients read: the input for the weight gradient and vice versa.
    const Tensor saved_x = need_weight ? input.detach() : Tensor();
    const Tensor saved_w = need_input ? weight.detach() : Tensor();
    const DType dtype = input.dtype();
    record(
        "conv2d", {input, weight, bias}, out,
        [g, saved_x, saved_w, dtype, need_input, need_weight, need_bias](const std::vector<Tensor>& grads) {
          ConvGrads r =
              conv2d_backward_raw(grads[0], saved_x, saved_w, g, dtype, need_input, need_weight, need_bias);
          return std::vector<Tensor>{r.input, r.weight, r.bias};
        });
  }
  return out;
}

}  // namespace dgpipe::engine
