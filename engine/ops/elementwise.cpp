// Elementwise ops: dispatch, broadcasting, autograd, and the CPU loops.
#include <cmath>
#include <limits>

#include "engine/ops.h"
#include "engine/ops/copy_kernels.h"
#include "engine/ops/cpu_loops.h"
#include "engine/ops/elementwise_kernels.h"
#include "engine/ops/vec_math.h"
#include "engine/parallel.h"

namespace dgpipe::engine {

namespace {

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    DGP_CHECK(da == db || da == 1 || db == 1,
              op << ": shapes " << shape_str(a) << " and " << shape_str(b) << " cannot be broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

void check_pair(const Tensor& a, const Tensor& b, const char* op) {
  DGP_CHECK(a.defined() && b.defined(), op << ": undefined input");
  DGP_CHECK(a.device() == b.device(), op << ": inputs on different devices (" << a.device().str() << " and "
                                         << b.device().str() << ")");
  DGP_CHECK(a.dtype() == b.dtype(), op << ": dtype mismatch (" << dtype_name(a.dtype()) << " and "
                                       << dtype_name(b.dtype()) << "); cast one input first");
}

void check_floating(const Tensor& a, const char* op) {
  DGP_CHECK(a.defined(), op << ": undefined input");
  DGP_CHECK(is_floating(a.dtype()), op << ": expected a floating tensor, got " << dtype_name(a.dtype()));
}

// ---- raw kernels (no autograd) ----

// Contiguous elementwise loops are split over cpu_threads() in chunks of at least this many elements: below
// it, waking a worker costs more than the loop.
constexpr int64_t kElementwiseGrain = 1 << 15;

// The op is a template argument, so its switch folds away and the loop vectorises where the formula allows.
template <UnaryOp OP, class T>
void unary_contiguous(T* o, const T* p, int64_t n, double a, double b) {
  parallel_for(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) o[i] = unary_apply<T>(OP, p[i], a, b);
  });
}

// f32 GELU and its backward go through the vectorised float erf and exp of vec_math.h (which compute every
// element the same way wherever a thread's chunk starts); f64 keeps the library functions.
template <>
void unary_contiguous<UnaryOp::gelu, float>(float* o, const float* p, int64_t n, double, double) {
  parallel_for(n, kElementwiseGrain,
               [&](int64_t begin, int64_t end) { cpu::gelu_forward(p + begin, end - begin, o + begin); });
}

// Ops whose f32 CPU kernel exists only for contiguous operands: a strided operand is copied first, so a
// view gets the same bits as its contiguous copy.
bool f32_needs_contiguous(DType dtype, UnaryOp op) {
  return dtype == DType::f32 && op == UnaryOp::gelu;
}
bool f32_needs_contiguous(DType dtype, BinaryOp op) {
  return dtype == DType::f32 && op == BinaryOp::gelu_backward;
}

template <class T>
void unary_contiguous(T* o, const T* p, int64_t n, UnaryOp op, double a, double b) {
  switch (op) {
#define DGP_UNARY_CASE(NAME) \
  case UnaryOp::NAME:        \
    return unary_contiguous<UnaryOp::NAME, T>(o, p, n, a, b);
    DGP_UNARY_CASE(neg)
    DGP_UNARY_CASE(exp)
    DGP_UNARY_CASE(log)
    DGP_UNARY_CASE(sqrt)
    DGP_UNARY_CASE(rsqrt)
    DGP_UNARY_CASE(abs)
    DGP_UNARY_CASE(relu)
    DGP_UNARY_CASE(relu6)
    DGP_UNARY_CASE(gelu)
    DGP_UNARY_CASE(tanh)
    DGP_UNARY_CASE(sigmoid)
    DGP_UNARY_CASE(add_scalar)
    DGP_UNARY_CASE(mul_scalar)
    DGP_UNARY_CASE(rsub_scalar)
    DGP_UNARY_CASE(rdiv_scalar)
    DGP_UNARY_CASE(pow_scalar)
    DGP_UNARY_CASE(clamp)
#undef DGP_UNARY_CASE
  }
}

Tensor unary_raw(const Tensor& x, UnaryOp op, double a, double b, const char* name) {
  check_floating(x, name);
  if (x.device().is_cpu() && is_half(x.dtype()))
    return unary_raw(x.to(DType::f32), op, a, b, name).to(x.dtype());
  if (x.device().is_cpu() && !x.is_contiguous() && f32_needs_contiguous(x.dtype(), op))
    return unary_raw(x.contiguous(), op, a, b, name);
  Tensor out = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  if (x.device().is_cuda()) {
    cuda_kernels::unary(out, x, op, a, b);
    return out;
  }
  DGP_DISPATCH_FLOATING(x.dtype(), name, [&] {
    scalar_t* o = out.data<scalar_t>();
    const scalar_t* in = static_cast<const scalar_t*>(x.storage()->data());
    if (x.is_contiguous()) {
      unary_contiguous<scalar_t>(o, in + x.offset(), x.numel(), op, a, b);
    } else {
      std::array<const int64_t*, 1> st{x.strides().data()};
      int64_t i = 0;
      cpu::for_each_offset<1>(x.shape(), st, {x.offset()}, [&](const std::array<int64_t, 1>& off) {
        o[i++] = unary_apply<scalar_t>(op, in[off[0]], a, b);
      });
    }
  });
  return out;
}

// o[i] = x[i * sx] OP y[i * sy] for i < n, strides 0 or 1: one loop per combination, so each vectorises.
template <BinaryOp OP, class T>
void binary_row(T* o, const T* x, int64_t sx, const T* y, int64_t sy, int64_t n) {
  if (sx == 1 && sy == 1) {
    for (int64_t i = 0; i < n; ++i) o[i] = binary_apply<T>(OP, x[i], y[i]);
  } else if (sx == 1) {
    const T b = y[0];
    for (int64_t i = 0; i < n; ++i) o[i] = binary_apply<T>(OP, x[i], b);
  } else if (sy == 1) {
    const T a = x[0];
    for (int64_t i = 0; i < n; ++i) o[i] = binary_apply<T>(OP, a, y[i]);
  } else {
    const T v = binary_apply<T>(OP, x[0], y[0]);
    for (int64_t i = 0; i < n; ++i) o[i] = v;
  }
}

template <BinaryOp OP, class T>
void binary_loop(T* o, const Tensor& xe, const Tensor& ye) {
  const T* xs = static_cast<const T*>(xe.storage()->data());
  const T* ys = static_cast<const T*>(ye.storage()->data());
  if (xe.is_contiguous() && ye.is_contiguous()) {
    const T* xp = xs + xe.offset();
    const T* yp = ys + ye.offset();
    parallel_for(xe.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) o[i] = binary_apply<T>(OP, xp[i], yp[i]);
    });
    return;
  }
  std::array<const int64_t*, 2> st{xe.strides().data(), ye.strides().data()};
  const Shape& shape = xe.shape();
  const int64_t n = xe.numel();
  auto unit_or_zero = [](int64_t s) { return s == 0 || s == 1; };
  if (n > 0 && !shape.empty() && unit_or_zero(xe.stride(-1)) && unit_or_zero(ye.stride(-1))) {
    // Rows of unit or zero stride (a broadcast bias or attention mask): a plain loop per row that
    // vectorises, the rows split over the threads.
    const int64_t inner = shape.back(), sx = xe.stride(-1), sy = ye.stride(-1);
    parallel_for(n / inner, std::max<int64_t>(1, kElementwiseGrain / inner), [&](int64_t r0, int64_t r1) {
      cpu::for_each_row<2>(shape, st, {xe.offset(), ye.offset()}, r0, r1,
                           [&](int64_t r, const std::array<int64_t, 2>& off) {
                             binary_row<OP, T>(o + r * inner, xs + off[0], sx, ys + off[1], sy, inner);
                           });
    });
    return;
  }
  int64_t i = 0;
  cpu::for_each_offset<2>(shape, st, {xe.offset(), ye.offset()}, [&](const std::array<int64_t, 2>& off) {
    o[i++] = binary_apply<T>(OP, xs[off[0]], ys[off[1]]);
  });
}

template <>
void binary_loop<BinaryOp::gelu_backward, float>(float* o, const Tensor& ge, const Tensor& xe) {
  const float* g = ge.data<float>();
  const float* x = xe.data<float>();
  parallel_for(ge.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
    cpu::gelu_backward(g + begin, x + begin, end - begin, o + begin);
  });
}

template <class T>
void binary_cpu(T* o, const Tensor& xe, const Tensor& ye, BinaryOp op) {
  switch (op) {
    case BinaryOp::add:
      return binary_loop<BinaryOp::add, T>(o, xe, ye);
    case BinaryOp::sub:
      return binary_loop<BinaryOp::sub, T>(o, xe, ye);
    case BinaryOp::mul:
      return binary_loop<BinaryOp::mul, T>(o, xe, ye);
    case BinaryOp::div:
      return binary_loop<BinaryOp::div, T>(o, xe, ye);
    case BinaryOp::relu_backward:
      return binary_loop<BinaryOp::relu_backward, T>(o, xe, ye);
    case BinaryOp::relu6_backward:
      return binary_loop<BinaryOp::relu6_backward, T>(o, xe, ye);
    case BinaryOp::gelu_backward:
      return binary_loop<BinaryOp::gelu_backward, T>(o, xe, ye);
    case BinaryOp::tanh_backward:
      return binary_loop<BinaryOp::tanh_backward, T>(o, xe, ye);
    case BinaryOp::sigmoid_backward:
      return binary_loop<BinaryOp::sigmoid_backward, T>(o, xe, ye);
  }
}

Tensor binary_raw(const Tensor& x, const Tensor& y, BinaryOp op, const char* name) {
  check_pair(x, y, name);
  check_floating(x, name);
  if (x.device().is_cpu() && is_half(x.dtype()))
    return binary_raw(x.to(DType::f32), y.to(DType::f32), op, name).to(x.dtype());
  Shape shape = broadcast_shapes(x.shape(), y.shape(), name);
  Tensor xe = x.shape() == shape ? x : x.detach().expand(shape);
  Tensor ye = y.shape() == shape ? y : y.detach().expand(shape);
  if (x.device().is_cpu() && f32_needs_contiguous(x.dtype(), op)) {
    xe = xe.contiguous();
    ye = ye.contiguous();
  }
  Tensor out = empty(shape, TensorOptions(x.dtype(), x.device()));
  if (x.device().is_cuda()) {
    cuda_kernels::binary(out, xe, ye, op);
    return out;
  }
  DGP_DISPATCH_FLOATING(x.dtype(), name, [&] { binary_cpu<scalar_t>(out.data<scalar_t>(), xe, ye, op); });
  return out;
}

Tensor compare_raw(const Tensor& x, const Tensor& y, CompareOp op, const char* name) {
  check_pair(x, y, name);
  Shape shape = broadcast_shapes(x.shape(), y.shape(), name);
  Tensor xe = x.detach().expand(shape), ye = y.detach().expand(shape);
  Tensor out = empty(shape, TensorOptions(DType::boolean, x.device()));
  if (x.device().is_cuda()) {
    cuda_kernels::compare(out, xe, ye, op);
    return out;
  }
  uint8_t* o = static_cast<uint8_t*>(out.raw_data());
  const void* xs = xe.storage()->data();
  const void* ys = ye.storage()->data();
  DType t = x.dtype();
  std::array<const int64_t*, 2> st{xe.strides().data(), ye.strides().data()};
  int64_t i = 0;
  cpu::for_each_offset<2>(shape, st, {xe.offset(), ye.offset()}, [&](const std::array<int64_t, 2>& off) {
    o[i++] = compare_apply<double>(op, load_as_double(xs, off[0], t), load_as_double(ys, off[1], t));
  });
  return out;
}

Tensor scalar_like(double v, const Tensor& like) {
  return full({}, v, TensorOptions(like.dtype(), like.device()));
}

}  // namespace

// ---------------- binary ----------------

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(a, b, BinaryOp::add, "add");
  if (needs_grad({a, b})) {
    Shape sa = a.shape(), sb = b.shape();
    record("add", {a, b}, out, [sa, sb](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{sum_to(g[0], sa), sum_to(g[0], sb)};
    });
  }
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(a, b, BinaryOp::sub, "sub");
  if (needs_grad({a, b})) {
    Shape sa = a.shape(), sb = b.shape();
    record("sub", {a, b}, out, [sa, sb](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{sum_to(g[0], sa), sum_to(neg(g[0]), sb)};
    });
  }
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(a, b, BinaryOp::mul, "mul");
  if (needs_grad({a, b})) {
    bool ga = a.requires_grad(), gb = b.requires_grad();
    Tensor sa = a.detach(), sb = b.detach();
    record("mul", {a, b}, out, [sa, sb, ga, gb](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{ga ? sum_to(mul(g[0], sb), sa.shape()) : Tensor(),
                                 gb ? sum_to(mul(g[0], sa), sb.shape()) : Tensor()};
    });
  }
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(a, b, BinaryOp::div, "div");
  if (needs_grad({a, b})) {
    bool ga = a.requires_grad(), gb = b.requires_grad();
    Tensor sa = a.detach(), sb = b.detach();
    record("div", {a, b}, out, [sa, sb, ga, gb](const std::vector<Tensor>& g) {
      Tensor g_a = div(g[0], sb);
      return std::vector<Tensor>{ga ? sum_to(g_a, sa.shape()) : Tensor(),
                                 gb ? sum_to(neg(mul(g_a, div(sa, sb))), sb.shape()) : Tensor()};
    });
  }
  return out;
}

// ---------------- unary ----------------

namespace {
// Unary op whose gradient is g * f'(x) computed by a BinaryOp on (g, saved).
Tensor unary_with_binary_grad(const Tensor& a, UnaryOp op, BinaryOp grad_op, bool save_output,
                              const char* name) {
  Tensor out = unary_raw(a, op, 0, 0, name);
  if (needs_grad({a})) {
    Tensor saved = save_output ? out.detach() : a.detach();
    record(name, {a}, out, [saved, grad_op, name](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{binary_raw(g[0], saved, grad_op, name)};
    });
  }
  return out;
}
}  // namespace

Tensor add(const Tensor& a, double s) {
  Tensor out = unary_raw(a, UnaryOp::add_scalar, s, 0, "add");
  if (needs_grad({a})) record("add_scalar", {a}, out, [](const std::vector<Tensor>& g) { return g; });
  return out;
}

Tensor mul(const Tensor& a, double s) {
  Tensor out = unary_raw(a, UnaryOp::mul_scalar, s, 0, "mul");
  if (needs_grad({a})) {
    record("mul_scalar", {a}, out,
           [s](const std::vector<Tensor>& g) { return std::vector<Tensor>{mul(g[0], s)}; });
  }
  return out;
}

Tensor rsub(double s, const Tensor& a) {
  Tensor out = unary_raw(a, UnaryOp::rsub_scalar, s, 0, "rsub");
  if (needs_grad({a})) {
    record("rsub", {a}, out, [](const std::vector<Tensor>& g) { return std::vector<Tensor>{neg(g[0])}; });
  }
  return out;
}

Tensor rdiv(double s, const Tensor& a) {
  Tensor out = unary_raw(a, UnaryOp::rdiv_scalar, s, 0, "rdiv");
  if (needs_grad({a})) {
    Tensor sa = a.detach();
    record("rdiv", {a}, out, [sa, s](const std::vector<Tensor>& g) {
      // d(s/a)/da = -s / a^2
      return std::vector<Tensor>{mul(div(g[0], mul(sa, sa)), -s)};
    });
  }
  return out;
}

Tensor neg(const Tensor& a) {
  Tensor out = unary_raw(a, UnaryOp::neg, 0, 0, "neg");
  if (needs_grad({a})) {
    record("neg", {a}, out, [](const std::vector<Tensor>& g) { return std::vector<Tensor>{neg(g[0])}; });
  }
  return out;
}

Tensor exp(const Tensor& a) {
  Tensor out = unary_raw(a, UnaryOp::exp, 0, 0, "exp");
  if (needs_grad({a})) {
    Tensor y = out.detach();
    record("exp", {a}, out, [y](const std::vector<Tensor>& g) { return std::vector<Tensor>{mul(g[0], y)}; });
  }
  return out;
}

Tensor log(const Tensor& a) {
  Tensor out = unary_raw(a, UnaryOp::log, 0, 0, "log");
  if (needs_grad({a})) {
    Tensor x = a.detach();
    record("log", {a}, out, [x](const std::vector<Tensor>& g) { return std::vector<Tensor>{div(g[0], x)}; });
  }
  return out;
}

Tensor sqrt(const Tensor& a) {
  Tensor out = unary_raw(a, UnaryOp::sqrt, 0, 0, "sqrt");
  if (needs_grad({a})) {
    Tensor y = out.detach();
    record("sqrt", {a}, out,
           [y](const std::vector<Tensor>& g) { return std::vector<Tensor>{div(g[0], mul(y, 2.0))}; });
  }
  return out;
}

Tensor rsqrt(const Tensor& a) {
  Tensor out = unary_raw(a, UnaryOp::rsqrt, 0, 0, "rsqrt");
  if (needs_grad({a})) {
    Tensor y = out.detach();
    record("rsqrt", {a}, out, [y](const std::vector<Tensor>& g) {
      // d(x^-1/2) = -1/2 x^-3/2 = -1/2 y^3
      return std::vector<Tensor>{mul(mul(g[0], mul(y, mul(y, y))), -0.5)};
    });
  }
  return out;
}

Tensor abs(const Tensor& a) {
  Tensor out = unary_raw(a, UnaryOp::abs, 0, 0, "abs");
  if (needs_grad({a})) {
    Tensor x = a.detach();
    record("abs", {a}, out, [x](const std::vector<Tensor>& g) {
      // sign(x) * g, with sign(0) = 0
      Tensor zero = zeros_like(x);
      Tensor pos = where(gt(x, 0.0), g[0], zero);
      Tensor negp = where(lt(x, 0.0), neg(g[0]), zero);
      return std::vector<Tensor>{add(pos, negp)};
    });
  }
  return out;
}

Tensor pow(const Tensor& a, double e) {
  Tensor out = unary_raw(a, UnaryOp::pow_scalar, e, 0, "pow");
  if (needs_grad({a})) {
    Tensor x = a.detach();
    record("pow", {a}, out, [x, e](const std::vector<Tensor>& g) {
      if (e == 0.0) return std::vector<Tensor>{zeros_like(g[0])};
      return std::vector<Tensor>{mul(g[0], mul(pow(x, e - 1.0), e))};
    });
  }
  return out;
}

Tensor clamp(const Tensor& a, std::optional<double> lo, std::optional<double> hi) {
  double l = lo ? *lo : -std::numeric_limits<double>::infinity();
  double h = hi ? *hi : std::numeric_limits<double>::infinity();
  DGP_CHECK(l <= h, "clamp: min " << l << " greater than max " << h);
  Tensor out = unary_raw(a, UnaryOp::clamp, l, h, "clamp");
  if (needs_grad({a})) {
    Tensor x = a.detach();
    record("clamp", {a}, out, [x, l, h](const std::vector<Tensor>& g) {
      // gradient passes where lo <= x <= hi (PyTorch convention: boundaries included)
      Tensor inside = eq(unary_raw(x, UnaryOp::clamp, l, h, "clamp"), x);
      return std::vector<Tensor>{where(inside, g[0], zeros_like(g[0]))};
    });
  }
  return out;
}

Tensor relu(const Tensor& a) {
  return unary_with_binary_grad(a, UnaryOp::relu, BinaryOp::relu_backward, false, "relu");
}
Tensor relu6(const Tensor& a) {
  return unary_with_binary_grad(a, UnaryOp::relu6, BinaryOp::relu6_backward, false, "relu6");
}
Tensor gelu(const Tensor& a) {
  return unary_with_binary_grad(a, UnaryOp::gelu, BinaryOp::gelu_backward, false, "gelu");
}
Tensor tanh(const Tensor& a) {
  return unary_with_binary_grad(a, UnaryOp::tanh, BinaryOp::tanh_backward, true, "tanh");
}
Tensor sigmoid(const Tensor& a) {
  return unary_with_binary_grad(a, UnaryOp::sigmoid, BinaryOp::sigmoid_backward, true, "sigmoid");
}

// ---------------- comparisons, where, masked_fill ----------------

Tensor eq(const Tensor& a, const Tensor& b) {
  return compare_raw(a, b, CompareOp::eq, "eq");
}
Tensor ne(const Tensor& a, const Tensor& b) {
  return compare_raw(a, b, CompareOp::ne, "ne");
}
Tensor lt(const Tensor& a, const Tensor& b) {
  return compare_raw(a, b, CompareOp::lt, "lt");
}
Tensor gt(const Tensor& a, const Tensor& b) {
  return compare_raw(a, b, CompareOp::gt, "gt");
}
Tensor eq(const Tensor& a, double s) {
  return eq(a, scalar_like(s, a));
}
Tensor gt(const Tensor& a, double s) {
  return gt(a, scalar_like(s, a));
}
Tensor lt(const Tensor& a, double s) {
  return lt(a, scalar_like(s, a));
}

namespace {
Tensor where_raw(const Tensor& cond, const Tensor& a, const Tensor& b) {
  DGP_CHECK(cond.dtype() == DType::boolean,
            "where: condition must be bool, got " << dtype_name(cond.dtype()));
  check_pair(a, b, "where");
  DGP_CHECK(cond.device() == a.device(),
            "where: condition on " << cond.device().str() << ", values on " << a.device().str());
  Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor ce = cond.detach().expand(shape), ae = a.detach().expand(shape), be = b.detach().expand(shape);
  Tensor out = empty(shape, TensorOptions(a.dtype(), a.device()));
  if (a.device().is_cuda()) {
    cuda_kernels::where(out, ce, ae, be);
    return out;
  }
  const uint8_t* c = static_cast<const uint8_t*>(ce.storage()->data());
  size_t item = a.itemsize();
  const char* as = static_cast<const char*>(ae.storage()->data());
  const char* bs = static_cast<const char*>(be.storage()->data());
  char* o = static_cast<char*>(out.raw_data());
  std::array<const int64_t*, 3> st{ce.strides().data(), ae.strides().data(), be.strides().data()};
  int64_t i = 0;
  cpu::for_each_offset<3>(shape, st, {ce.offset(), ae.offset(), be.offset()},
                          [&](const std::array<int64_t, 3>& off) {
                            const char* src = c[off[0]] ? as + off[1] * item : bs + off[2] * item;
                            std::memcpy(o + (i++) * item, src, item);
                          });
  return out;
}
}  // namespace

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  Tensor out = where_raw(cond, a, b);
  if (needs_grad({a, b})) {
    Tensor c = cond.detach();
    Shape sa = a.shape(), sb = b.shape();
    record("where", {a, b}, out, [c, sa, sb](const std::vector<Tensor>& g) {
      Tensor z = zeros_like(g[0]);
      return std::vector<Tensor>{sum_to(where_raw(c, g[0], z), sa), sum_to(where_raw(c, z, g[0]), sb)};
    });
  }
  return out;
}

Tensor masked_fill(const Tensor& a, const Tensor& mask, double value) {
  return where(mask, full({}, value, TensorOptions(a.dtype(), a.device())), a);
}

// ---------------- cast ----------------

Tensor cast(const Tensor& a, DType dtype) {
  DGP_CHECK(a.defined(), "cast: undefined input");
  if (a.dtype() == dtype) return a;
  Tensor out = empty(a.shape(), TensorOptions(dtype, a.device()));
  {
    NoGradGuard ng;
    out.copy_(a);
  }
  if (needs_grad({a}) && is_floating(dtype)) {
    DType src = a.dtype();
    record("cast", {a}, out,
           [src](const std::vector<Tensor>& g) { return std::vector<Tensor>{cast(g[0], src)}; });
  }
  return out;
}

bool isfinite_all(const Tensor& a) {
  if (!is_floating(a.dtype())) return true;
  if (a.device().is_cuda()) {
    return cuda_kernels::isfinite_all(a);
  }
  for (double v : a.to_vector())
    if (!std::isfinite(v)) return false;
  return true;
}

// ---------------- in-place (not recorded) ----------------

namespace {
void check_inplace(const Tensor& a, const Tensor& b, const char* op) {
  check_pair(a, b, op);
  DGP_CHECK(!(grad_enabled() && a.requires_grad() && a.is_leaf()),
            op << ": in-place update of a leaf that requires grad; wrap it in NoGradGuard");
  broadcast_shapes(a.shape(), b.shape(), op);
}
}  // namespace

Tensor& add_(Tensor& a, const Tensor& b, double alpha) {
  check_inplace(a, b, "add_");
  if (a.device().is_cpu() && !is_half(a.dtype())) {
    Tensor be = b.detach().expand(a.shape());
    DGP_DISPATCH_FLOATING(a.dtype(), "add_", [&] {
      scalar_t* as = static_cast<scalar_t*>(a.storage()->data());
      const scalar_t* bs = static_cast<const scalar_t*>(be.storage()->data());
      const scalar_t al = static_cast<scalar_t>(alpha);
      if (a.is_contiguous() && be.is_contiguous()) {
        scalar_t* ap = as + a.offset();
        const scalar_t* bp = bs + be.offset();
        parallel_for(a.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) ap[i] += al * bp[i];
        });
        return;
      }
      std::array<const int64_t*, 2> st{a.strides().data(), be.strides().data()};
      cpu::for_each_offset<2>(a.shape(), st, {a.offset(), be.offset()},
                              [&](const std::array<int64_t, 2>& o) { as[o[0]] += al * bs[o[1]]; });
    });
    return a;
  }
  NoGradGuard ng;
  a.copy_(alpha == 1.0 ? add(a, b) : add(a, mul(b, alpha)));
  return a;
}

Tensor& mul_(Tensor& a, double s) {
  NoGradGuard ng;
  if (a.device().is_cpu() && !is_half(a.dtype()) && a.is_contiguous()) {
    DGP_DISPATCH_FLOATING(a.dtype(), "mul_", [&] {
      scalar_t* p = a.data<scalar_t>();
      const scalar_t v = static_cast<scalar_t>(s);
      parallel_for(a.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) p[i] *= v;
      });
    });
    return a;
  }
  a.copy_(mul(a, s));
  return a;
}

Tensor& addcmul_(Tensor& a, const Tensor& b, const Tensor& c, double value) {
  check_inplace(a, b, "addcmul_");
  NoGradGuard ng;
  return add_(a, mul(b, c), value);
}

// ---------------- operators ----------------

Tensor operator+(const Tensor& a, const Tensor& b) {
  return add(a, b);
}
Tensor operator-(const Tensor& a, const Tensor& b) {
  return sub(a, b);
}
Tensor operator*(const Tensor& a, const Tensor& b) {
  return mul(a, b);
}
Tensor operator/(const Tensor& a, const Tensor& b) {
  return div(a, b);
}
Tensor operator+(const Tensor& a, double s) {
  return add(a, s);
}
Tensor operator-(const Tensor& a, double s) {
  return add(a, -s);
}
Tensor operator*(const Tensor& a, double s) {
  return mul(a, s);
}
Tensor operator/(const Tensor& a, double s) {
  return mul(a, 1.0 / s);
}
Tensor operator*(double s, const Tensor& a) {
  return mul(a, s);
}
Tensor operator-(const Tensor& a) {
  return neg(a);
}

}  // namespace dgpipe::engine
