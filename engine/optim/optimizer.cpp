// Optimizer base: group resolution, the step loop, and state export/import.
#include "engine/optim/optimizer.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "engine/autograd.h"

namespace dgpipe::engine {

Optimizer::Optimizer(const char* name, std::vector<ParamGroupSpec> groups, const OptimizerHyper& defaults)
    : name_(name) {
  DGP_CHECK(!groups.empty(), name_ << ": no parameter groups given");
  for (size_t g = 0; g < groups.size(); ++g) {
    ParamGroupSpec& spec = groups[g];
    ParamGroup group;
    group.hyper = defaults;
    OptimizerHyper& h = group.hyper;
    if (spec.lr) h.lr = *spec.lr;
    if (spec.weight_decay) h.weight_decay = *spec.weight_decay;
    if (spec.momentum) h.momentum = *spec.momentum;
    if (spec.dampening) h.dampening = *spec.dampening;
    if (spec.nesterov) h.nesterov = *spec.nesterov;
    if (spec.beta1) h.beta1 = *spec.beta1;
    if (spec.beta2) h.beta2 = *spec.beta2;
    if (spec.eps) h.eps = *spec.eps;
    for (size_t i = 0; i < spec.params.size(); ++i) {
      const Tensor& p = spec.params[i];
      DGP_CHECK(p.defined(), name_ << ": parameter " << i << " of group " << g << " is an undefined tensor");
      DGP_CHECK(p.is_leaf(), name_ << ": parameter " << i << " of group " << g
                                   << " is not a leaf (the result of an op); optimizers update leaves only");
      // The same tensor twice would be updated twice per step.
      for (const ParamGroup& prev : groups_)
        for (const Tensor& q : prev.params)
          DGP_CHECK(!q.same(p),
                    name_ << ": parameter " << i << " of group " << g << " appears in two groups");
      for (size_t j = 0; j < i; ++j)
        DGP_CHECK(!spec.params[j].same(p),
                  name_ << ": parameter " << i << " of group " << g << " appears twice in the group");
    }
    group.params = std::move(spec.params);
    groups_.push_back(std::move(group));
  }
  state_.resize(static_cast<size_t>(num_params()));
}

int64_t Optimizer::num_params() const {
  int64_t n = 0;
  for (const ParamGroup& g : groups_) n += static_cast<int64_t>(g.params.size());
  return n;
}

void Optimizer::step() {
  for (size_t g = 0; g < groups_.size(); ++g) validate(groups_[g].hyper, g);
  NoGradGuard no_grad;
  int64_t index = 0;
  for (ParamGroup& group : groups_) {
    for (Tensor& p : group.params) {
      Tensor grad = p.grad();
      if (grad.defined()) update(group.hyper, index, p, grad, state_[static_cast<size_t>(index)]);
      ++index;
    }
  }
  ++steps_;
}

void Optimizer::zero_grad() {
  for (ParamGroup& group : groups_)
    for (Tensor& p : group.params) p.zero_grad();
}

void Optimizer::set_lr(double lr) {
  DGP_CHECK(lr >= 0.0, name_ << ": set_lr(" << lr << "): the learning rate must be >= 0");
  for (ParamGroup& group : groups_) group.hyper.lr = lr;
}

double Optimizer::lr(size_t group) const {
  DGP_CHECK(group < groups_.size(), name_ << ": lr(" << group << "): only " << groups_.size() << " groups");
  return groups_[group].hyper.lr;
}

void Optimizer::check_update_inputs(int64_t param_index, const Tensor& param, const Tensor& grad) const {
  DGP_CHECK(param.dtype() == DType::f32 || param.dtype() == DType::f64,
            name_ << ": parameter " << param_index << " is " << dtype_name(param.dtype())
                  << "; optimizers update f32 (or f64) master weights");
  DGP_CHECK(grad.dtype() == param.dtype(), name_ << ": parameter " << param_index << " is "
                                                 << dtype_name(param.dtype()) << " but its gradient is "
                                                 << dtype_name(grad.dtype()));
  DGP_CHECK(grad.device() == param.device(), name_ << ": parameter " << param_index << " is on "
                                                   << param.device().str() << " but its gradient is on "
                                                   << grad.device().str());
  DGP_CHECK(grad.shape() == param.shape(), name_ << ": parameter " << param_index << " has shape "
                                                 << shape_str(param.shape()) << " but its gradient has shape "
                                                 << shape_str(grad.shape()));
  DGP_CHECK(param.is_contiguous(), name_ << ": parameter " << param_index << " " << shape_str(param.shape())
                                         << " is not contiguous; parameters must own dense storage");
}

// ---------------- state export / import ----------------

namespace {
Tensor scalar_i64(int64_t v) {
  return full({}, static_cast<double>(v), DType::i64);
}
Tensor scalar_f64(double v) {
  return full({}, v, DType::f64);
}

// Parses "state.<i>.<name>" into (i, name); false when the key has another form.
bool parse_state_key(const std::string& key, int64_t& index, std::string& name) {
  const std::string prefix = "state.";
  if (key.compare(0, prefix.size(), prefix) != 0) return false;
  size_t dot = key.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size()) return false;
  std::string digits = key.substr(prefix.size(), dot - prefix.size());
  if (!std::all_of(digits.begin(), digits.end(),
                   [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    return false;
  if (digits.size() > 12) return false;
  index = std::strtoll(digits.c_str(), nullptr, 10);
  name = key.substr(dot + 1);
  return !name.empty();
}

bool parse_group_key(const std::string& key, size_t& group, std::string& field) {
  const std::string prefix = "param_groups.";
  if (key.compare(0, prefix.size(), prefix) != 0) return false;
  size_t dot = key.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size()) return false;
  std::string digits = key.substr(prefix.size(), dot - prefix.size());
  if (digits.size() > 9 || !std::all_of(digits.begin(), digits.end(),
                                        [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    return false;
  group = static_cast<size_t>(std::strtoul(digits.c_str(), nullptr, 10));
  field = key.substr(dot + 1);
  return true;
}
}  // namespace

std::map<std::string, Tensor> Optimizer::state_dict() const {
  std::map<std::string, Tensor> out;
  out["step"] = scalar_i64(steps_);
  for (size_t i = 0; i < state_.size(); ++i)
    for (const auto& [name, t] : state_[i]) out["state." + std::to_string(i) + "." + name] = t;
  for (size_t g = 0; g < groups_.size(); ++g) {
    out["param_groups." + std::to_string(g) + ".lr"] = scalar_f64(groups_[g].hyper.lr);
    out["param_groups." + std::to_string(g) + ".weight_decay"] = scalar_f64(groups_[g].hyper.weight_decay);
  }
  return out;
}

void Optimizer::load_state_dict(const std::map<std::string, Tensor>& state) {
  auto it = state.find("step");
  DGP_CHECK(it != state.end(), name_ << ": load_state_dict: missing key 'step'");
  DGP_CHECK(it->second.defined() && it->second.numel() == 1,
            name_ << ": load_state_dict: 'step' must be a one-element tensor");
  const std::vector<std::string> known = state_names();
  std::vector<std::map<std::string, Tensor>> restored(state_.size());
  std::vector<ParamGroup> groups = groups_;
  // Parameters by global index, for shape and device checks.
  std::vector<const Tensor*> params;
  for (const ParamGroup& g : groups_)
    for (const Tensor& p : g.params) params.push_back(&p);

  NoGradGuard no_grad;
  for (const auto& [key, value] : state) {
    if (key == "step") continue;
    DGP_CHECK(value.defined(), name_ << ": load_state_dict: '" << key << "' is an undefined tensor");
    int64_t index = 0;
    std::string field;
    size_t group = 0;
    if (parse_state_key(key, index, field)) {
      DGP_CHECK(index < num_params(), name_ << ": load_state_dict: '" << key << "' refers to parameter "
                                            << index << " but the optimizer has " << num_params());
      const Tensor& p = *params[static_cast<size_t>(index)];
      if (field == "step") {
        DGP_CHECK(value.numel() == 1,
                  name_ << ": load_state_dict: '" << key << "' must be a one-element tensor");
        restored[static_cast<size_t>(index)][field] = scalar_i64(static_cast<int64_t>(value.item()));
        continue;
      }
      DGP_CHECK(std::find(known.begin(), known.end(), field) != known.end(),
                name_ << ": load_state_dict: unknown state '" << field << "' in key '" << key << "'");
      DGP_CHECK(value.shape() == p.shape(), name_ << ": load_state_dict: '" << key << "' has shape "
                                                  << shape_str(value.shape()) << " but parameter " << index
                                                  << " has shape " << shape_str(p.shape()));
      Tensor buffer = empty(p.shape(), TensorOptions(p.dtype(), p.device()));
      buffer.copy_(value);
      restored[static_cast<size_t>(index)][field] = buffer;
    } else if (parse_group_key(key, group, field)) {
      DGP_CHECK(group < groups.size(), name_ << ": load_state_dict: '" << key << "' refers to group " << group
                                             << " but the optimizer has " << groups.size());
      DGP_CHECK(value.numel() == 1,
                name_ << ": load_state_dict: '" << key << "' must be a one-element tensor");
      if (field == "lr") {
        groups[group].hyper.lr = value.item();
      } else if (field == "weight_decay") {
        groups[group].hyper.weight_decay = value.item();
      } else {
        DGP_FAIL(name_ << ": load_state_dict: unknown group field in key '" << key << "'");
      }
    } else {
      DGP_FAIL(name_ << ": load_state_dict: unexpected key '" << key << "'");
    }
  }
  // Commit only after every key was checked, so a failed load leaves the optimizer as it was.
  steps_ = static_cast<int64_t>(it->second.item());
  state_ = std::move(restored);
  for (size_t g = 0; g < groups_.size(); ++g) groups_[g].hyper = groups[g].hyper;
}

// ---------------- weight-decay groups ----------------

namespace {
std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
}  // namespace

bool default_no_decay(const std::string& name, const Tensor& param) {
  if (param.dim() <= 1) return true;  // biases, norm scales and shifts
  std::string n = lower(name);
  if (n.find("bias") != std::string::npos || n.find("norm") != std::string::npos) return true;
  // "bn" as the start of a dotted component (bn1.weight, layer1.0.bn2.weight), not inside a longer word.
  for (size_t pos = n.find("bn"); pos != std::string::npos; pos = n.find("bn", pos + 1))
    if (pos == 0 || n[pos - 1] == '.' || n[pos - 1] == '_') return true;
  return false;
}

std::vector<ParamGroupSpec> param_groups_no_decay(
    const std::vector<std::pair<std::string, Tensor>>& named_params, double weight_decay,
    const std::function<bool(const std::string&, const Tensor&)>& no_decay) {
  ParamGroupSpec decayed, not_decayed;
  decayed.weight_decay = weight_decay;
  not_decayed.weight_decay = 0.0;
  for (const auto& [name, p] : named_params) {
    DGP_CHECK(p.defined(), "param_groups_no_decay: parameter '" << name << "' is an undefined tensor");
    (no_decay(name, p) ? not_decayed : decayed).params.push_back(p);
  }
  std::vector<ParamGroupSpec> groups;
  if (!decayed.params.empty()) groups.push_back(std::move(decayed));
  if (!not_decayed.params.empty()) groups.push_back(std::move(not_decayed));
  return groups;
}

}  // namespace dgpipe::engine
