#include "engine/autograd.h"

#include <atomic>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "engine/ops.h"

namespace dgpipe::engine {

namespace {
thread_local bool g_grad_enabled = true;
std::atomic<uint64_t> g_sequence{0};

class LambdaNode : public Node {
 public:
  LambdaNode(const char* name, BackwardFn fn) : name_(name), fn_(std::move(fn)) {}
  std::vector<Tensor> apply(const std::vector<Tensor>& grads) override {
    DGP_CHECK(fn_, "backward through '" << name_
                                        << "' a second time: the graph was freed by the first backward pass");
    return fn_(grads);
  }
  std::string name() const override { return name_; }
  void release() override { fn_ = nullptr; }

 private:
  const char* name_;
  BackwardFn fn_;
};

// Sink for leaves: adds the incoming gradient into leaf.grad.
class AccumulateGrad : public Node {
 public:
  explicit AccumulateGrad(std::weak_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  std::vector<Tensor> apply(const std::vector<Tensor>& grads) override {
    auto leaf = leaf_.lock();
    if (!leaf) return {};
    const Tensor& g = grads[0];
    Tensor leaf_t(leaf);
    DGP_CHECK(g.shape() == leaf->shape, "autograd: gradient of shape " << shape_str(g.shape())
                                                                       << " for a leaf of shape "
                                                                       << shape_str(leaf->shape));
    if (!leaf->grad) {
      // Own the gradient: the incoming tensor may alias other gradients.
      Tensor owned = empty(leaf->shape, TensorOptions(leaf->dtype, leaf_t.device()));
      owned.copy_(g);
      leaf->grad = owned.impl_ptr();
    } else {
      Tensor acc(leaf->grad);
      add_(acc, g);
    }
    return {};
  }
  std::string name() const override { return "AccumulateGrad"; }

 private:
  std::weak_ptr<TensorImpl> leaf_;
};

Edge gradient_edge(const Tensor& t) {
  TensorImpl& impl = t.impl();
  if (impl.grad_fn) return Edge{impl.grad_fn, impl.output_nr};
  if (!impl.requires_grad) return Edge{};
  auto acc = impl.grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    acc->outputs.push_back(OutputMeta{impl.shape, impl.dtype, t.device()});
    acc->sequence_nr = g_sequence.fetch_add(1);
    impl.grad_accumulator = acc;
  }
  return Edge{acc, 0};
}

}  // namespace

bool grad_enabled() {
  return g_grad_enabled;
}
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) {
  g_grad_enabled = false;
}
NoGradGuard::~NoGradGuard() {
  g_grad_enabled = previous_;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const char* op_name, const std::vector<Tensor>& inputs, std::vector<Tensor*> outputs,
            BackwardFn fn) {
  auto node = std::make_shared<LambdaNode>(op_name, std::move(fn));
  node->sequence_nr = g_sequence.fetch_add(1);
  for (const Tensor& in : inputs) node->next_edges.push_back(in.defined() ? gradient_edge(in) : Edge{});
  uint32_t nr = 0;
  for (Tensor* out : outputs) {
    node->outputs.push_back(OutputMeta{out->shape(), out->dtype(), out->device()});
    TensorImpl& impl = out->impl();
    impl.grad_fn = node;
    impl.output_nr = nr++;
    impl.requires_grad = true;
  }
}

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads) {
  DGP_CHECK(roots.size() == grads.size(),
            "backward: " << roots.size() << " outputs but " << grads.size() << " gradients");
  NoGradGuard no_grad;
  // Gradient buffers per node, one slot per output.
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  std::unordered_map<Node*, std::shared_ptr<Node>> keep;
  auto deposit = [&](const std::shared_ptr<Node>& node, uint32_t slot, const Tensor& g) {
    auto& buf = buffers[node.get()];
    if (buf.empty()) buf.resize(node->outputs.size());
    keep[node.get()] = node;
    if (!buf[slot].defined()) {
      buf[slot] = g;
    } else {
      buf[slot] = add(buf[slot], g);
    }
  };

  std::vector<std::shared_ptr<Node>> starts;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    DGP_CHECK(r.defined() && grads[i].defined(), "backward: undefined output or gradient at position " << i);
    DGP_CHECK(r.requires_grad(), "backward: output " << i << " (shape " << shape_str(r.shape())
                                                     << ") does not require grad; nothing to back-propagate");
    DGP_CHECK(grads[i].shape() == r.shape(), "backward: gradient of shape " << shape_str(grads[i].shape())
                                                                            << " for output of shape "
                                                                            << shape_str(r.shape()));
    Edge e = gradient_edge(r);
    deposit(e.node, e.input_nr, grads[i]);
    starts.push_back(e.node);
  }

  // Count, for every reachable node, how many edges point at it (its dependencies).
  std::unordered_map<Node*, int> deps;
  std::unordered_set<Node*> seen;
  std::vector<Node*> stack;
  for (auto& s : starts)
    if (seen.insert(s.get()).second) stack.push_back(s.get());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges) {
      if (!e.node) continue;
      deps[e.node.get()]++;
      if (seen.insert(e.node.get()).second) stack.push_back(e.node.get());
    }
  }

  auto later_first = [](const std::shared_ptr<Node>& a, const std::shared_ptr<Node>& b) {
    return a->sequence_nr < b->sequence_nr;
  };
  std::priority_queue<std::shared_ptr<Node>, std::vector<std::shared_ptr<Node>>, decltype(later_first)> ready(
      later_first);
  std::unordered_set<Node*> queued;
  for (auto& s : starts)
    if (deps[s.get()] == 0 && queued.insert(s.get()).second) ready.push(s);

  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.top();
    ready.pop();
    std::vector<Tensor> in = std::move(buffers[node.get()]);
    buffers.erase(node.get());
    in.resize(node->outputs.size());
    for (size_t k = 0; k < in.size(); ++k) {
      if (!in[k].defined()) {
        const OutputMeta& m = node->outputs[k];
        in[k] = zeros(m.shape, TensorOptions(m.dtype, m.device));
      }
    }
    std::vector<Tensor> out = node->apply(in);
    node->release();
    DGP_CHECK(out.size() == node->next_edges.size() || node->next_edges.empty(),
              "autograd: node '" << node->name() << "' returned " << out.size() << " gradients for "
                                 << node->next_edges.size() << " inputs");
    for (size_t k = 0; k < node->next_edges.size(); ++k) {
      const Edge& e = node->next_edges[k];
      if (!e.node) continue;
      if (out[k].defined()) deposit(e.node, e.input_nr, out[k]);
      if (--deps[e.node.get()] == 0 && queued.insert(e.node.get()).second) ready.push(e.node);
    }
  }
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  int64_t lead = g.dim() - static_cast<int64_t>(shape.size());
  DGP_CHECK(lead >= 0, "sum_to: cannot reduce " << shape_str(g.shape()) << " to " << shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < g.dim(); ++i) {
    if (i < lead) {
      dims.push_back(i);
    } else if (shape[i - lead] == 1 && g.shape()[i] != 1) {
      dims.push_back(i);
    }
  }
  Tensor r = dims.empty() ? g : sum(g, dims, true);
  return r.reshape(shape);
}

}  // namespace dgpipe::engine
