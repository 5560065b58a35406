// Low-rank codecs on the matrix view of a tensor: 4-D [b,C,H,W] -> b matrices C x HW, 3-D [b,m,n] as given,
// 2-D one matrix, 1-D a 1 x N row, 5-D+ [d0, d1, rest]. Both send L [b,m,r] and R [b,n,r] (f32) and decode L
// R^T.
//
// power:R/I — power iteration (docs/original.md#power-iteration) with the fix of orthonormalising every
//   iteration (same subspace, no overflow; bug B6 there).
//   State P [b,n,r] persists in the codec instance (one instance per boundary and direction = warm
//   start); it starts from Philox normals. Each iteration: P <- orth(P); Q <- A P; Q <- orth(Q); P <- A^T Q.
//   Sent: L = Q (orthonormal), R = P = A^T Q; decode Q Q^T A, the projection on the tracked subspace.
// svd:R/I — randomized SVD (Halko et al.): sketch Y = A Omega with l = R + min(R, 8) Gaussian columns (fresh,
//   counter-based seed per call), I subspace iterations, Q = orth(Y), B = Q^T A (l x n), eigen-decomposition
//   of B B^T (Jacobi) -> top R eigenvectors W; send L = Q W, R = B^T W. Decode L R^T = Q W W^T Q^T A (best
//   rank-R approximation of A within the sketched subspace, singular values folded into R).
// Cost: 2I + 1 GEMM passes over A (power), 2I + 3 (svd); memory O(b (m + n) l). CUDA tensors run the twin in
// lowrank.cu (batched cuBLAS GEMMs, one-block-per-matrix orthonormalisation and Jacobi, state on the device);
// svd of a rank above cuda_kernels::kSvdMaxCudaRank runs this reference on a host copy.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "compress/codec_impl.h"
#include "compress/lowrank_kernels.h"
#include "engine/autograd.h"
#include "engine/cpu_features.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/ops/gemm.h"
#include "engine/rng.h"

namespace dgpipe::compress::detail {

struct MatrixView {
  int64_t b, m, n;
};

MatrixView matrix_view(const engine::Shape& s) {
  if (s.empty()) return {1, 1, 1};
  if (s.size() == 1) return {1, 1, s[0]};
  if (s.size() == 2) return {1, s[0], s[1]};
  if (s.size() == 3) return {s[0], s[1], s[2]};
  int64_t rest = 1;
  for (size_t i = 2; i < s.size(); ++i) rest *= s[i];
  return {s[0], s[1], rest};
}

namespace {

using engine::Tensor;

// The two loops of the orthonormalisation, compiled twice: for plain x86-64 (SSE2) and for AVX2, chosen at
// run time (target_clones). Both do the same IEEE double operations in the same order (no fused multiply-add,
// see rank_rows_lanes), so the bytes do not depend on the machine.
#if defined(__x86_64__)
#define DGP_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DGP_VECTOR_CLONES
#endif

// Sum of a[r] * b[r], r < n, in double: eight partial sums (sum k takes the r with r % 8 == k, in increasing
// r), added in a fixed tree at the end. Independent sums instead of one chain of dependent additions let the
// loop run at the vector units' rate; the order is fixed, so the result does not depend on the machine or
// the thread count.
DGP_VECTOR_CLONES double dot(const double* a, const double* b, int64_t n) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t r = 0;
  for (; r + 8 <= n; r += 8)
    for (int k = 0; k < 8; ++k) s[k] += a[r + k] * b[r + k];
  for (int k = 0; r < n; ++r, ++k) s[k] += a[r] * b[r];
  return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

// col[r] -= d * a[r], r < n, and then dot(col, next, n) — or dot(col, col, n) when next is null, the norm
// after the last projection — in the same pass: the bits of the two calls one after the other (each col[r] is
// final before it is multiplied; the same lanes and final tree as dot), one pass over col instead of two.
template <bool kSquare>
inline double subtract_then_dot_lanes(double* __restrict col, double d, const double* __restrict a,
                                      const double* __restrict next, int64_t n) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t r = 0;
  for (; r + 8 <= n; r += 8)
    for (int k = 0; k < 8; ++k) {
      const double v = col[r + k] - d * a[r + k];
      col[r + k] = v;
      s[k] += v * (kSquare ? v : next[r + k]);
    }
  for (int k = 0; r < n; ++r, ++k) {
    const double v = col[r] - d * a[r];
    col[r] = v;
    s[k] += v * (kSquare ? v : next[r]);
  }
  return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}
DGP_VECTOR_CLONES double subtract_multiple_then_dot(double* col, double d, const double* a, const double* next,
                                                    int64_t n) {
  return next == nullptr ? subtract_then_dot_lanes<true>(col, d, a, nullptr, n)
                         : subtract_then_dot_lanes<false>(col, d, a, next, n);
}

// col[r] = col[r] / norm, rounded to f32 (and kept as a double), r < n. A loop of its own so that the
// divisions run 4 wide where the CPU has AVX2 (they were a tenth of an svd:4 encode as SSE2 code).
DGP_VECTOR_CLONES void divide_and_round_to_float(double* col, double norm, int64_t n) {
  for (int64_t r = 0; r < n; ++r) col[r] = static_cast<float>(col[r] / norm);
}

// Orthonormalises the columns of a row-major [rows x cols] matrix in place (modified Gram-Schmidt, two passes
// for stability). A column that collapses (rank deficiency) is replaced by a fresh Philox direction and
// re-orthogonalised, or zeroed if even that fails (then L R^T simply loses that direction).
void orthonormalize(float* a, int64_t rows, int64_t cols, uint64_t seed) {
  // The columns as doubles, one after the other (the f32 values, so every product is the one of a[r, k]):
  // contiguous loops instead of a stride of `cols`. A finished column is stored back rounded to f32, and
  // the later columns see that rounded value, as they would in a.
  std::vector<double> t(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) t[k * rows + r] = a[r * cols + k];
  for (int64_t c = 0; c < cols; ++c) {
    double* col = t.data() + c * rows;
    double norm0 = std::sqrt(dot(col, col, rows));
    for (int attempt = 0; attempt < 2; ++attempt) {
      // Two passes of projections on columns 0..c-1, then the norm; each projection's subtraction and the
      // next dot product (with the next column, or col itself for the norm) share one pass.
      double d = c > 0 ? dot(col, t.data(), rows) : dot(col, col, rows);
      for (int64_t step = 0; step < 2 * c; ++step) {
        const double* ak = t.data() + (step % c) * rows;
        const double* next = step + 1 < 2 * c ? t.data() + ((step + 1) % c) * rows : nullptr;
        d = subtract_multiple_then_dot(col, d, ak, next, rows);
      }
      const double norm = std::sqrt(d);
      if (norm > 1e-6 * norm0 && norm > 1e-30) {
        divide_and_round_to_float(col, norm, rows);
        break;
      }
      if (attempt == 1 || c >= rows) {
        for (int64_t r = 0; r < rows; ++r) col[r] = 0.0;
        break;
      }
      engine::PhiloxState st{seed + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(c + 1), 0};
      for (int64_t r = 0; r < rows; ++r) col[r] = engine::philox_normal(st, static_cast<uint64_t>(r));
      norm0 = std::sqrt(dot(col, col, rows));
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) a[r * cols + k] = static_cast<float>(t[k * rows + r]);
}

// out[i] = philox_normal(st, i) for i < count, one Philox block and one Box-Muller transform per pair of
// values (philox_normal draws elements 2j and 2j + 1 from the same ones).
void philox_normals(engine::PhiloxState st, float* out, size_t count) {
  for (size_t i = 0; i < count; i += 2) {
    uint32_t w[4];
    engine::philox4x32(st.seed, st.offset + i / 2, w);
    float r, theta;
    engine::box_muller(w, r, theta);
    out[i] = r * std::cos(theta);
    if (i + 1 < count) out[i + 1] = r * std::sin(theta);
  }
}

// C[m x r] = A[m x n] * B[n x r]  (trans_a: A is stored [n x m] and used transposed)
void gemm(bool trans_a, const float* a, const float* bm, float* c, int64_t m, int64_t n, int64_t r) {
  engine::cpu::gemm(trans_a, false, m, r, n, 1.0f, a, trans_a ? m : n, bm, r, 0.0f, c, r);
}

// Symmetric eigen-decomposition of a small l x l matrix (cyclic Jacobi); eigenvalues descending, vectors in
// columns.
void symmetric_eigen(std::vector<double>& g, int64_t l, std::vector<double>& vecs,
                     std::vector<double>& vals) {
  vecs.assign(l * l, 0.0);
  for (int64_t i = 0; i < l; ++i) vecs[i * l + i] = 1.0;
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0;
    for (int64_t p = 0; p < l; ++p)
      for (int64_t q = p + 1; q < l; ++q) off += g[p * l + q] * g[p * l + q];
    if (off < 1e-30) break;
    for (int64_t p = 0; p < l; ++p)
      for (int64_t q = p + 1; q < l; ++q) {
        double apq = g[p * l + q];
        if (std::fabs(apq) < 1e-300) continue;
        double theta = (g[q * l + q] - g[p * l + p]) / (2 * apq);
        double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int64_t k = 0; k < l; ++k) {
          double gkp = g[k * l + p], gkq = g[k * l + q];
          g[k * l + p] = c * gkp - s * gkq;
          g[k * l + q] = s * gkp + c * gkq;
        }
        for (int64_t k = 0; k < l; ++k) {
          double gpk = g[p * l + k], gqk = g[q * l + k];
          g[p * l + k] = c * gpk - s * gqk;
          g[q * l + k] = s * gpk + c * gqk;
        }
        for (int64_t k = 0; k < l; ++k) {
          double vkp = vecs[k * l + p], vkq = vecs[k * l + q];
          vecs[k * l + p] = c * vkp - s * vkq;
          vecs[k * l + q] = s * vkp + c * vkq;
        }
      }
  }
  vals.resize(l);
  for (int64_t i = 0; i < l; ++i) vals[i] = g[i * l + i];
}

// Rows of a rank-r product: o[i n + j] = sum over k < r of l[i r + k] rt[k n + j] for i < rows, summed in
// increasing k with a separate multiply and add per term (this file is compiled with -ffp-contract=off,
// compress/CMakeLists.txt, so no pair becomes a fused multiply-add), so that every path gives the bits of the
// plain loop. W lanes of the compiler's vector extension at a time, then the row's tail one by one; W = 1 is
// the plain loop.
//
// Columns outside, rows inside: a block of W columns of rt (R vectors, R = r known at compile time) stays in
// registers while every row uses it, so a row of a thin product (n = 16 at a [b,1280,4,4] boundary) costs R
// broadcasts, multiplies and adds and one store, not R loads of rt again.
template <int W, int R>
__attribute__((always_inline)) inline void rank_rows_fixed(const float* l, const float* rt, int64_t n,
                                                           int64_t rows, float* o) {
  typedef float Lanes __attribute__((vector_size(4 * W)));
  int64_t j = 0;
  for (; W > 1 && j + W <= n; j += W) {
    Lanes t[R];
    for (int k = 0; k < R; ++k) std::memcpy(&t[k], rt + k * n + j, sizeof(Lanes));
    for (int64_t i = 0; i < rows; ++i) {
      const float* li = l + i * R;
      Lanes acc = li[0] * t[0];
      for (int k = 1; k < R; ++k) acc = acc + li[k] * t[k];
      std::memcpy(o + i * n + j, &acc, sizeof(Lanes));
    }
  }
  for (int64_t i = 0; i < rows && j < n; ++i)
    for (int64_t jj = j; jj < n; ++jj) {
      float acc = l[i * R] * rt[jj];
      for (int k = 1; k < R; ++k) acc += l[i * R + k] * rt[k * n + jj];
      o[i * n + jj] = acc;
    }
}

// Any rank: rt is read again for every row.
template <int W>
__attribute__((always_inline)) inline void rank_rows_any(const float* l, const float* rt, int64_t n, int64_t r,
                                                         int64_t rows, float* o) {
  typedef float Lanes __attribute__((vector_size(4 * W)));
  for (int64_t i = 0; i < rows; ++i, l += r, o += n) {
    int64_t j = 0;
    for (; W > 1 && j + W <= n; j += W) {
      Lanes acc, term;
      std::memcpy(&acc, rt + j, sizeof(Lanes));
      acc = l[0] * acc;
      for (int64_t k = 1; k < r; ++k) {
        std::memcpy(&term, rt + k * n + j, sizeof(Lanes));
        acc = acc + l[k] * term;
      }
      std::memcpy(o + j, &acc, sizeof(Lanes));
    }
    for (; j < n; ++j) {
      float acc = l[0] * rt[j];
      for (int64_t k = 1; k < r; ++k) acc += l[k] * rt[k * n + j];
      o[j] = acc;
    }
  }
}

// Ranks up to 8 (every rank the presets and benchmarks use) with rt held in registers, others the loop above.
template <int W>
__attribute__((always_inline)) inline void rank_rows_lanes(const float* l, const float* rt, int64_t n,
                                                           int64_t r, int64_t rows, float* o) {
  switch (r) {
    case 1: return rank_rows_fixed<W, 1>(l, rt, n, rows, o);
    case 2: return rank_rows_fixed<W, 2>(l, rt, n, rows, o);
    case 3: return rank_rows_fixed<W, 3>(l, rt, n, rows, o);
    case 4: return rank_rows_fixed<W, 4>(l, rt, n, rows, o);
    case 5: return rank_rows_fixed<W, 5>(l, rt, n, rows, o);
    case 6: return rank_rows_fixed<W, 6>(l, rt, n, rows, o);
    case 7: return rank_rows_fixed<W, 7>(l, rt, n, rows, o);
    case 8: return rank_rows_fixed<W, 8>(l, rt, n, rows, o);
    default: return rank_rows_any<W>(l, rt, n, r, rows, o);
  }
}

using RankRowsFn = void (*)(const float*, const float*, int64_t, int64_t, int64_t, float*);
void rank_rows_plain(const float* l, const float* rt, int64_t n, int64_t r, int64_t rows, float* o) {
  rank_rows_lanes<1>(l, rt, n, r, rows, o);
}
#if defined(__x86_64__)
__attribute__((target("avx2"))) void rank_rows_avx2(const float* l, const float* rt, int64_t n, int64_t r,
                                                    int64_t rows, float* o) {
  rank_rows_lanes<8>(l, rt, n, r, rows, o);
}
__attribute__((target("avx512f"))) void rank_rows_avx512(const float* l, const float* rt, int64_t n,
                                                         int64_t r, int64_t rows, float* o) {
  rank_rows_lanes<16>(l, rt, n, r, rows, o);
}
#endif

// The widest path this CPU runs (checked at run time: the build targets plain x86-64).
RankRowsFn rank_rows_for_this_cpu() {
#if defined(__x86_64__)
  if (engine::cpu_has_avx512()) return rank_rows_avx512;
  if (engine::cpu_has_avx2()) return rank_rows_avx2;
#endif
  return rank_rows_plain;
}

// out[b, i, j] = sum over k < r of L[b, i, k] R[b, j, k] (rank_rows_lanes). One sample's R is first
// transposed to [r, n], so that a row is r contiguous multiply-adds across the row (a rank-r product is too
// thin for a GEMM call per sample to pay off). Rows of all samples are split over the op threads; every row
// is computed alone, so the values do not depend on the thread count.
void lowrank_product(const float* lbuf, const MatrixView& mv, int64_t r, float* out) {
  static const RankRowsFn rank_rows = rank_rows_for_this_cpu();
  const float* rbuf = lbuf + mv.b * mv.m * r;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, mv.n * r));
  engine::parallel_for(mv.b * mv.m, grain, [&](int64_t row0, int64_t row1) {
    std::vector<float> rt(static_cast<size_t>(mv.n * r));
    for (int64_t row = row0; row < row1;) {
      const int64_t bi = row / mv.m, end = std::min(row1, (bi + 1) * mv.m);  // this sample's rows
      const float* rb = rbuf + bi * mv.n * r;
      for (int64_t j = 0; j < mv.n; ++j)
        for (int64_t k = 0; k < r; ++k) rt[k * mv.n + j] = rb[j * r + k];
      rank_rows(lbuf + row * r, rt.data(), mv.n, r, end - row, out + row * mv.n);
      row = end;
    }
  });
}

class LowRankCodec : public Codec {
 public:
  LowRankCodec(CodecId id, int rank, int iters) : id_(id), rank_(rank), iters_(iters) {}
  CodecId id() const override { return id_; }
  std::string spec() const override {
    return std::string(codec_id_name(id_)) + ":" + std::to_string(rank_) + "/" + std::to_string(iters_);
  }
  int64_t effective_rank(const engine::Shape& s) const {
    MatrixView mv = matrix_view(s);
    return std::max<int64_t>(1, std::min<int64_t>({rank_, mv.m, mv.n}));
  }
  std::vector<int64_t> header_params(const engine::Shape& s) const override {
    return {rank_, iters_, effective_rank(s)};
  }
  uint64_t body_bytes(const engine::Shape& s) const override {
    MatrixView mv = matrix_view(s);
    if (engine::shape_numel(s) == 0) return lowrank_l_offset();
    const int64_t r = effective_rank(s);
    return lowrank_l_offset() + 4ull * static_cast<uint64_t>(mv.b * (mv.m + mv.n) * r);
  }

  Packet encode(const Tensor& x) override {
    Packet p = start_packet(x);
    const MatrixView mv = matrix_view(x.shape());
    const int64_t r = effective_rank(x.shape());
    if (x.is_cuda() && cuda_supported(r)) {
      engine::NoGradGuard no_grad;
      if (x.numel() == 0) {
        p.body = make_body(p.header.body_bytes, x.device());
      } else {
        Tensor xf = contiguous_f32(x);
        p.body = device_body(p, x.device());
        prepare(mv, r, x.device());
        encode_cuda(xf.reshape({mv.b, mv.m, mv.n}), p.body, r);
      }
      ++calls_;
      return p;
    }
    const HostValues v(x);
    Tensor body = make_body(p.header.body_bytes, engine::Device::cpu());
    if (v.size() > 0) {
      prepare(mv, r, engine::Device::cpu());
      float* lbuf = reinterpret_cast<float*>(body.data<uint8_t>() + lowrank_l_offset());
      float* rbuf = lbuf + mv.b * mv.m * r;
      // The GEMMs' f32 operand: the input itself when it is f32, else one converted copy.
      // Samples are independent (each reads its own matrix and state, and its seeds name it): they run on
      // the op threads, and the bytes do not depend on how many there are.
      const float* a = v.floats();
      engine::parallel_for(mv.b, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t bi = b0; bi < b1; ++bi)
          factor(a + bi * mv.m * mv.n, mv.m, mv.n, r, bi, mv, lbuf + bi * mv.m * r, rbuf + bi * mv.n * r);
      });
    }
    p.body = x.is_cuda() ? body.to(x.device()) : body;
    ++calls_;
    return p;
  }

  Tensor decode_as(const Packet& p, engine::DType dtype) override {
    check_packet(p);
    if (p.body.is_cuda()) {
      engine::NoGradGuard no_grad;
      const MatrixView mv = matrix_view(p.header.shape);
      Tensor out =
          engine::empty({mv.b, mv.m, mv.n}, engine::TensorOptions(engine::DType::f32, p.body.device()));
      if (out.numel() > 0) cuda_kernels::lowrank_decode(p.body, out, p.header.params[2]);
      return finish_decode(out.reshape(p.header.shape), dtype, p.body.device());
    }
    p.check_status();
    Tensor hb = p.host_body();
    Tensor out = engine::empty(p.header.shape, engine::DType::f32);
    if (out.numel() > 0) {
      const float* lbuf = reinterpret_cast<const float*>(hb.data<uint8_t>() + lowrank_l_offset());
      lowrank_product(lbuf, matrix_view(p.header.shape), p.header.params[2], out.data<float>());
    }
    return finish_decode(out, dtype, p.body.device());
  }

 protected:
  // Called once per encode of a non-empty tensor, before factor()/encode_cuda() (the power codec's warm
  // start).
  virtual void prepare(const MatrixView& mv, int64_t r, engine::Device device) {}
  // Whether the CUDA twin handles this rank (otherwise a CUDA tensor runs the CPU reference on a host copy).
  virtual bool cuda_supported(int64_t r) const { return true; }
  // a: contiguous f32 [b, m, n] on a CUDA device; writes the whole body.
  virtual void encode_cuda(const Tensor& a, const Tensor& body, int64_t r) = 0;
  virtual void factor(const float* a, int64_t m, int64_t n, int64_t r, int64_t batch_index,
                      const MatrixView& mv, float* lout, float* rout) = 0;
  CodecId id_;
  int rank_, iters_;
  uint64_t calls_ = 0;
};

class PowerCodec final : public LowRankCodec {
 public:
  PowerCodec(int rank, int iters) : LowRankCodec(CodecId::power, rank, iters) {}

 protected:
  // (Re)initialises the warm-start state P [b, n, r] when the boundary's shape changes (Philox normals, the
  // same on both devices), and moves it to the device of the input (it then stays there between calls).
  void prepare(const MatrixView& mv, int64_t r, engine::Device device) override {
    if (!state_.defined() || state_b_ != mv.b || state_m_ != mv.m || state_n_ != mv.n || state_r_ != r) {
      const engine::PhiloxState st{0x90e3u + static_cast<uint64_t>(r), 0};
      if (device.is_cuda()) {
        state_ = engine::empty({mv.b, mv.n, r}, engine::TensorOptions(engine::DType::f32, device));
        cuda_kernels::power_init_state(state_, r);
      } else {
        state_ = engine::empty({mv.b, mv.n, r}, engine::DType::f32);
        philox_normals(st, state_.data<float>(), static_cast<size_t>(state_.numel()));
      }
      state_b_ = mv.b, state_m_ = mv.m, state_n_ = mv.n, state_r_ = r;
    } else if (state_.device() != device) {
      state_ = state_.to(device);
    }
  }
  void encode_cuda(const Tensor& a, const Tensor& body, int64_t r) override {
    cuda_kernels::power_encode(a, state_, body, r, iters_, calls_);
  }
  void factor(const float* a, int64_t m, int64_t n, int64_t r, int64_t bi, const MatrixView& mv, float* lout,
              float* rout) override {
    float* pm = state_.data<float>() + bi * n * r;
    for (int it = 0; it < iters_; ++it) {
      orthonormalize(pm, n, r, 0x5151u + calls_ * 1315423911ull + static_cast<uint64_t>(bi));
      gemm(false, a, pm, lout, m, n, r);  // Q = A P
      orthonormalize(lout, m, r, 0xa11ceu + calls_ * 2654435761ull + static_cast<uint64_t>(bi));
      gemm(true, a, lout, pm, n, m, r);  // P = A^T Q
    }
    std::memcpy(rout, pm, sizeof(float) * static_cast<size_t>(n * r));
  }

 private:
  Tensor state_;  // P [b, n, r] f32 on the device of the last input
  int64_t state_b_ = -1, state_m_ = -1, state_n_ = -1, state_r_ = -1;
};

class SvdCodec final : public LowRankCodec {
 public:
  SvdCodec(int rank, int iters) : LowRankCodec(CodecId::svd, rank, iters) {}

 protected:
  bool cuda_supported(int64_t r) const override { return r <= cuda_kernels::kSvdMaxCudaRank; }
  void encode_cuda(const Tensor& a, const Tensor& body, int64_t r) override {
    cuda_kernels::svd_encode(a, body, r, iters_, calls_);
  }
  void factor(const float* a, int64_t m, int64_t n, int64_t r, int64_t bi, const MatrixView&, float* lout,
              float* rout) override {
    const int64_t l = std::min<int64_t>({r + std::min<int64_t>(r, 8), m, n});
    std::vector<float> omega(static_cast<size_t>(n * l)), y(static_cast<size_t>(m * l)),
        z(static_cast<size_t>(n * l));
    engine::PhiloxState st{0x5dd0u + calls_ * 0x100000001b3ull + static_cast<uint64_t>(bi) * 7919u, 0};
    philox_normals(st, omega.data(), omega.size());
    gemm(false, a, omega.data(), y.data(), m, n, l);  // Y = A Omega
    for (int it = 0; it < iters_; ++it) {
      orthonormalize(y.data(), m, l, st.seed + 1 + it);
      gemm(true, a, y.data(), z.data(), n, m, l);  // Z = A^T Y
      orthonormalize(z.data(), n, l, st.seed + 101 + it);
      gemm(false, a, z.data(), y.data(), m, n, l);  // Y = A Z
    }
    orthonormalize(y.data(), m, l, st.seed + 999);  // Q
    // Bt = A^T Q  [n x l] (= B^T)
    gemm(true, a, y.data(), z.data(), n, m, l);
    // G = B B^T = Bt^T Bt  [l x l]
    // Row by row of Bt: every entry is still summed over k in increasing order, but the l(l+1)/2 sums advance
    // together instead of one long dependent chain at a time.
    std::vector<double> g(static_cast<size_t>(l * l), 0.0);
    for (int64_t k = 0; k < n; ++k) {
      const float* zk = z.data() + k * l;
      for (int64_t i = 0; i < l; ++i)
        for (int64_t j = i; j < l; ++j) g[i * l + j] += double(zk[i]) * zk[j];
    }
    for (int64_t i = 0; i < l; ++i)
      for (int64_t j = 0; j < i; ++j) g[i * l + j] = g[j * l + i];
    std::vector<double> vecs, vals;
    symmetric_eigen(g, l, vecs, vals);
    std::vector<int64_t> order(l);
    for (int64_t i = 0; i < l; ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y2) { return vals[x] > vals[y2]; });
    std::vector<float> w(static_cast<size_t>(l * r));
    for (int64_t i = 0; i < l; ++i)
      for (int64_t j = 0; j < r; ++j) w[i * r + j] = static_cast<float>(vecs[i * l + order[j]]);
    gemm(false, y.data(), w.data(), lout, m, l, r);  // L = Q W
    gemm(false, z.data(), w.data(), rout, n, l, r);  // R = B^T W
  }
};

}  // namespace

std::unique_ptr<Codec> make_power_codec(const CodecSpec& spec) {
  return std::make_unique<PowerCodec>(spec.rank, spec.iterations);
}
std::unique_ptr<Codec> make_svd_codec(const CodecSpec& spec) {
  return std::make_unique<SvdCodec>(spec.rank, spec.iterations);
}

}  // namespace dgpipe::compress::detail
