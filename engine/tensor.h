// Tensor: a cheap, shared handle over a Storage with shape, strides, offset, dtype and device.
// Views (reshape, permute, slice, expand, ...) share the storage. Autograd state lives in the handle's impl.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/storage.h"

namespace dgpipe::engine {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2,3,4]"
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

class Node;
class Generator;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;
  // autograd
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;      // accumulated gradient of a leaf (or retained non-leaf)
  std::shared_ptr<Node> grad_fn;         // the node that produced this tensor (null for leaves)
  uint32_t output_nr = 0;                // which output of grad_fn this tensor is
  std::weak_ptr<Node> grad_accumulator;  // leaf only: its AccumulateGrad node, created lazily
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t d) const;    // negative d counts from the end
  int64_t stride(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(impl().shape); }
  int64_t offset() const { return impl().offset; }
  DType dtype() const { return impl().dtype; }
  size_t itemsize() const { return dtype_size(impl().dtype); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * itemsize(); }
  Device device() const { return impl().storage->device(); }
  bool is_cuda() const { return device().is_cuda(); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }

  // Pointer to the first element (storage base + offset). Typed access checks the dtype.
  void* raw_data() const {
    return static_cast<char*>(impl().storage->data()) + impl().offset * static_cast<int64_t>(itemsize());
  }
  template <class T>
  T* data() const {
    DGP_CHECK(dtype_of<T>::value == dtype(),
              "data<" << dtype_name(dtype_of<T>::value) << ">() on a " << dtype_name(dtype()) << " tensor");
    return static_cast<T*>(raw_data());
  }
  // Value of a one-element tensor (any dtype, any device), as double.
  double item() const;
  // Copy of all elements as doubles in logical (row-major) order; for tests and printing.
  std::vector<double> to_vector() const;

  // ---- autograd ----
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& requires_grad_(bool on = true);  // only on leaves
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& g) { impl().grad = g.impl_; }
  void zero_grad() { impl().grad.reset(); }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  // Back-propagates from this tensor. A scalar may omit grad (1 is used).
  void backward(const Tensor& grad = Tensor()) const;
  // Same data, cut from the graph.
  Tensor detach() const;

  // ---- views (differentiable; share storage) ----
  Tensor view(const Shape& shape) const;     // requires compatible strides; -1 infers one dim
  Tensor reshape(const Shape& shape) const;  // a view when possible, else a copy
  Tensor permute(const Shape& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const { return transpose(0, 1); }
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;  // python-style bounds
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor select(int64_t dim, int64_t index) const;  // removes dim
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor expand(const Shape& shape) const;  // -1 keeps a dim
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;

  // ---- copies ----
  Tensor contiguous() const;  // self when already contiguous
  Tensor clone() const;       // always a fresh contiguous copy (differentiable)
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  // In-place copy of src's values into this tensor (broadcasts src; converts dtype and device). Not recorded.
  Tensor& copy_(const Tensor& src);
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }

  std::string str(int64_t max_elements = 16) const;  // "tensor([2,3] f32 cpu) [0.1, ...]"

  TensorImpl& impl() const {
    DGP_CHECK(impl_ != nullptr, "use of an undefined tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Normalises a possibly negative dim against rank; throws naming op when out of range.
int64_t wrap_dim(int64_t dim, int64_t rank, const char* op);

// ---- factories ----
struct TensorOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  bool requires_grad = false;
  TensorOptions() = default;
  TensorOptions(DType t) : dtype(t) {}    // NOLINT(runtime/explicit)
  TensorOptions(Device d) : device(d) {}  // NOLINT(runtime/explicit)
  TensorOptions(DType t, Device d, bool rg = false) : dtype(t), device(d), requires_grad(rg) {}
};

Tensor empty(const Shape& shape, TensorOptions opts = {});
Tensor empty_strided(const Shape& shape, const Shape& strides, TensorOptions opts = {});
Tensor zeros(const Shape& shape, TensorOptions opts = {});
Tensor ones(const Shape& shape, TensorOptions opts = {});
Tensor full(const Shape& shape, double value, TensorOptions opts = {});
Tensor arange(int64_t begin, int64_t end, int64_t step = 1, TensorOptions opts = DType::i64);
Tensor scalar_tensor(double value, TensorOptions opts = {});
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor empty_like(const Tensor& t);
// Uniform [0,1) and standard normal from the Philox generator (the default one when gen is null).
Tensor rand(const Shape& shape, TensorOptions opts = {}, Generator* gen = nullptr);
Tensor randn(const Shape& shape, TensorOptions opts = {}, Generator* gen = nullptr);
// Copies host values (converted to opts.dtype) into a new tensor of the given shape.
Tensor from_vector(const std::vector<double>& values, const Shape& shape, TensorOptions opts = {});
Tensor from_vector(const std::vector<float>& values, const Shape& shape, TensorOptions opts = {});
Tensor from_vector(const std::vector<int64_t>& values, const Shape& shape, TensorOptions opts = DType::i64);

}  // namespace dgpipe::engine
