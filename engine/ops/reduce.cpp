// Reductions: sum, mean, var, max/min (with indices), argmax.
// Every reduction moves the reduced dims last, makes the tensor contiguous, and reduces rows of a 2-D view.
#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/ops.h"
#include "engine/ops/cpu_loops.h"
#include "engine/ops/reduce_kernels.h"
#include "engine/parallel.h"

namespace dgpipe::engine {

namespace {

// Reductions are split over the threads in chunks of at least this many input elements.
constexpr int64_t kReduceGrain = 1 << 15;

struct Plan {
  Tensor permuted;            // the input with the reduced dims moved last (a view: nothing copied yet)
  std::vector<bool> reduced;  // per input dim
  Shape out_shape;            // without reduced dims
  Shape keep_shape;           // reduced dims kept as 1
  int64_t outer = 1, inner = 1;
  Tensor rows() const { return permuted.contiguous().view({outer, inner}); }  // contiguous [outer, inner]
};

Plan plan_reduction(const Tensor& a, std::vector<int64_t> dims, const char* op) {
  DGP_CHECK(a.defined(), op << ": undefined input");
  std::vector<bool> reduced(a.dim(), false);
  if (dims.empty())
    for (int64_t d = 0; d < a.dim(); ++d) dims.push_back(d);
  for (int64_t& d : dims) {
    d = wrap_dim(d, a.dim(), op);
    if (a.dim() == 0) continue;
    DGP_CHECK(!reduced[d], op << ": dim " << d << " given twice");
    reduced[d] = true;
  }
  Shape perm, out_shape, keep_shape;
  int64_t inner = 1;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (!reduced[d]) {
      perm.push_back(d);
      out_shape.push_back(a.shape()[d]);
    }
  for (int64_t d = 0; d < a.dim(); ++d)
    if (reduced[d]) {
      perm.push_back(d);
      inner *= a.shape()[d];
    }
  for (int64_t d = 0; d < a.dim(); ++d) keep_shape.push_back(reduced[d] ? 1 : a.shape()[d]);
  Plan p;
  p.permuted = a.detach().permute(perm);
  p.reduced = reduced;
  p.out_shape = out_shape;
  p.keep_shape = keep_shape;
  p.outer = shape_numel(out_shape);
  p.inner = inner;
  return p;
}

// A CUDA sum of a contiguous input over dims that are not last, read in place (no transposed copy): one
// reduced group in the middle, [outer, reduce, inner], or (f32/f64) reduced groups around one kept group,
// [reduce, kept, reduce] (batch-norm-style statistics), as a row sum followed by a middle sum. Returns an
// undefined tensor for any other layout.
Tensor sum_in_place_cuda(const Tensor& a, const Plan& p) {
  if (!a.is_cuda() || !a.is_contiguous()) return Tensor();
  const std::vector<ReduceGroup> g = reduction_groups(a.shape(), p.reduced);
  const TensorOptions opts(a.dtype(), a.device());
  const Tensor x = a.detach();
  if (g.size() == 2 && g[0].reduced) {
    Tensor out = empty({g[1].size}, opts);
    cuda_kernels::sum_middle(out, x, 1, g[0].size, g[1].size);
    return out;
  }
  if (g.size() == 3 && g[1].reduced) {
    Tensor out = empty({g[0].size * g[2].size}, opts);
    cuda_kernels::sum_middle(out, x, g[0].size, g[1].size, g[2].size);
    return out;
  }
  if (g.size() == 3 && g[0].reduced && (a.dtype() == DType::f32 || a.dtype() == DType::f64)) {
    Tensor rows = empty({g[0].size * g[1].size}, opts);
    cuda_kernels::sum_lastdim(rows, x.view({g[0].size * g[1].size, g[2].size}));
    Tensor out = empty({g[1].size}, opts);
    cuda_kernels::sum_middle(out, rows, 1, g[0].size, g[1].size);
    return out;
  }
  return Tensor();
}

Tensor sum_rows(const Tensor& rows) {
  int64_t outer = rows.size(0), inner = rows.size(1);
  if (rows.device().is_cpu() && (rows.dtype() == DType::f16 || rows.dtype() == DType::bf16))
    return sum_rows(rows.to(DType::f32)).to(rows.dtype());
  Tensor out = empty({outer}, TensorOptions(rows.dtype(), rows.device()));
  if (rows.device().is_cuda()) {
    cuda_kernels::sum_lastdim(out, rows);
    return out;
  }
  DGP_DISPATCH_FLOATING(rows.dtype(), "sum", [&] {
    const scalar_t* x = rows.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    parallel_for(outer, std::max<int64_t>(1, kReduceGrain / std::max<int64_t>(1, inner)),
                 [&](int64_t r0, int64_t r1) {
                   for (int64_t r = r0; r < r1; ++r) {
                     // accumulate in double: the CPU twin is the oracle
                     double acc = 0;
                     const scalar_t* row = x + r * inner;
                     for (int64_t i = 0; i < inner; ++i) acc += row[i];
                     o[r] = static_cast<scalar_t>(acc);
                   }
                 });
  });
  return out;
}

// A CPU sum of a contiguous [reduce, kept] input over its leading dims (bias gradients: [N*L, D] -> [D]),
// read in place: each column's sum adds the same values in the same order as sum_rows over the transposed
// copy would, with the columns side by side (so the loop vectorises) and split over the threads. Undefined
// for any other layout.
Tensor sum_leading_cpu(const Tensor& a, const Plan& p) {
  if (!a.device().is_cpu() || !a.is_contiguous() || (a.dtype() != DType::f32 && a.dtype() != DType::f64))
    return Tensor();
  const std::vector<ReduceGroup> g = reduction_groups(a.shape(), p.reduced);
  if (g.size() != 2 || !g[0].reduced) return Tensor();
  const int64_t R = g[0].size, K = g[1].size;
  Tensor out = empty({K}, TensorOptions(a.dtype(), a.device()));
  DGP_DISPATCH_FLOATING(a.dtype(), "sum", [&] {
    const scalar_t* x = a.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    parallel_for(K, std::max<int64_t>(64, kReduceGrain / std::max<int64_t>(1, R)),
                 [&](int64_t k0, int64_t k1) {
                   std::vector<double> acc(static_cast<size_t>(k1 - k0), 0.0);
                   for (int64_t r = 0; r < R; ++r) {
                     const scalar_t* row = x + r * K + k0;
                     for (int64_t k = 0; k < k1 - k0; ++k) acc[k] += row[k];
                   }
                   for (int64_t k = k0; k < k1; ++k) o[k] = static_cast<scalar_t>(acc[k - k0]);
                 });
  });
  return out;
}

void maxmin_rows(const Tensor& rows, Tensor& values, Tensor& indices, bool is_max, const char* op) {
  int64_t outer = rows.size(0), inner = rows.size(1);
  DGP_CHECK(inner > 0, op << ": reduction over an empty dimension");
  if (rows.device().is_cpu() && (rows.dtype() == DType::f16 || rows.dtype() == DType::bf16)) {
    maxmin_rows(rows.to(DType::f32), values, indices, is_max, op);
    values = values.to(rows.dtype());
    return;
  }
  values = empty({outer}, TensorOptions(rows.dtype(), rows.device()));
  indices = empty({outer}, TensorOptions(DType::i64, rows.device()));
  if (rows.device().is_cuda()) {
    cuda_kernels::maxmin_lastdim(values, indices, rows, is_max);
    return;
  }
  DGP_DISPATCH_FLOATING(rows.dtype(), op, [&] {
    const scalar_t* x = rows.data<scalar_t>();
    scalar_t* v = values.data<scalar_t>();
    int64_t* ix = indices.data<int64_t>();
    for (int64_t r = 0; r < outer; ++r) {
      const scalar_t* row = x + r * inner;
      int64_t best = 0;
      for (int64_t i = 1; i < inner; ++i) {
        if (std::isnan(row[best])) break;  // NaN wins, like PyTorch
        if (std::isnan(row[i]) || (is_max ? row[i] > row[best] : row[i] < row[best])) best = i;
      }
      v[r] = row[best];
      ix[r] = best;
    }
  });
}

}  // namespace

Tensor sum(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  DGP_CHECK(a.defined() && is_floating(a.dtype()), "sum: expected a floating tensor");
  Plan p = plan_reduction(a, dims, "sum");
  Tensor flat = sum_in_place_cuda(a, p);
  if (!flat.defined()) flat = sum_leading_cpu(a, p);
  if (!flat.defined()) flat = sum_rows(p.rows());
  Tensor out = flat.view(keepdim ? p.keep_shape : p.out_shape);
  if (needs_grad({a})) {
    Shape keep = p.keep_shape, in_shape = a.shape();
    record("sum", {a}, out, [keep, in_shape](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0].reshape(keep).expand(in_shape).contiguous()};
    });
  }
  return out;
}

Tensor sum(const Tensor& a) {
  return sum(a, {}, false);
}

Tensor mean(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  Plan p = plan_reduction(a, dims, "mean");
  DGP_CHECK(p.inner > 0, "mean: reduction over zero elements");
  return mul(sum(a, dims, keepdim), 1.0 / static_cast<double>(p.inner));
}

Tensor mean(const Tensor& a) {
  return mean(a, {}, false);
}

Tensor var(const Tensor& a, const std::vector<int64_t>& dims, int64_t correction, bool keepdim) {
  Plan p = plan_reduction(a, dims, "var");
  DGP_CHECK(p.inner - correction > 0, "var: " << p.inner << " elements with correction " << correction);
  Tensor mu = mean(a, dims, true);
  Tensor d = sub(a, mu);
  return mul(sum(mul(d, d), dims, keepdim), 1.0 / static_cast<double>(p.inner - correction));
}

namespace {
ValuesIndices maxmin_dim(const Tensor& a, int64_t dim, bool keepdim, bool is_max, const char* op) {
  DGP_CHECK(a.defined() && is_floating(a.dtype()), op << ": expected a floating tensor");
  dim = wrap_dim(dim, a.dim(), op);
  Plan p = plan_reduction(a, {dim}, op);
  Tensor values, indices;
  maxmin_rows(p.rows(), values, indices, is_max, op);
  Shape shape = keepdim ? p.keep_shape : p.out_shape;
  values = values.view(shape);
  indices = indices.view(shape);
  if (needs_grad({a})) {
    Shape keep = p.keep_shape, in_shape = a.shape();
    Tensor idx = indices.detach().reshape(keep);
    int64_t d = a.dim() == 0 ? 0 : dim;
    record(op, {a}, values, [keep, in_shape, idx, d](const std::vector<Tensor>& g) {
      if (in_shape.empty()) return std::vector<Tensor>{g[0].reshape(in_shape)};
      Shape ar_shape(in_shape.size(), 1);
      ar_shape[d] = in_shape[d];
      Tensor positions = arange(0, in_shape[d], 1, TensorOptions(DType::i64, g[0].device())).view(ar_shape);
      Tensor hit = eq(positions.expand(in_shape), idx.expand(in_shape));
      Tensor ge = g[0].reshape(keep).expand(in_shape);
      return std::vector<Tensor>{where(hit, ge, zeros(in_shape, TensorOptions(g[0].dtype(), g[0].device())))};
    });
  }
  return {values, indices};
}

Tensor maxmin_all(const Tensor& a, bool is_max, const char* op) {
  DGP_CHECK(a.numel() > 0, op << ": empty tensor");
  Tensor flat = a.reshape({a.numel()});
  ValuesIndices vi = maxmin_dim(flat.detach(), 0, false, is_max, op);
  Tensor out = vi.values;
  if (needs_grad({a})) {
    Tensor x = a.detach();
    Tensor v = out.detach();
    record(op, {a}, out, [x, v](const std::vector<Tensor>& g) {
      // ties share the gradient evenly
      Tensor hit = eq(x, v.expand(x.shape()));
      Tensor hitf = cast(hit, x.dtype());
      Tensor count = sum(hitf);
      return std::vector<Tensor>{mul(hitf, div(g[0], count))};
    });
  }
  return out;
}
}  // namespace

ValuesIndices max(const Tensor& a, int64_t dim, bool keepdim) {
  return maxmin_dim(a, dim, keepdim, true, "max");
}
ValuesIndices min(const Tensor& a, int64_t dim, bool keepdim) {
  return maxmin_dim(a, dim, keepdim, false, "min");
}
Tensor max(const Tensor& a) {
  return maxmin_all(a, true, "max");
}
Tensor min(const Tensor& a) {
  return maxmin_all(a, false, "min");
}

Tensor argmax(const Tensor& a, int64_t dim, bool keepdim) {
  NoGradGuard ng;
  return maxmin_dim(a, dim, keepdim, true, "argmax").indices;
}

}  // namespace dgpipe::engine
