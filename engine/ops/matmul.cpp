// matmul / bmm / linear. GEMM goes to oneDNN or OpenBLAS on the CPU (gemm.h) and to cuBLAS on the GPU.
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>

#if DGPIPE_WITH_ONEDNN
#include <dnnl.h>
#include <omp.h>
#endif

#include "engine/ops.h"
#include "engine/ops/conv_onednn.h"
#include "engine/ops/cpu_loops.h"
#include "engine/ops/gemm.h"
#include "engine/ops/matmul_kernels.h"
#include "engine/parallel.h"

namespace dgpipe::engine {

namespace cpu {

namespace {

GemmBackend initial_gemm_backend() {
  return onednn_chosen_by("DGPIPE_CPU_GEMM", "openblas") ? GemmBackend::onednn : GemmBackend::openblas;
}

std::atomic<GemmBackend>& gemm_backend_setting() {
  static std::atomic<GemmBackend> b{initial_gemm_backend()};
  return b;
}

// BLAS threads per GEMM call: the library's own threads spin while they wait for work; next to pipeline stage
// threads and loader workers on a few cores that costs far more than it gains (measured: 8x slower steps for a
// 3-stage CIFAR pipeline on 2 cores). So one BLAS thread per calling thread unless DGPIPE_BLAS_THREADS (or
// OpenBLAS's own OPENBLAS_NUM_THREADS, for OpenBLAS) says otherwise; parallelism comes from the op threads
// (gemm_by_rows) and the stages.
int blas_threads() {
  static const int n = [] {
    if (const char* v = std::getenv("DGPIPE_BLAS_THREADS")) return std::max(1, std::atoi(v));
    if (const char* v = std::getenv("OPENBLAS_NUM_THREADS")) return std::max(1, std::atoi(v));
    return 1;
  }();
  return n;
}

void configure_openblas_threads() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(blas_threads()); });
}

}  // namespace

GemmBackend gemm_backend() {
  return gemm_backend_setting().load();
}

void set_gemm_backend(GemmBackend backend) {
  DGP_CHECK(backend == GemmBackend::openblas || onednn_built(),
            "set_gemm_backend: this build has no oneDNN");
  gemm_backend_setting().store(backend);
}

const char* gemm_backend_name(GemmBackend backend) {
  return backend == GemmBackend::onednn ? "onednn" : "openblas";
}

// A large GEMM splits the rows of C over the op threads, one single-threaded library call per part (called
// inside another parallel_for, as the per-image convolution GEMMs are, it stays one call). Every element of C
// is computed by the same kernel over the same K blocks, so the parts give the bits of one call (checked on
// this project's OpenBLAS and oneDNN in tests/engine/test_parallel.cpp and test_matmul.cpp; oneDNN picks other
// kernels below 16 rows, which the grain never splits to).
template <class T, class Call>
void gemm_by_rows(bool ta, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, T* C, int64_t ldc,
                  Call&& call) {
  if (blas_threads() > 1) {  // DGPIPE_BLAS_THREADS asked for the library's own threads instead
    call(static_cast<int>(M), A, C);
    return;
  }
  const int64_t grain = std::max<int64_t>(16, (int64_t{1} << 21) / std::max<int64_t>(1, N * K));
  parallel_for(M, grain, [&](int64_t i0, int64_t i1) {
    call(static_cast<int>(i1 - i0), ta ? A + i0 : A + i0 * lda, C + i0 * ldc);
  });
}

// oneDNN's sgemm costs a few microseconds more per call than OpenBLAS's small-matrix kernels: with every f32
// GEMM on oneDNN the low-rank codecs' thin products (1280x8x16 per sample) made their encodes 8-51% slower,
// while BERT's 4096x384x1536 ran 9-11% faster (docs/perf.md). The threshold lies between the two. The choice
// is made on the whole product, before any row split, so every part runs on the same library.
constexpr int64_t kOnednnMinMultiplyAdds = int64_t(1) << 19;

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
#if DGPIPE_WITH_ONEDNN
  if (gemm_backend() == GemmBackend::onednn && M * N * K >= kOnednnMinMultiplyAdds) {
    gemm_by_rows(ta, M, N, K, A, lda, C, ldc, [&](int rows, const float* a, float* c) {
      omp_set_num_threads(blas_threads());  // this thread's own OpenMP team size (an op thread's is unset)
      const dnnl_status_t status = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', rows, N, K, alpha, a, lda, B, ldb,
                                              beta, c, ldc);
      DGP_CHECK(status == dnnl_success, "matmul (oneDNN sgemm): status " << static_cast<int>(status) << " for "
                                            << rows << "x" << N << "x" << K);
    });
    return;
  }
#endif
  configure_openblas_threads();
  gemm_by_rows(ta, M, N, K, A, lda, C, ldc, [&](int rows, const float* a, float* c) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, rows,
                static_cast<int>(N), static_cast<int>(K), alpha, a, static_cast<int>(lda), B,
                static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
  });
}
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  configure_openblas_threads();
  gemm_by_rows(ta, M, N, K, A, lda, C, ldc, [&](int rows, const double* a, double* c) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, rows,
                static_cast<int>(N), static_cast<int>(K), alpha, a, static_cast<int>(lda), B,
                static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
  });
}
}  // namespace cpu

namespace {

// A 2-D matrix operand for BLAS: unit stride in one of its dims (else it is copied contiguous).
struct Operand {
  Tensor t;
  bool trans = false;
  int64_t ld = 0;
};

Operand as_blas_operand(const Tensor& m) {  // m is 2-D
  Operand op;
  if (m.stride(1) == 1 && m.stride(0) >= std::max<int64_t>(1, m.size(1))) {
    op.t = m;
    op.ld = m.stride(0);
  } else if (m.stride(0) == 1 && m.stride(1) >= std::max<int64_t>(1, m.size(0))) {
    op.t = m;
    op.trans = true;
    op.ld = m.stride(1);
  } else {
    op.t = m.contiguous();
    op.ld = std::max<int64_t>(1, m.size(1));
  }
  return op;
}

void bmm_cpu(const Tensor& out, const Tensor& a, const Tensor& b) {
  int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  DGP_DISPATCH_FLOATING(a.dtype(), "bmm", [&] {
    scalar_t* o = out.data<scalar_t>();
    for (int64_t i = 0; i < B; ++i) {
      Operand oa = as_blas_operand(a.select(0, i));
      Operand ob = as_blas_operand(b.select(0, i));
      if (K == 0) {
        for (int64_t j = 0; j < M * N; ++j) o[i * M * N + j] = 0;
        continue;
      }
      cpu::gemm(oa.trans, ob.trans, M, N, K, scalar_t(1), static_cast<const scalar_t*>(oa.t.raw_data()),
                oa.ld, static_cast<const scalar_t*>(ob.t.raw_data()), ob.ld, scalar_t(0), o + i * M * N,
                std::max<int64_t>(1, N));
    }
  });
}

Tensor bmm_raw(const Tensor& a, const Tensor& b) {
  Tensor out = empty({a.size(0), a.size(1), b.size(2)}, TensorOptions(a.dtype(), a.device()));
  if (a.device().is_cuda()) {
    cuda_kernels::bmm(out, a, b);
    return out;
  }
  if (a.dtype() == DType::f16 || a.dtype() == DType::bf16) {
    return bmm_raw(a.to(DType::f32), b.to(DType::f32)).to(a.dtype());
  }
  NoGradGuard ng;
  bmm_cpu(out, a.detach(), b.detach());
  return out;
}

}  // namespace

Tensor bmm(const Tensor& a, const Tensor& b) {
  DGP_CHECK(a.defined() && b.defined(), "bmm: undefined input");
  DGP_CHECK(a.dim() == 3 && b.dim() == 3,
            "bmm: expected 3-D tensors, got " << shape_str(a.shape()) << " and " << shape_str(b.shape()));
  DGP_CHECK(a.size(0) == b.size(0) && a.size(2) == b.size(1),
            "bmm: shapes " << shape_str(a.shape()) << " and " << shape_str(b.shape()) << " do not match");
  DGP_CHECK(a.dtype() == b.dtype(),
            "bmm: dtype mismatch (" << dtype_name(a.dtype()) << " and " << dtype_name(b.dtype()) << ")");
  DGP_CHECK(a.device() == b.device(), "bmm: inputs on " << a.device().str() << " and " << b.device().str());
  DGP_CHECK(is_floating(a.dtype()), "bmm: expected floating tensors, got " << dtype_name(a.dtype()));
  Tensor out = bmm_raw(a, b);
  if (needs_grad({a, b})) {
    bool ga = a.requires_grad(), gb = b.requires_grad();
    Tensor sa = a.detach(), sb = b.detach();
    record("bmm", {a, b}, out, [sa, sb, ga, gb](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{ga ? bmm_raw(g[0], sb.transpose(1, 2)) : Tensor(),
                                 gb ? bmm_raw(sa.transpose(1, 2), g[0]) : Tensor()};
    });
  }
  return out;
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  DGP_CHECK(a.defined() && b.defined(), "matmul: undefined input");
  DGP_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: 0-d operands (shapes " << shape_str(a.shape()) << " and "
                                                                          << shape_str(b.shape()) << ")");
  // Promote vectors to matrices, broadcast batch dims, run one bmm, then drop the promoted dims.
  Tensor a2 = a.dim() == 1 ? a.unsqueeze(0) : a;
  Tensor b2 = b.dim() == 1 ? b.unsqueeze(1) : b;
  int64_t M = a2.size(-2), K = a2.size(-1), K2 = b2.size(-2), N = b2.size(-1);
  DGP_CHECK(K == K2, "matmul: shapes " << shape_str(a.shape()) << " and " << shape_str(b.shape())
                                       << " cannot be multiplied (" << K << " != " << K2 << ")");
  Shape ba(a2.shape().begin(), a2.shape().end() - 2), bb(b2.shape().begin(), b2.shape().end() - 2);
  size_t nb = std::max(ba.size(), bb.size());
  Shape batch(nb);
  for (size_t i = 0; i < nb; ++i) {
    int64_t da = i < nb - ba.size() ? 1 : ba[i - (nb - ba.size())];
    int64_t db = i < nb - bb.size() ? 1 : bb[i - (nb - bb.size())];
    DGP_CHECK(da == db || da == 1 || db == 1, "matmul: batch dims of " << shape_str(a.shape()) << " and "
                                                                       << shape_str(b.shape())
                                                                       << " cannot be broadcast");
    batch[i] = da == 1 ? db : da;
  }
  int64_t B = shape_numel(batch);
  Shape ea = batch, eb = batch;
  ea.push_back(M);
  ea.push_back(K);
  eb.push_back(K);
  eb.push_back(N);
  Tensor a3, b3;
  if (bb.empty() && b2.dim() == 2 && a2.is_contiguous()) {
    // [.., M, K] x [K, N]: fold the batch into M (one big GEMM, no expand copy).
    Tensor flat = a2.reshape({1, B * M, K});
    Tensor out = bmm(flat, b2.unsqueeze(0)).reshape([&] {
      Shape s = batch;
      s.push_back(M);
      s.push_back(N);
      return s;
    }());
    if (a.dim() == 1) out = out.squeeze(-2);
    if (b.dim() == 1) out = out.squeeze(-1);
    return out;
  }
  a3 = a2.expand(ea).reshape({B, M, K});
  b3 = b2.expand(eb).reshape({B, K, N});
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor out = bmm(a3, b3).reshape(out_shape);
  if (a.dim() == 1) out = out.squeeze(-2);
  if (b.dim() == 1) out = out.squeeze(-1);
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  DGP_CHECK(x.defined() && weight.defined(), "linear: undefined input or weight");
  DGP_CHECK(weight.dim() == 2, "linear: weight must be 2-D [out,in], got " << shape_str(weight.shape()));
  DGP_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1),
            "linear: input " << shape_str(x.shape()) << " does not match weight " << shape_str(weight.shape())
                             << " (expected last dim " << weight.size(1) << ")");
  Tensor y = matmul(x, weight.t());
  if (bias.defined()) {
    DGP_CHECK(
        bias.dim() == 1 && bias.size(0) == weight.size(0),
        "linear: bias " << shape_str(bias.shape()) << " does not match weight " << shape_str(weight.shape()));
    y = add(y, bias);
  }
  return y;
}

}  // namespace dgpipe::engine
