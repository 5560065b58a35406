// 2-D convolution on the GPU through cuDNN (engine/ops/conv_kernels.h): forward, backward-data,
// backward-filter and the bias gradient. Algorithms come from cuDNN's heuristics: the candidates are tried in
// their rank order until one runs (try_in_order), and the one that ran is cached per (shape, dtype, math
// mode, direction); workspaces come from the caching allocator, so a warmed-up step is graph-capturable.
// fp16/bf16 use tensor cores with fp32 accumulation; fp32 uses TF32 tensor cores while
// cuda::allow_tf32_conv() (the default, as in PyTorch).
#include <map>
#include <mutex>
#include <optional>
#include <tuple>

#include "engine/cuda/cuda_context.cuh"
#include "engine/ops/conv_kernels.h"

namespace dgpipe::engine::cuda_kernels {

namespace {

using cuda::cudnn_handle;

cudnnDataType_t cudnn_type(DType t) {
  switch (t) {
    case DType::f32:
      return CUDNN_DATA_FLOAT;
    case DType::f64:
      return CUDNN_DATA_DOUBLE;
    case DType::f16:
      return CUDNN_DATA_HALF;
    case DType::bf16:
      return CUDNN_DATA_BFLOAT16;
    default:
      DGP_FAIL("conv2d: unsupported dtype " << dtype_name(t) << " on cuda");
  }
}

struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc(DType t, int64_t n, int64_t c, int64_t h, int64_t w) {
    DGP_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d));
    DGP_CUDNN_CHECK(
        cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, cudnn_type(t), int(n), int(c), int(h), int(w)));
  }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d); }
};

struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  FilterDesc(DType t, int64_t o, int64_t c, int64_t kh, int64_t kw) {
    DGP_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d));
    DGP_CUDNN_CHECK(
        cudnnSetFilter4dDescriptor(d, cudnn_type(t), CUDNN_TENSOR_NCHW, int(o), int(c), int(kh), int(kw)));
  }
  ~FilterDesc() { cudnnDestroyFilterDescriptor(d); }
};

struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc(const Conv2dParams& p, DType t) {
    DGP_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d));
    DGP_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
        d, int(p.pad_h), int(p.pad_w), int(p.stride_h), int(p.stride_w), int(p.dilation_h), int(p.dilation_w),
        CUDNN_CROSS_CORRELATION, t == DType::f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT));
    DGP_CUDNN_CHECK(cudnnSetConvolutionGroupCount(d, int(p.groups)));
    DGP_CUDNN_CHECK(cudnnSetConvolutionMathType(d, default_math(t)));
  }
  // What the heuristics may choose from: tensor cores for halves, FMA only for fp32 without TF32.
  static cudnnMathType_t default_math(DType t) {
    if (t == DType::f16 || t == DType::bf16) return CUDNN_TENSOR_OP_MATH;
    if (t == DType::f32 && !cuda::allow_tf32_conv()) return CUDNN_FMA_MATH;  // exact fp32, no TF32
    return CUDNN_DEFAULT_MATH;
  }
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(d); }
};

// Everything that changes the best algorithm.
struct Key {
  int device, kind;
  int64_t n, c, h, w, o, kh, kw;
  int64_t sh, sw, ph, pw, dh, dw, groups;
  int dtype;
  bool tf32;
  bool operator<(const Key& k) const {
    return std::tie(device, kind, n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, groups, dtype, tf32) <
           std::tie(k.device, k.kind, k.n, k.c, k.h, k.w, k.o, k.kh, k.kw, k.sh, k.sw, k.ph, k.pw, k.dh, k.dw,
                    k.groups, k.dtype, k.tf32);
  }
};

struct Choice {
  int algo = 0;
  size_t workspace = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

std::mutex g_cache_mu;
std::map<Key, Choice> g_cache;

constexpr size_t kMaxWorkspace = size_t(1) << 30;  // algorithms needing more are skipped

Key make_key(int kind, const Tensor& x, const Tensor& w, const Conv2dParams& p) {
  return Key{
      x.device().index, kind,         x.size(0),    x.size(1),  x.size(2),      x.size(3),
      w.size(0),        w.size(2),    w.size(3),    p.stride_h, p.stride_w,     p.pad_h,
      p.pad_w,          p.dilation_h, p.dilation_w, p.groups,   int(x.dtype()), cuda::allow_tf32_conv()};
}

std::optional<Choice> cached(const Key& key) {
  std::lock_guard<std::mutex> lock(g_cache_mu);
  auto it = g_cache.find(key);
  if (it == g_cache.end()) return std::nullopt;
  return it->second;
}

// The heuristic's candidates that reported success and fit the workspace limit, in its rank order. Without
// TF32, fp32 keeps the FMA math the descriptor asked for whatever a candidate says; a candidate that would
// down-convert fp32/f64 data to half inside (ALLOW_CONVERSION) is left out.
template <class Perf>
std::vector<Choice> candidates_of(const Perf* perf, int count, DType t) {
  std::vector<Choice> out;
  const bool full_precision = t == DType::f32 || t == DType::f64;
  for (int i = 0; i < count; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= kMaxWorkspace &&
        !(full_precision && perf[i].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
      out.push_back(Choice{static_cast<int>(perf[i].algo), perf[i].memory,
                           ConvDesc::default_math(t) == CUDNN_FMA_MATH ? CUDNN_FMA_MATH : perf[i].mathType});
  return out;
}

// Runs one direction of a convolution: `run(choice, workspace)` with the cached choice for `key`, or with
// the heuristic's candidates (`candidates()`) in order until one runs, which is then cached. A cached choice
// that stops running (a different cuDNN) is forgotten and chosen again.
template <class Candidates, class Run>
void run_with_algorithm(const Key& key, const char* op, int dev, const ConvDesc& cd, Candidates&& candidates,
                        Run&& run) {
  auto attempt = [&](const Choice& c) -> std::string {
    DGP_CUDNN_CHECK(cudnnSetConvolutionMathType(cd.d, c.math));
    cuda::Scratch ws;
    try {
      ws = cuda::scratch(c.workspace, dev);
    } catch (const Error& e) {
      return "algorithm " + std::to_string(c.algo) + ": no room for its workspace of " +
             std::to_string(c.workspace) + " bytes (" + e.what() + ")";
    }
    const cudnnStatus_t st = run(c, ws.get());
    if (st == CUDNN_STATUS_SUCCESS) return "";
    return "algorithm " + std::to_string(c.algo) + ": " + cudnnGetErrorString(st);
  };
  std::string failures;
  if (std::optional<Choice> c = cached(key)) {
    if (attempt(*c).empty()) return;
    std::lock_guard<std::mutex> lock(g_cache_mu);
    g_cache.erase(key);
  }
  const std::vector<Choice> list = candidates();
  const int ran = try_in_order(list, attempt, failures);
  DGP_CHECK(ran >= 0, op << ": none of the " << list.size() << " cuDNN algorithms the heuristics proposed ran"
                         << (failures.empty() ? "" : " (" + failures + ")"));
  std::lock_guard<std::mutex> lock(g_cache_mu);
  g_cache[key] = list[static_cast<size_t>(ran)];
}

struct Scalars {
  float f1 = 1.f, f0 = 0.f;
  double d1 = 1.0, d0 = 0.0;
  bool dbl;
  explicit Scalars(DType t) : dbl(t == DType::f64) {}
  const void* one() const { return dbl ? static_cast<const void*>(&d1) : &f1; }
  const void* zero() const { return dbl ? static_cast<const void*>(&d0) : &f0; }
};

void check_inputs(const Tensor& a, const Tensor& b, const char* op) {
  DGP_CHECK(a.is_contiguous() && b.is_contiguous() && a.dim() == 4 && b.dim() == 4,
            op << ": cuda path expects contiguous 4-D tensors, got " << shape_str(a.shape()) << " and "
               << shape_str(b.shape()));
  DGP_CHECK(a.dtype() == b.dtype(),
            op << ": dtype mismatch (" << dtype_name(a.dtype()) << " and " << dtype_name(b.dtype()) << ")");
}

}  // namespace

void conv2d_forward(const Tensor& out, const Tensor& input, const Tensor& weight, const Tensor& bias,
                    const Conv2dParams& p) {
  check_inputs(input, weight, "conv2d");
  if (out.numel() == 0) return;
  cuda::TensorDeviceGuard g(out);
  int dev = out.device().index;
  DType t = input.dtype();
  cudnnHandle_t h = cudnn_handle(dev);
  TensorDesc xd(t, input.size(0), input.size(1), input.size(2), input.size(3));
  FilterDesc wd(t, weight.size(0), weight.size(1), weight.size(2), weight.size(3));
  TensorDesc yd(t, out.size(0), out.size(1), out.size(2), out.size(3));
  ConvDesc cd(p, t);
  Scalars s(t);
  run_with_algorithm(
      make_key(0, input, weight, p), "conv2d", dev, cd,
      [&] {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        int count = 0;
        DGP_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
            h, xd.d, wd.d, cd.d, yd.d, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, perf));
        return candidates_of(perf, count, t);
      },
      [&](const Choice& c, void* ws) {
        return cudnnConvolutionForward(h, s.one(), xd.d, input.raw_data(), wd.d, weight.raw_data(), cd.d,
                                       static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), ws, c.workspace,
                                       s.zero(), yd.d, out.raw_data());
      });
  if (bias.defined()) {
    DGP_CHECK(bias.is_contiguous() && bias.numel() == out.size(1) && bias.dtype() == t,
              "conv2d: bias must be a contiguous [" << out.size(1) << "] " << dtype_name(t) << " tensor");
    TensorDesc bd(t, 1, out.size(1), 1, 1);
    DGP_CUDNN_CHECK(cudnnAddTensor(h, s.one(), bd.d, bias.raw_data(), s.one(), yd.d, out.raw_data()));
  }
}

void conv2d_backward_data(const Tensor& grad_input, const Tensor& grad_out, const Tensor& weight,
                          const Conv2dParams& p) {
  check_inputs(grad_out, weight, "conv2d backward (data)");
  if (grad_input.numel() == 0) return;
  cuda::TensorDeviceGuard g(grad_input);
  int dev = grad_input.device().index;
  DType t = grad_out.dtype();
  cudnnHandle_t h = cudnn_handle(dev);
  TensorDesc dxd(t, grad_input.size(0), grad_input.size(1), grad_input.size(2), grad_input.size(3));
  FilterDesc wd(t, weight.size(0), weight.size(1), weight.size(2), weight.size(3));
  TensorDesc dyd(t, grad_out.size(0), grad_out.size(1), grad_out.size(2), grad_out.size(3));
  ConvDesc cd(p, t);
  if (grad_out.numel() == 0) {
    DGP_CUDA_CHECK(
        cudaMemsetAsync(grad_input.raw_data(), 0, grad_input.nbytes(), cuda::stream_of(grad_input)));
    return;
  }
  Scalars s(t);
  run_with_algorithm(
      make_key(1, grad_input, weight, p), "conv2d backward (data)", dev, cd,
      [&] {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        int count = 0;
        DGP_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
            h, wd.d, dyd.d, cd.d, dxd.d, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, perf));
        return candidates_of(perf, count, t);
      },
      [&](const Choice& c, void* ws) {
        return cudnnConvolutionBackwardData(h, s.one(), wd.d, weight.raw_data(), dyd.d, grad_out.raw_data(),
                                            cd.d, static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), ws,
                                            c.workspace, s.zero(), dxd.d, grad_input.raw_data());
      });
}

void conv2d_backward_filter(const Tensor& grad_weight, const Tensor& grad_out, const Tensor& input,
                            const Conv2dParams& p) {
  check_inputs(grad_out, input, "conv2d backward (filter)");
  if (grad_weight.numel() == 0) return;
  cuda::TensorDeviceGuard g(grad_weight);
  int dev = grad_weight.device().index;
  DType t = grad_out.dtype();
  if (grad_out.numel() == 0) {
    DGP_CUDA_CHECK(
        cudaMemsetAsync(grad_weight.raw_data(), 0, grad_weight.nbytes(), cuda::stream_of(grad_weight)));
    return;
  }
  cudnnHandle_t h = cudnn_handle(dev);
  TensorDesc xd(t, input.size(0), input.size(1), input.size(2), input.size(3));
  FilterDesc dwd(t, grad_weight.size(0), grad_weight.size(1), grad_weight.size(2), grad_weight.size(3));
  TensorDesc dyd(t, grad_out.size(0), grad_out.size(1), grad_out.size(2), grad_out.size(3));
  ConvDesc cd(p, t);
  Scalars s(t);
  run_with_algorithm(
      make_key(2, input, grad_weight, p), "conv2d backward (filter)", dev, cd,
      [&] {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        int count = 0;
        DGP_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
            h, xd.d, dyd.d, cd.d, dwd.d, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, perf));
        return candidates_of(perf, count, t);
      },
      [&](const Choice& c, void* ws) {
        return cudnnConvolutionBackwardFilter(h, s.one(), xd.d, input.raw_data(), dyd.d, grad_out.raw_data(),
                                              cd.d, static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo), ws,
                                              c.workspace, s.zero(), dwd.d, grad_weight.raw_data());
      });
}

void conv2d_backward_bias(const Tensor& grad_bias, const Tensor& grad_out) {
  DGP_CHECK(grad_out.is_contiguous() && grad_out.dim() == 4,
            "conv2d backward (bias): expects contiguous NCHW");
  if (grad_bias.numel() == 0) return;
  cuda::TensorDeviceGuard g(grad_bias);
  int dev = grad_bias.device().index;
  DType t = grad_out.dtype();
  if (grad_out.numel() == 0) {
    DGP_CUDA_CHECK(cudaMemsetAsync(grad_bias.raw_data(), 0, grad_bias.nbytes(), cuda::stream_of(grad_bias)));
    return;
  }
  cudnnHandle_t h = cudnn_handle(dev);
  TensorDesc dyd(t, grad_out.size(0), grad_out.size(1), grad_out.size(2), grad_out.size(3));
  TensorDesc dbd(t, 1, grad_out.size(1), 1, 1);
  Scalars s(t);
  DGP_CUDNN_CHECK(cudnnConvolutionBackwardBias(h, s.one(), dyd.d, grad_out.raw_data(), s.zero(), dbd.d,
                                               grad_bias.raw_data()));
}

}  // namespace dgpipe::engine::cuda_kernels
