// Scalar formulas of the elementwise ops, shared by the CPU loops (elementwise.cpp) and the CUDA kernels
// (elementwise.cu) so that both twins compute exactly the same math. No CUDA headers are needed here.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/host_device.h"
#include "engine/tensor.h"

namespace dgpipe::engine {

enum class UnaryOp : int {
  neg,
  exp,
  log,
  sqrt,
  rsqrt,
  abs,
  relu,
  relu6,
  gelu,
  tanh,
  sigmoid,
  add_scalar,   // x + a
  mul_scalar,   // x * a
  rsub_scalar,  // a - x
  rdiv_scalar,  // a / x
  pow_scalar,   // x ^ a
  clamp,        // min(max(x, a), b)   (a = -inf / b = +inf when absent)
};

enum class BinaryOp : int {
  add,
  sub,
  mul,
  div,
  relu_backward,     // (g, x) -> x > 0 ? g : 0
  relu6_backward,    // (g, x) -> 0 < x < 6 ? g : 0
  gelu_backward,     // (g, x) -> g * gelu'(x)
  tanh_backward,     // (g, y) -> g * (1 - y^2)
  sigmoid_backward,  // (g, y) -> g * y * (1 - y)
};

enum class CompareOp : int { eq, ne, lt, gt };

template <class T>
DGP_HD T unary_apply(UnaryOp op, T x, double a, double b) {
  switch (op) {
    case UnaryOp::neg:
      return -x;
    case UnaryOp::exp:
      return std::exp(x);
    case UnaryOp::log:
      return std::log(x);
    case UnaryOp::sqrt:
      return std::sqrt(x);
    case UnaryOp::rsqrt:
      return T(1) / std::sqrt(x);
    case UnaryOp::abs:
      return std::fabs(x);
    case UnaryOp::relu:
      return x > T(0) ? x : T(0);
    case UnaryOp::relu6: {  // two selects, not nested branches: compiles to max/min (NaN still passes
                            // through)
      const T y = x < T(0) ? T(0) : x;
      return y > T(6) ? T(6) : y;
    }
    case UnaryOp::gelu:
      return x * T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
    case UnaryOp::tanh:
      return std::tanh(x);
    case UnaryOp::sigmoid:
      return T(1) / (T(1) + std::exp(-x));
    case UnaryOp::add_scalar:
      return x + T(a);
    case UnaryOp::mul_scalar:
      return x * T(a);
    case UnaryOp::rsub_scalar:
      return T(a) - x;
    case UnaryOp::rdiv_scalar:
      return T(a) / x;
    case UnaryOp::pow_scalar:
      return std::pow(x, T(a));
    case UnaryOp::clamp: {
      const T y = x < T(a) ? T(a) : x;
      return y > T(b) ? T(b) : y;
    }
  }
  return x;
}

template <class T>
DGP_HD T binary_apply(BinaryOp op, T x, T y) {
  switch (op) {
    case BinaryOp::add:
      return x + y;
    case BinaryOp::sub:
      return x - y;
    case BinaryOp::mul:
      return x * y;
    case BinaryOp::div:
      return x / y;
    case BinaryOp::relu_backward:
      return y > T(0) ? x : T(0);
    case BinaryOp::relu6_backward:
      return ((y > T(0)) & (y < T(6))) ? x : T(0);  // & not &&: no branch per element
    case BinaryOp::gelu_backward: {
      T cdf = T(0.5) * (T(1) + std::erf(y * T(0.70710678118654752440)));
      T pdf = std::exp(T(-0.5) * y * y) * T(0.39894228040143267794);
      return x * (cdf + y * pdf);
    }
    case BinaryOp::tanh_backward:
      return x * (T(1) - y * y);
    case BinaryOp::sigmoid_backward:
      return x * y * (T(1) - y);
  }
  return x;
}

template <class T>
DGP_HD bool compare_apply(CompareOp op, T x, T y) {
  switch (op) {
    case CompareOp::eq:
      return x == y;
    case CompareOp::ne:
      return x != y;
    case CompareOp::lt:
      return x < y;
    case CompareOp::gt:
      return x > y;
  }
  return false;
}

// CUDA launchers (engine/ops/elementwise.cu). `out` is allocated by the caller; inputs are already
// broadcast (expanded) to out's shape and share its dtype.
namespace cuda_kernels {
void unary(const Tensor& out, const Tensor& x, UnaryOp op, double a, double b);
void binary(const Tensor& out, const Tensor& x, const Tensor& y, BinaryOp op);
void compare(const Tensor& out, const Tensor& x, const Tensor& y, CompareOp op);
void where(const Tensor& out, const Tensor& cond, const Tensor& x, const Tensor& y);
bool isfinite_all(const Tensor& x);
}  // namespace cuda_kernels

}  // namespace dgpipe::engine
