#include "layers/module.h"

#include <set>
#include <sstream>

namespace dgpipe::layers {

std::string join_name(const std::string& prefix, const std::string& name) {
  if (prefix.empty()) return name;
  if (name.empty()) return prefix;
  return prefix + "." + name;
}

Tensor Module::operator()(const Tensor& x) {
  static const BlockContext empty_context;
  return forward(x, empty_context);
}

Tensor Module::register_parameter(const std::string& name, Tensor value) {
  DGP_CHECK(value.defined(), type_name() << ": parameter '" << name << "' is undefined");
  for (auto& [n, t] : params_)
    DGP_CHECK(n != name, type_name() << ": parameter '" << name << "' registered twice");
  value.requires_grad_(true);
  params_.emplace_back(name, value);
  return value;
}

Tensor Module::register_buffer(const std::string& name, Tensor value) {
  DGP_CHECK(value.defined(), type_name() << ": buffer '" << name << "' is undefined");
  for (auto& [n, t] : buffers_)
    DGP_CHECK(n != name, type_name() << ": buffer '" << name << "' registered twice");
  buffers_.emplace_back(name, value);
  return value;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  DGP_CHECK(module != nullptr, type_name() << ": child '" << name << "' is null");
  for (auto& [n, m] : children_)
    DGP_CHECK(name.empty() || n != name, type_name() << ": child '" << name << "' registered twice");
  children_.emplace_back(name, std::move(module));
}

void Module::collect(const std::string& prefix, bool params, bool buffers, NamedTensors& out) const {
  if (params)
    for (auto& [n, t] : params_) out.emplace_back(join_name(prefix, n), t);
  if (buffers)
    for (auto& [n, t] : buffers_) out.emplace_back(join_name(prefix, n), t);
  for (auto& [n, m] : children_) m->collect(join_name(prefix, n), params, buffers, out);
}

NamedTensors Module::named_parameters(const std::string& prefix) const {
  NamedTensors out;
  collect(prefix, true, false, out);
  return out;
}

NamedTensors Module::named_buffers(const std::string& prefix) const {
  NamedTensors out;
  collect(prefix, false, true, out);
  return out;
}

NamedTensors Module::state_dict(const std::string& prefix) const {
  NamedTensors out;
  collect(prefix, true, true, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<const Module>>> Module::named_modules(
    const std::string& prefix) const {
  std::vector<std::pair<std::string, std::shared_ptr<const Module>>> out;
  out.emplace_back(prefix, shared_from_this());
  for (auto& [n, m] : children_) {
    auto sub = m->named_modules(join_name(prefix, n));
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

int64_t Module::num_parameters() const {
  int64_t total = 0;
  for (auto& [n, t] : named_parameters()) total += t.numel();
  return total;
}

LoadReport Module::load_state_dict(const std::map<std::string, Tensor>& tensors, bool strict) {
  LoadReport report;
  std::set<std::string> known;
  for (auto& [name, dst] : state_dict()) {
    known.insert(name);
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      report.missing.push_back(name);
      continue;
    }
    const Tensor& src = it->second;
    DGP_CHECK(src.shape() == dst.shape(), "load_state_dict: '"
                                              << name << "' has shape " << engine::shape_str(src.shape())
                                              << " in the checkpoint but " << engine::shape_str(dst.shape())
                                              << " in the model");
    Tensor target = dst;  // copy_ writes through the shared handle
    target.copy_(src);
    report.loaded.push_back(name);
  }
  for (auto& [name, t] : tensors)
    if (!known.count(name)) report.unexpected.push_back(name);
  if (strict && (!report.missing.empty() || !report.unexpected.empty())) {
    std::ostringstream msg;
    msg << "load_state_dict: checkpoint does not match the model";
    auto list = [&](const char* what, const std::vector<std::string>& keys) {
      if (keys.empty()) return;
      msg << "; " << keys.size() << " " << what << ":";
      for (size_t i = 0; i < keys.size() && i < 8; ++i) msg << " " << keys[i];
      if (keys.size() > 8) msg << " ...";
    };
    list("missing", report.missing);
    list("unexpected", report.unexpected);
    DGP_FAIL(msg.str());
  }
  return report;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, m] : children_) m->train(on);
}

void Module::zero_grad() {
  for (auto& [n, t] : named_parameters()) t.zero_grad();
}

namespace {
// Points `handle` at the storage of `moved`, so every holder of the handle sees the new placement.
void rebind(const Tensor& handle, const Tensor& moved) {
  engine::TensorImpl& impl = handle.impl();
  impl.storage = moved.storage();
  impl.shape = moved.shape();
  impl.strides = moved.strides();
  impl.offset = moved.offset();
  impl.dtype = moved.dtype();
  impl.grad.reset();
}
}  // namespace

void Module::to(Device device) {
  for (auto& [n, t] : state_dict())
    if (t.device() != device) rebind(t, t.detach().to(device).contiguous());
}

void Module::to(DType dtype) {
  for (auto& [n, t] : state_dict())
    if (engine::is_floating(t.dtype()) && t.dtype() != dtype) rebind(t, t.detach().to(dtype).contiguous());
}

void Module::to_half_precision(DType half) {
  DGP_CHECK(engine::is_half(half),
            type_name() << ": to_half_precision needs f16 or bf16, got " << engine::dtype_name(half));
  if (!keeps_fp32_parameters()) {
    for (auto* list : {&params_, &buffers_})
      for (auto& [n, t] : *list)
        if (engine::is_floating(t.dtype()) && t.dtype() != half) rebind(t, t.detach().to(half).contiguous());
  }
  for (auto& [n, m] : children_) m->to_half_precision(half);
}

std::string Module::repr(const std::string& name, int indent) const {
  std::ostringstream os;
  os << std::string(indent * 2, ' ') << (name.empty() ? "" : name + ": ") << type_name();
  std::string extra = extra_repr();
  if (!extra.empty()) os << "(" << extra << ")";
  os << "\n";
  for (auto& [n, m] : children_) os << m->repr(n, indent + 1);
  return os.str();
}

}  // namespace dgpipe::layers
