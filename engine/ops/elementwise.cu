// CUDA twins of the elementwise ops (engine/ops/elementwise.cpp). The math is the shared unary_apply /
// binary_apply of elementwise_kernels.h, computed in float for f16/bf16 storage and in the storage type
// otherwise. Contiguous operands take a vectorised path (16-byte loads and stores). A binary op of a
// contiguous tensor with a broadcast vector (every bias add: [N, C] + [C], NCHW + [1, C, 1, 1]) takes a
// vectorised path too, which finds the vector's element with two 32-bit multiply-high divisions. Anything
// else goes through a strided indexer whose dims are merged first (engine/cuda/indexing.h), 32-bit
// (multiply-high divisions) whenever the sizes allow, 64-bit otherwise.
#include "engine/cuda/kernel_utils.cuh"
#include "engine/ops/elementwise_kernels.h"

namespace dgpipe::engine::cuda_kernels {

using namespace cuda;  // the helpers of engine/cuda/kernel_utils.cuh and cuda_context.cuh

namespace {

constexpr int kThreads = 256;

template <class T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

template <class T>
constexpr int vec_width() {
  return 16 / static_cast<int>(sizeof(T)) > 0 ? 16 / static_cast<int>(sizeof(T)) : 1;
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// ---- unary ----

template <class T>
__global__ void unary_contig_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t n, UnaryOp op,
                                    double a, double b) {
  using A = acc_t<T>;
  constexpr int V = vec_width<T>();
  int64_t nvec = n / V;
  int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const Vec<T, V>* xv = reinterpret_cast<const Vec<T, V>*>(x);
  Vec<T, V>* ov = reinterpret_cast<Vec<T, V>*>(out);
  for (int64_t i = tid; i < nvec; i += stride) {
    Vec<T, V> in = xv[i], r;
#pragma unroll
    for (int j = 0; j < V; ++j) r.v[j] = from_acc<T>(unary_apply<A>(op, to_acc(in.v[j]), a, b));
    ov[i] = r;
  }
  for (int64_t i = nvec * V + tid; i < n; i += stride)
    out[i] = from_acc<T>(unary_apply<A>(op, to_acc(x[i]), a, b));
}

template <class T, class Ix>
__global__ void unary_strided_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t n, Ix ix,
                                     UnaryOp op, double a, double b) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets(i, off);
    out[off[0]] = from_acc<T>(unary_apply<A>(op, to_acc(x[off[1]]), a, b));
  }
}

// ---- binary ----

template <class T>
__global__ void binary_contig_kernel(T* __restrict__ out, const T* __restrict__ x, const T* __restrict__ y,
                                     int64_t n, BinaryOp op) {
  using A = acc_t<T>;
  constexpr int V = vec_width<T>();
  int64_t nvec = n / V;
  int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const Vec<T, V>* xv = reinterpret_cast<const Vec<T, V>*>(x);
  const Vec<T, V>* yv = reinterpret_cast<const Vec<T, V>*>(y);
  Vec<T, V>* ov = reinterpret_cast<Vec<T, V>*>(out);
  for (int64_t i = tid; i < nvec; i += stride) {
    Vec<T, V> p = xv[i], q = yv[i], r;
#pragma unroll
    for (int j = 0; j < V; ++j) r.v[j] = from_acc<T>(binary_apply<A>(op, to_acc(p.v[j]), to_acc(q.v[j])));
    ov[i] = r;
  }
  for (int64_t i = nvec * V + tid; i < n; i += stride)
    out[i] = from_acc<T>(binary_apply<A>(op, to_acc(x[i]), to_acc(y[i])));
}

template <class T, class Ix>
__global__ void binary_strided_kernel(T* __restrict__ out, const T* __restrict__ x, const T* __restrict__ y,
                                      int64_t n, Ix ix, BinaryOp op) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[3];
    ix.offsets(i, off);
    out[off[0]] = from_acc<T>(binary_apply<A>(op, to_acc(x[off[1]]), to_acc(y[off[2]])));
  }
}

// out = op(full, vector) (or op(vector, full) when vector_first) for a contiguous `full` and a broadcast
// vector whose element for linear index i is (i / inner) % channels; n < 2^31.
template <class T>
__global__ void binary_vector_kernel(T* __restrict__ out, const T* __restrict__ full,
                                     const T* __restrict__ vector, uint32_t n, FastDivmod inner,
                                     FastDivmod channels, bool vector_first, BinaryOp op) {
  using A = acc_t<T>;
  constexpr int V = vec_width<T>();
  auto apply = [&](T f, uint32_t i) {
    const A v = to_acc(vector[channels.mod(inner.div(i))]);
    return from_acc<T>(vector_first ? binary_apply<A>(op, v, to_acc(f)) : binary_apply<A>(op, to_acc(f), v));
  };
  const uint32_t nvec = n / V;
  const uint32_t stride = gridDim.x * blockDim.x;
  const uint32_t tid = blockIdx.x * blockDim.x + threadIdx.x;
  const Vec<T, V>* fv = reinterpret_cast<const Vec<T, V>*>(full);
  Vec<T, V>* ov = reinterpret_cast<Vec<T, V>*>(out);
  for (uint32_t i = tid; i < nvec; i += stride) {
    Vec<T, V> in = fv[i], r;
#pragma unroll
    for (int j = 0; j < V; ++j) r.v[j] = apply(in.v[j], i * V + j);
    ov[i] = r;
  }
  for (uint32_t i = nvec * V + tid; i < n; i += stride) out[i] = apply(full[i], i);
}

// ---- compare / where / isfinite ----

template <class T, class Ix>
__global__ void compare_kernel(uint8_t* __restrict__ out, const T* __restrict__ x, const T* __restrict__ y,
                               int64_t n, Ix ix, CompareOp op) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[3];
    ix.offsets(i, off);
    out[off[0]] = compare_apply<acc_t<T>>(op, to_acc(x[off[1]]), to_acc(y[off[2]])) ? 1 : 0;
  }
}

template <class W, class Ix>
__global__ void where_kernel(W* __restrict__ out, const uint8_t* __restrict__ cond, const W* __restrict__ x,
                             const W* __restrict__ y, int64_t n, Ix ix) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[4];
    ix.offsets(i, off);
    out[off[0]] = cond[off[1]] ? x[off[2]] : y[off[3]];
  }
}

template <class T, class Ix>
__global__ void nonfinite_kernel(const T* __restrict__ x, int64_t n, Ix ix, int* __restrict__ flag) {
  bool bad = false;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[1];
    ix.offsets(i, off);
    double v = static_cast<double>(to_acc(x[off[0]]));
    if (!isfinite(v)) bad = true;
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1);
}

// Dispatch over every dtype (comparisons work on integers and bools too).
#define DGP_CUDA_DISPATCH_ALL(DT, NAME, ...) \
  do {                                       \
    switch (DT) {                            \
      case DType::f32: {                     \
        using scalar_t = float;              \
        __VA_ARGS__();                       \
        break;                               \
      }                                      \
      case DType::f64: {                     \
        using scalar_t = double;             \
        __VA_ARGS__();                       \
        break;                               \
      }                                      \
      case DType::f16: {                     \
        using scalar_t = __half;             \
        __VA_ARGS__();                       \
        break;                               \
      }                                      \
      case DType::bf16: {                    \
        using scalar_t = __nv_bfloat16;      \
        __VA_ARGS__();                       \
        break;                               \
      }                                      \
      case DType::i8: {                      \
        using scalar_t = int8_t;             \
        __VA_ARGS__();                       \
        break;                               \
      }                                      \
      case DType::u8:                        \
      case DType::boolean: {                 \
        using scalar_t = uint8_t;            \
        __VA_ARGS__();                       \
        break;                               \
      }                                      \
      case DType::i16: {                     \
        using scalar_t = int16_t;            \
        __VA_ARGS__();                       \
        break;                               \
      }                                      \
      case DType::i32: {                     \
        using scalar_t = int32_t;            \
        __VA_ARGS__();                       \
        break;                               \
      }                                      \
      case DType::i64: {                     \
        using scalar_t = int64_t;            \
        __VA_ARGS__();                       \
        break;                               \
      }                                      \
    }                                        \
  } while (0)

void check_same_device(const Tensor& out, const Tensor& t, const char* op) {
  DGP_CHECK(t.device() == out.device(),
            op << ": operand on " << t.device().str() << ", output on " << out.device().str());
}

// The contiguous operand and the broadcast vector of a binary op, when it has that form.
struct VectorOperands {
  bool found = false;
  const Tensor* full = nullptr;
  const Tensor* vector = nullptr;
  bool vector_first = false;
  VectorBroadcast layout;
};

VectorOperands vector_operands(const Tensor& out, const Tensor& x, const Tensor& y,
                               const StridedIndexer<3>& ix, int64_t n) {
  VectorOperands v;
  if (n >= (int64_t(1) << 31) || !out.is_contiguous() || !aligned16(out.raw_data())) return v;
  for (int side = 0; side < 2; ++side) {
    const Tensor& full = side == 0 ? x : y;
    if (!full.is_contiguous() || !aligned16(full.raw_data())) continue;
    VectorBroadcast layout = vector_broadcast(ix, side == 0 ? 2 : 1);
    if (!layout.found) continue;
    v.found = true;
    v.full = &full;
    v.vector = side == 0 ? &y : &x;
    v.vector_first = side == 1;
    v.layout = layout;
    return v;
  }
  return v;
}

}  // namespace

void unary(const Tensor& out, const Tensor& x, UnaryOp op, double a, double b) {
  check_same_device(out, x, "unary op");
  int64_t n = out.numel();
  if (n == 0) return;
  TensorDeviceGuard g(out);
  cudaStream_t s = stream_of(out);
  int dev = out.device().index;
  DGP_CUDA_DISPATCH_FLOATING(x.dtype(), "unary op", [&] {
    scalar_t* o = static_cast<scalar_t*>(out.raw_data());
    if (out.is_contiguous() && x.is_contiguous() && aligned16(o) && aligned16(x.raw_data())) {
      unary_contig_kernel<scalar_t>
          <<<grid_for(n / vec_width<scalar_t>() + 1, kThreads, dev), kThreads, 0, s>>>(
              o, static_cast<const scalar_t*>(x.raw_data()), n, op, a, b);
    } else {
      const Tensor* ts[2] = {&out, &x};
      with_indexer(make_indexer<2>(out.shape(), ts, "unary op"), n, [&](const auto& ix) {
        unary_strided_kernel<scalar_t><<<grid_for(n, kThreads, dev), kThreads, 0, s>>>(
            static_cast<scalar_t*>(out.storage()->data()), static_cast<const scalar_t*>(x.storage()->data()),
            n, ix, op, a, b);
      });
    }
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void binary(const Tensor& out, const Tensor& x, const Tensor& y, BinaryOp op) {
  check_same_device(out, x, "binary op");
  check_same_device(out, y, "binary op");
  int64_t n = out.numel();
  if (n == 0) return;
  TensorDeviceGuard g(out);
  cudaStream_t s = stream_of(out);
  int dev = out.device().index;
  DGP_CUDA_DISPATCH_FLOATING(x.dtype(), "binary op", [&] {
    scalar_t* o = static_cast<scalar_t*>(out.raw_data());
    if (out.is_contiguous() && x.is_contiguous() && y.is_contiguous() && aligned16(o) &&
        aligned16(x.raw_data()) && aligned16(y.raw_data())) {
      binary_contig_kernel<scalar_t>
          <<<grid_for(n / vec_width<scalar_t>() + 1, kThreads, dev), kThreads, 0, s>>>(
              o, static_cast<const scalar_t*>(x.raw_data()), static_cast<const scalar_t*>(y.raw_data()), n,
              op);
      return;
    }
    const Tensor* ts[3] = {&out, &x, &y};
    const StridedIndexer<3> ix = make_indexer<3>(out.shape(), ts, "binary op");
    const VectorOperands v = vector_operands(out, x, y, ix, n);
    if (v.found) {
      binary_vector_kernel<scalar_t>
          <<<grid_for(n / vec_width<scalar_t>() + 1, kThreads, dev), kThreads, 0, s>>>(
              o, static_cast<const scalar_t*>(v.full->raw_data()),
              static_cast<const scalar_t*>(v.vector->raw_data()), static_cast<uint32_t>(n),
              FastDivmod(static_cast<uint32_t>(v.layout.inner)),
              FastDivmod(static_cast<uint32_t>(v.layout.channels)), v.vector_first, op);
      return;
    }
    with_indexer(ix, n, [&](const auto& ixn) {
      binary_strided_kernel<scalar_t><<<grid_for(n, kThreads, dev), kThreads, 0, s>>>(
          static_cast<scalar_t*>(out.storage()->data()), static_cast<const scalar_t*>(x.storage()->data()),
          static_cast<const scalar_t*>(y.storage()->data()), n, ixn, op);
    });
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void compare(const Tensor& out, const Tensor& x, const Tensor& y, CompareOp op) {
  check_same_device(out, x, "compare");
  check_same_device(out, y, "compare");
  int64_t n = out.numel();
  if (n == 0) return;
  TensorDeviceGuard g(out);
  cudaStream_t s = stream_of(out);
  const Tensor* ts[3] = {&out, &x, &y};
  unsigned grid = grid_for(n, kThreads, out.device().index);
  with_indexer(make_indexer<3>(out.shape(), ts, "compare"), n, [&](const auto& ix) {
    DGP_CUDA_DISPATCH_ALL(x.dtype(), "compare", [&] {
      compare_kernel<scalar_t><<<grid, kThreads, 0, s>>>(
          static_cast<uint8_t*>(out.storage()->data()), static_cast<const scalar_t*>(x.storage()->data()),
          static_cast<const scalar_t*>(y.storage()->data()), n, ix, op);
    });
  });
  DGP_CUDA_CHECK_LAUNCH();
}

void where(const Tensor& out, const Tensor& cond, const Tensor& x, const Tensor& y) {
  check_same_device(out, cond, "where");
  check_same_device(out, x, "where");
  check_same_device(out, y, "where");
  int64_t n = out.numel();
  if (n == 0) return;
  TensorDeviceGuard g(out);
  cudaStream_t s = stream_of(out);
  const Tensor* ts[4] = {&out, &cond, &x, &y};
  const StridedIndexer<4> ix64 = make_indexer<4>(out.shape(), ts, "where");
  unsigned grid = grid_for(n, kThreads, out.device().index);
  const uint8_t* c = static_cast<const uint8_t*>(cond.storage()->data());
  void* o = out.storage()->data();
  const void* xp = x.storage()->data();
  const void* yp = y.storage()->data();
  with_indexer(ix64, n, [&](const auto& ix) {
    switch (out.itemsize()) {
      case 1:
        where_kernel<uint8_t>
            <<<grid, kThreads, 0, s>>>((uint8_t*)o, c, (const uint8_t*)xp, (const uint8_t*)yp, n, ix);
        break;
      case 2:
        where_kernel<uint16_t>
            <<<grid, kThreads, 0, s>>>((uint16_t*)o, c, (const uint16_t*)xp, (const uint16_t*)yp, n, ix);
        break;
      case 4:
        where_kernel<uint32_t>
            <<<grid, kThreads, 0, s>>>((uint32_t*)o, c, (const uint32_t*)xp, (const uint32_t*)yp, n, ix);
        break;
      case 8:
        where_kernel<uint64_t>
            <<<grid, kThreads, 0, s>>>((uint64_t*)o, c, (const uint64_t*)xp, (const uint64_t*)yp, n, ix);
        break;
      default:
        DGP_FAIL("where: unsupported item size " << out.itemsize());
    }
  });
  DGP_CUDA_CHECK_LAUNCH();
}

bool isfinite_all(const Tensor& x) {
  int64_t n = x.numel();
  if (n == 0) return true;
  TensorDeviceGuard g(x);
  cudaStream_t s = stream_of(x);
  int dev = x.device().index;
  Scratch flag = scratch(sizeof(int), dev);
  DGP_CUDA_CHECK(cudaMemsetAsync(flag.get(), 0, sizeof(int), s));
  const Tensor* ts[1] = {&x};
  with_indexer(make_indexer<1>(x.shape(), ts, "isfinite_all"), n, [&](const auto& ix) {
    DGP_CUDA_DISPATCH_FLOATING(x.dtype(), "isfinite_all", [&] {
      nonfinite_kernel<scalar_t><<<grid_for(n, kThreads, dev), kThreads, 0, s>>>(
          static_cast<const scalar_t*>(x.storage()->data()), n, ix, static_cast<int*>(flag.get()));
    });
  });
  DGP_CUDA_CHECK_LAUNCH();
  int host = 0;
  DGP_CUDA_CHECK(cudaMemcpyAsync(&host, flag.get(), sizeof(int), cudaMemcpyDeviceToHost, s));
  DGP_CUDA_CHECK(cudaStreamSynchronize(s));  // the answer is needed on the host
  check_device_errors(dev);
  return host == 0;
}

}  // namespace dgpipe::engine::cuda_kernels
