// The engine's op set. Every op dispatches on the device of its inputs (CPU kernels in engine/ops/*.cpp,
// CUDA kernels in engine/ops/*.cu), checks shapes/dtypes/devices with messages that name the op, and records
// its backward when an input requires grad. Floating ops accept f32 and f64 (CPU oracle); f16/bf16 inputs are
// computed in f32 on the CPU.
#pragma once
#include <optional>
#include <vector>

#include "engine/autograd.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace dgpipe::engine {

// ---------------- elementwise (engine/ops/elementwise.cpp) ----------------
// Binary ops broadcast like NumPy. Scalar overloads keep the tensor's dtype.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor rsub(double s, const Tensor& a);  // s - a
Tensor rdiv(double s, const Tensor& a);  // s / a
Tensor neg(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor rsqrt(const Tensor& a);
Tensor abs(const Tensor& a);
Tensor pow(const Tensor& a, double exponent);
Tensor clamp(const Tensor& a, std::optional<double> lo, std::optional<double> hi);
Tensor relu(const Tensor& a);
Tensor relu6(const Tensor& a);
Tensor gelu(const Tensor& a);  // exact erf form: x * Phi(x), as PyTorch's default and Hugging Face "gelu"
Tensor tanh(const Tensor& a);
Tensor sigmoid(const Tensor& a);
// Comparisons give bool tensors (not differentiable).
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, double s);
Tensor gt(const Tensor& a, double s);
Tensor lt(const Tensor& a, double s);
// where(cond, a, b): cond is bool, broadcasts; differentiable in a and b.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor masked_fill(const Tensor& a, const Tensor& mask, double value);
// Dtype conversion (differentiable between floating types).
Tensor cast(const Tensor& a, DType dtype);
bool isfinite_all(const Tensor& a);  // false if any NaN/Inf

// In-place, never recorded (optimizer updates, accumulation). a must not be a broadcast view.
Tensor& add_(Tensor& a, const Tensor& b, double alpha = 1.0);  // a += alpha * b
Tensor& mul_(Tensor& a, double s);
Tensor& addcmul_(Tensor& a, const Tensor& b, const Tensor& c, double value);  // a += value*b*c

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, double s);
Tensor operator-(const Tensor& a, double s);
Tensor operator*(const Tensor& a, double s);
Tensor operator/(const Tensor& a, double s);
Tensor operator*(double s, const Tensor& a);
Tensor operator-(const Tensor& a);

// ---------------- reductions (engine/ops/reduce.cpp) ----------------
Tensor sum(const Tensor& a);  // all elements -> 0-d
Tensor sum(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& a);
Tensor mean(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim = false);
// var with correction (0 = biased, 1 = unbiased)
Tensor var(const Tensor& a, const std::vector<int64_t>& dims, int64_t correction = 1, bool keepdim = false);
struct ValuesIndices {
  Tensor values;
  Tensor indices;  // i64
};
ValuesIndices max(const Tensor& a, int64_t dim, bool keepdim = false);  // gradient flows to the argmax
ValuesIndices min(const Tensor& a, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& a);  // global, 0-d
Tensor min(const Tensor& a);
Tensor argmax(const Tensor& a, int64_t dim, bool keepdim = false);

// ---------------- shape (engine/ops/shape.cpp) ----------------
Tensor concat(const std::vector<Tensor>& tensors, int64_t dim);
std::vector<Tensor> split(const Tensor& a, const std::vector<int64_t>& sizes, int64_t dim);
std::vector<Tensor> chunk(const Tensor& a, int64_t chunks, int64_t dim);  // torch.chunk sizes
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim);
// index_select along dim with an i64 index vector (gradient: scatter-add).
Tensor index_select(const Tensor& a, int64_t dim, const Tensor& index);

// ---------------- linear algebra (engine/ops/matmul.cpp) ----------------
Tensor matmul(const Tensor& a, const Tensor& b);  // 1-D/2-D/batched with broadcasting of batch dims
Tensor bmm(const Tensor& a, const Tensor& b);     // [B,n,k] x [B,k,m]
Tensor linear(const Tensor& x, const Tensor& weight,
              const Tensor& bias = Tensor());  // x W^T + b, weight [out,in]

// ---------------- convolution (engine/ops/conv.cpp) ----------------
struct Conv2dParams {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;
};
// input [N,C,H,W], weight [O, C/groups, kh, kw], bias [O] or undefined.
Tensor conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias, const Conv2dParams& p);

// ---------------- pooling (engine/ops/pool.cpp) ----------------
Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding = 0);
// count_include_pad as PyTorch's default (true).
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding = 0);
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w);

// ---------------- normalisation: batch_norm2d (engine/ops/batch_norm.cpp) ----------------
// Training: normalises with batch statistics (biased var) and, when running_mean/var are defined, updates
// them in place with momentum (running = (1-m) running + m stat, unbiased var for running_var), like PyTorch.
// Eval: uses the running statistics. weight/bias may be undefined (affine=false).
Tensor batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                    Tensor running_var, bool training, double momentum, double eps);
// Per-channel sums over (N,H,W) of x and x^2 from the last training call can be accumulated by callers
// (deferred batch norm) with sum()/mean(); no extra op needed.
// layer_norm (engine/ops/layer_norm.cpp): normalises over the trailing normalized_shape dims with the biased
// variance, like PyTorch; weight/bias of shape normalized_shape may be undefined.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  double eps);

// ---------------- softmax & losses (engine/ops/softmax.cpp) ----------------
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// logits [N,C], target i64 [N]; mean over non-ignored targets; label smoothing as PyTorch.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, double label_smoothing = 0.0,
                     int64_t ignore_index = -100);

// ---------------- embedding (engine/ops/embedding.cpp) ----------------
// weight [V,D], indices i64/i32 any shape -> [..., D]; padding_idx rows get no gradient (-1: none).
Tensor embedding(const Tensor& weight, const Tensor& indices, int64_t padding_idx = -1);

// ---------------- dropout (engine/ops/dropout.cpp) ----------------
// Keeps each element with probability 1-p and scales by 1/(1-p); the mask comes from Philox (same on GPU).
Tensor dropout(const Tensor& x, double p, bool training, Generator* gen = nullptr);

}  // namespace dgpipe::engine
