#include "engine/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <sstream>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/copy_kernels.h"
#include "engine/ops/cpu_loops.h"

namespace dgpipe::engine {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

int64_t wrap_dim(int64_t dim, int64_t rank, const char* op) {
  int64_t r = std::max<int64_t>(rank, 1);
  DGP_CHECK(dim >= -r && dim < r, op << ": dim " << dim << " out of range for a tensor of rank " << rank);
  return dim < 0 ? dim + r : dim;
}

int64_t Tensor::size(int64_t d) const {
  return impl().shape[wrap_dim(d, dim(), "size")];
}
int64_t Tensor::stride(int64_t d) const {
  return impl().strides[wrap_dim(d, dim(), "stride")];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (impl().shape[i] == 1) continue;
    if (impl().strides[i] != expected) return false;
    expected *= impl().shape[i];
  }
  return true;
}

namespace {

std::shared_ptr<TensorImpl> make_impl(std::shared_ptr<Storage> storage, Shape shape, Shape strides,
                                      int64_t offset, DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = dtype;
  return impl;
}

Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  return Tensor(make_impl(base.storage(), std::move(shape), std::move(strides), offset, base.dtype()));
}

// Shape with one -1 resolved against numel.
Shape infer_shape(const Shape& shape, int64_t numel, const char* op) {
  Shape out = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      DGP_CHECK(infer < 0, op << ": only one dimension can be -1 in " << shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      DGP_CHECK(out[i] >= 0, op << ": negative dimension in " << shape_str(shape));
      known *= out[i];
    }
  }
  if (infer >= 0) {
    DGP_CHECK(known != 0 && numel % known == 0,
              op << ": cannot infer -1 in " << shape_str(shape) << " for " << numel << " elements");
    out[infer] = numel / known;
  }
  DGP_CHECK(shape_numel(out) == numel,
            op << ": shape " << shape_str(shape) << " is invalid for a tensor of " << numel << " elements");
  return out;
}

// Strides for viewing `t` as `shape` without copying, if possible (PyTorch's computeStride rule).
bool view_strides(const Tensor& t, const Shape& shape, Shape& out) {
  const Shape& old_shape = t.shape();
  const Shape& old_strides = t.strides();
  out.assign(shape.size(), 0);
  if (t.numel() == 0 || old_shape.empty()) {
    out = contiguous_strides(shape);
    return true;
  }
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t tensor_d = static_cast<int64_t>(old_shape.size()) - 1; tensor_d >= 0; --tensor_d) {
    tensor_numel *= old_shape[tensor_d];
    if (tensor_d == 0 ||
        (old_shape[tensor_d - 1] != 1 && old_strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        out[view_d] = view_numel * chunk_base_stride;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (tensor_d > 0) {
        chunk_base_stride = old_strides[tensor_d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

}  // namespace

double Tensor::item() const {
  DGP_CHECK(numel() == 1, "item(): tensor of shape " << shape_str(shape()) << " has " << numel()
                                                     << " elements, expected 1");
  Tensor c = device().is_cpu() ? *this : to(Device::cpu());
  return load_as_double(c.storage()->data(), c.offset(), c.dtype());
}

std::vector<double> Tensor::to_vector() const {
  Tensor c = (device().is_cpu() ? *this : to(Device::cpu())).contiguous();
  std::vector<double> v(static_cast<size_t>(c.numel()));
  for (int64_t i = 0; i < c.numel(); ++i)
    v[i] = load_as_double(c.storage()->data(), c.offset() + i, c.dtype());
  return v;
}

Tensor& Tensor::requires_grad_(bool on) {
  DGP_CHECK(is_leaf(), "requires_grad_: only leaf tensors can change requires_grad (use detach())");
  DGP_CHECK(!on || is_floating(dtype()),
            "requires_grad_: only floating tensors can require grad, got " << dtype_name(dtype()));
  impl().requires_grad = on;
  return *this;
}

void Tensor::backward(const Tensor& grad) const {
  Tensor g = grad;
  if (!g.defined()) {
    DGP_CHECK(numel() == 1,
              "backward: grad can be omitted only for a scalar, tensor has shape " << shape_str(shape()));
    g = ones(shape(), TensorOptions(dtype(), device()));
  }
  engine::backward({*this}, {g});
}

Tensor Tensor::detach() const {
  return Tensor(make_impl(impl().storage, impl().shape, impl().strides, impl().offset, impl().dtype));
}

// ---------------- views ----------------

Tensor Tensor::view(const Shape& shape_in) const {
  Shape shape = infer_shape(shape_in, numel(), "view");
  Shape st;
  DGP_CHECK(view_strides(*this, shape, st),
            "view: tensor of shape " << shape_str(this->shape()) << " strides " << shape_str(strides())
                                     << " cannot be viewed as " << shape_str(shape) << "; use reshape()");
  Tensor out = make_view(*this, shape, st, offset());
  if (needs_grad({*this})) {
    Shape in_shape = this->shape();
    record("view", {*this}, out,
           [in_shape](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0].reshape(in_shape)}; });
  }
  return out;
}

Tensor Tensor::reshape(const Shape& shape_in) const {
  Shape shape = infer_shape(shape_in, numel(), "reshape");
  Shape st;
  if (view_strides(*this, shape, st)) return view(shape);
  return contiguous().view(shape);
}

Tensor Tensor::permute(const Shape& dims) const {
  DGP_CHECK(static_cast<int64_t>(dims.size()) == dim(),
            "permute: " << dims.size() << " dims given for a tensor of rank " << dim());
  Shape shape(dims.size()), st(dims.size()), inverse(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    DGP_CHECK(!seen[d], "permute: dim " << d << " repeated in " << shape_str(dims));
    seen[d] = true;
    shape[i] = this->shape()[d];
    st[i] = strides()[d];
    inverse[d] = static_cast<int64_t>(i);
  }
  Tensor out = make_view(*this, shape, st, offset());
  if (needs_grad({*this})) {
    record("permute", {*this}, out,
           [inverse](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0].permute(inverse)}; });
  }
  return out;
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  Shape perm(dim());
  std::iota(perm.begin(), perm.end(), 0);
  d0 = wrap_dim(d0, dim(), "transpose");
  d1 = wrap_dim(d1, dim(), "transpose");
  std::swap(perm[d0], perm[d1]);
  return permute(perm);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  DGP_CHECK(step > 0, "slice: step must be positive, got " << step);
  int64_t n = shape()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = this->shape(), st = strides();
  shape[d] = (end - start + step - 1) / step;
  st[d] = strides()[d] * step;
  Tensor out = make_view(*this, shape, st, offset() + start * strides()[d]);
  if (needs_grad({*this})) {
    Shape in_shape = this->shape();
    record("slice", {*this}, out, [in_shape, d, start, end, step](const std::vector<Tensor>& g) {
      Tensor gi = zeros(in_shape, TensorOptions(g[0].dtype(), g[0].device()));
      gi.slice(d, start, end, step).copy_(g[0]);
      return std::vector<Tensor>{gi};
    });
  }
  return out;
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  DGP_CHECK(start >= 0 && length >= 0 && start + length <= shape()[d],
            "narrow: range [" << start << "," << start + length << ") out of bounds for dim " << d
                              << " of size " << shape()[d]);
  return slice(d, start, start + length);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  int64_t n = shape()[d];
  DGP_CHECK(index >= -n && index < n,
            "select: index " << index << " out of range for dim " << d << " of size " << n);
  if (index < 0) index += n;
  return slice(d, index, index + 1).squeeze(d);
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  if (dim() == 0 || shape()[d] != 1) return *this;
  Shape shape = this->shape();
  shape.erase(shape.begin() + d);
  return view(shape);
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape shape = this->shape(), st = strides();
  int64_t new_stride = d < dim() ? shape[d] * st[d] : 1;
  shape.insert(shape.begin() + d, 1);
  st.insert(st.begin() + d, new_stride);
  Tensor out = make_view(*this, shape, st, offset());
  if (needs_grad({*this})) {
    record("unsqueeze", {*this}, out,
           [d](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0].squeeze(d)}; });
  }
  return out;
}

Tensor Tensor::expand(const Shape& shape_in) const {
  DGP_CHECK(static_cast<int64_t>(shape_in.size()) >= dim(),
            "expand: cannot expand " << shape_str(shape()) << " to fewer dims " << shape_str(shape_in));
  size_t lead = shape_in.size() - shape().size();
  Shape shape(shape_in.size()), st(shape_in.size());
  for (size_t i = 0; i < shape_in.size(); ++i) {
    if (i < lead) {
      DGP_CHECK(shape_in[i] >= 0, "expand: -1 not allowed for new leading dims in " << shape_str(shape_in));
      shape[i] = shape_in[i];
      st[i] = 0;
      continue;
    }
    int64_t src = this->shape()[i - lead];
    int64_t want = shape_in[i] == -1 ? src : shape_in[i];
    if (src == want) {
      shape[i] = src;
      st[i] = strides()[i - lead];
    } else {
      DGP_CHECK(src == 1, "expand: cannot expand " << shape_str(this->shape()) << " to "
                                                   << shape_str(shape_in) << " (dim " << i << ": " << src
                                                   << " -> " << want << ")");
      shape[i] = want;
      st[i] = 0;
    }
  }
  Tensor out = make_view(*this, shape, st, offset());
  if (needs_grad({*this})) {
    Shape in_shape = this->shape();
    record("expand", {*this}, out,
           [in_shape](const std::vector<Tensor>& g) { return std::vector<Tensor>{sum_to(g[0], in_shape)}; });
  }
  return out;
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  DGP_CHECK(start <= end, "flatten: start dim " << start << " after end dim " << end);
  Shape shape;
  for (int64_t i = 0; i < start; ++i) shape.push_back(this->shape()[i]);
  int64_t m = 1;
  for (int64_t i = start; i <= end; ++i) m *= this->shape()[i];
  shape.push_back(m);
  for (int64_t i = end + 1; i < dim(); ++i) shape.push_back(this->shape()[i]);
  return reshape(shape);
}

// ---------------- copies ----------------

Tensor Tensor::contiguous() const {
  return is_contiguous() ? *this : clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), TensorOptions(dtype(), device()));
  {
    NoGradGuard ng;
    out.copy_(*this);
  }
  if (needs_grad({*this})) {
    record("clone", {*this}, out, [](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0]}; });
  }
  return out;
}

Tensor Tensor::to(Device dev) const {
  if (dev == device()) return *this;
  Tensor out = empty(shape(), TensorOptions(dtype(), dev));
  {
    NoGradGuard ng;
    out.copy_(*this);
  }
  if (needs_grad({*this})) {
    Device src = device();
    record("to_device", {*this}, out,
           [src](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0].to(src)}; });
  }
  return out;
}

Tensor Tensor::to(DType t) const {
  return t == dtype() ? *this : cast(*this, t);
}

Tensor& Tensor::copy_(const Tensor& src_in) {
  DGP_CHECK(src_in.defined(), "copy_: source tensor is undefined");
  Tensor src = src_in.shape() == shape() ? src_in : src_in.expand(shape());
  if (numel() == 0) return *this;
  if (device().is_cpu() && src.device().is_cpu()) {
    cpu::copy_strided(*this, src);
    return *this;
  }
  if (device() == src.device()) {
    cuda_kernels::copy_strided(*this, src);
    return *this;
  }
  // Across devices: make the source contiguous (and of our dtype) on its own device, move bytes, then
  // scatter into our layout on our device.
  Tensor s = src.dtype() == dtype() ? src.contiguous() : src.to(dtype()).contiguous();
  if (is_contiguous()) {
    cuda::copy_bytes(raw_data(), device(), s.raw_data(), s.device(), nbytes());
  } else {
    Tensor tmp = empty(shape(), TensorOptions(dtype(), device()));
    cuda::copy_bytes(tmp.raw_data(), device(), s.raw_data(), s.device(), nbytes());
    copy_(tmp);
  }
  return *this;
}

Tensor& Tensor::fill_(double value) {
  if (numel() == 0) return *this;
  if (device().is_cpu()) {
    if (value == 0.0 && is_contiguous()) {
      std::memset(raw_data(), 0, nbytes());
      return *this;
    }
    Tensor one = empty({}, TensorOptions(dtype(), Device::cpu()));
    store_from_double(one.raw_data(), 0, dtype(), value);
    cpu::copy_strided(*this, one.expand(shape()));
    return *this;
  }
  cuda_kernels::fill(*this, value);  // no host-to-device copy: graph-capturable
  return *this;
}

std::string Tensor::str(int64_t max_elements) const {
  if (!defined()) return "tensor(undefined)";
  std::ostringstream os;
  os << "tensor(" << shape_str(shape()) << " " << dtype_name(dtype()) << " " << device().str();
  if (requires_grad()) os << " requires_grad";
  os << ") [";
  std::vector<double> v = to_vector();
  int64_t n = std::min<int64_t>(max_elements, static_cast<int64_t>(v.size()));
  for (int64_t i = 0; i < n; ++i) os << (i ? ", " : "") << v[i];
  if (n < static_cast<int64_t>(v.size())) os << ", ... (" << v.size() << " total)";
  os << "]";
  return os.str();
}

// ---------------- factories ----------------

Tensor empty(const Shape& shape, TensorOptions opts) {
  for (int64_t d : shape) DGP_CHECK(d >= 0, "empty: negative dimension in shape " << shape_str(shape));
  size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(opts.dtype);
  auto impl =
      make_impl(Storage::allocate(nbytes, opts.device), shape, contiguous_strides(shape), 0, opts.dtype);
  Tensor t(impl);
  if (opts.requires_grad) t.requires_grad_(true);
  return t;
}

Tensor empty_strided(const Shape& shape, const Shape& strides, TensorOptions opts) {
  DGP_CHECK(shape.size() == strides.size(), "empty_strided: shape " << shape_str(shape) << " and strides "
                                                                    << shape_str(strides)
                                                                    << " differ in rank");
  int64_t span = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    DGP_CHECK(shape[i] >= 0 && strides[i] >= 0, "empty_strided: negative size or stride");
    if (shape[i] == 0) span = 0;
  }
  if (span != 0)
    for (size_t i = 0; i < shape.size(); ++i) span += (shape[i] - 1) * strides[i];
  auto impl = make_impl(Storage::allocate(static_cast<size_t>(span) * dtype_size(opts.dtype), opts.device),
                        shape, strides, 0, opts.dtype);
  return Tensor(impl);
}

Tensor zeros(const Shape& shape, TensorOptions opts) {
  bool rg = opts.requires_grad;
  opts.requires_grad = false;
  Tensor t = empty(shape, opts);
  t.zero_();
  if (rg) t.requires_grad_(true);
  return t;
}

Tensor full(const Shape& shape, double value, TensorOptions opts) {
  bool rg = opts.requires_grad;
  opts.requires_grad = false;
  Tensor t = empty(shape, opts);
  t.fill_(value);
  if (rg) t.requires_grad_(true);
  return t;
}

Tensor ones(const Shape& shape, TensorOptions opts) {
  return full(shape, 1.0, opts);
}

Tensor arange(int64_t begin, int64_t end, int64_t step, TensorOptions opts) {
  DGP_CHECK(step != 0, "arange: step must be non-zero");
  int64_t n = std::max<int64_t>(0, (end - begin + step - (step > 0 ? 1 : -1)) / step);
  Tensor t = empty({n}, TensorOptions(opts.dtype, Device::cpu()));
  for (int64_t i = 0; i < n; ++i) store_from_double(t.raw_data(), i, opts.dtype, double(begin + i * step));
  return t.to(opts.device);
}

Tensor scalar_tensor(double value, TensorOptions opts) {
  return full({}, value, opts);
}
Tensor zeros_like(const Tensor& t) {
  return zeros(t.shape(), TensorOptions(t.dtype(), t.device()));
}
Tensor ones_like(const Tensor& t) {
  return ones(t.shape(), TensorOptions(t.dtype(), t.device()));
}
Tensor empty_like(const Tensor& t) {
  return empty(t.shape(), TensorOptions(t.dtype(), t.device()));
}

namespace {
template <class Draw>
Tensor random_tensor(const Shape& shape, TensorOptions opts, Generator* gen, uint64_t per_block, Draw draw,
                     const char* op) {
  DGP_CHECK(is_floating(opts.dtype), op << ": dtype must be floating, got " << dtype_name(opts.dtype));
  int64_t n = shape_numel(shape);
  Generator& g = gen ? *gen : default_generator();
  PhiloxState s = g.reserve((static_cast<uint64_t>(n) + per_block - 1) / per_block);
  if (opts.device.is_cuda()) {  // same draws, generated on the device
    Tensor out = empty(shape, TensorOptions(opts.dtype, opts.device));
    cuda_kernels::philox_fill(out, s, per_block == 2);
    if (opts.requires_grad) out.requires_grad_(true);
    return out;
  }
  Tensor t = empty(shape, TensorOptions(DType::f32, Device::cpu()));
  float* p = t.data<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = draw(s, static_cast<uint64_t>(i));
  Tensor out = t.to(opts.dtype).to(opts.device);
  if (opts.requires_grad) out.requires_grad_(true);
  return out;
}
}  // namespace

Tensor rand(const Shape& shape, TensorOptions opts, Generator* gen) {
  return random_tensor(shape, opts, gen, 4, philox_uniform, "rand");
}
Tensor randn(const Shape& shape, TensorOptions opts, Generator* gen) {
  return random_tensor(shape, opts, gen, 2, philox_normal, "randn");
}

Tensor from_vector(const std::vector<double>& values, const Shape& shape, TensorOptions opts) {
  DGP_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape),
            "from_vector: " << values.size() << " values for shape " << shape_str(shape));
  Tensor t = empty(shape, TensorOptions(opts.dtype, Device::cpu()));
  for (size_t i = 0; i < values.size(); ++i) store_from_double(t.raw_data(), i, opts.dtype, values[i]);
  Tensor out = t.to(opts.device);
  if (opts.requires_grad) out.requires_grad_(true);
  return out;
}

Tensor from_vector(const std::vector<float>& values, const Shape& shape, TensorOptions opts) {
  return from_vector(std::vector<double>(values.begin(), values.end()), shape, opts);
}

Tensor from_vector(const std::vector<int64_t>& values, const Shape& shape, TensorOptions opts) {
  DGP_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape),
            "from_vector: " << values.size() << " values for shape " << shape_str(shape));
  Tensor t = empty(shape, TensorOptions(opts.dtype, Device::cpu()));
  if (opts.dtype == DType::i64) {
    std::memcpy(t.raw_data(), values.data(), values.size() * 8);
  } else {
    for (size_t i = 0; i < values.size(); ++i)
      store_from_double(t.raw_data(), i, opts.dtype, static_cast<double>(values[i]));
  }
  return t.to(opts.device);
}

}  // namespace dgpipe::engine
