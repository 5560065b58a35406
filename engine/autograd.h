// Define-by-run reverse-mode autograd.
//
// Every differentiable op that sees an input requiring grad calls record(): it creates a Node holding the
// backward function (and, through its captures, the saved tensors) and wires the outputs to it. backward()
// walks the graph from the roots in reverse topological order, sums the gradients flowing into each node,
// and accumulates into the .grad of leaves. Saved graphs are freed after the walk (no retain_graph).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace dgpipe::engine {

struct Edge {
  std::shared_ptr<Node> node;  // null: the input needs no gradient
  uint32_t input_nr = 0;       // which output slot of node the gradient feeds
};

struct OutputMeta {  // enough to make a zero gradient for an output no gradient reached
  Shape shape;
  DType dtype;
  Device device;
};

class Node : public std::enable_shared_from_this<Node> {
 public:
  virtual ~Node() = default;
  // grads has one entry per output (zeros filled in where nothing flowed); returns one per next edge.
  virtual std::vector<Tensor> apply(const std::vector<Tensor>& grads) = 0;
  virtual std::string name() const = 0;
  virtual void release() {}  // drops saved state after the backward pass

  std::vector<Edge> next_edges;
  std::vector<OutputMeta> outputs;
  uint64_t sequence_nr = 0;  // creation order: a later node runs first when both are ready
};

using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;

// ---- grad mode ----
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when grad mode is on and any of the inputs requires grad.
bool needs_grad(const std::vector<Tensor>& inputs);

// Records an op: outputs get a new node whose backward fn maps grad_outputs to one gradient per input
// (an undefined Tensor for inputs that need none). Call only when needs_grad(inputs).
// Saved tensors captured by fn must be inputs or detach()ed outputs (capturing an output creates a cycle).
void record(const char* op_name, const std::vector<Tensor>& inputs, std::vector<Tensor*> outputs,
            BackwardFn fn);
inline void record(const char* op_name, const std::vector<Tensor>& inputs, Tensor& output, BackwardFn fn) {
  record(op_name, inputs, std::vector<Tensor*>{&output}, std::move(fn));
}

// backward(outputs, grads): what a pipeline stage needs to back-propagate a received gradient.
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads);

// Sums g over broadcast dimensions so that it has `shape` (the gradient of an expand).
Tensor sum_to(const Tensor& g, const Shape& shape);

}  // namespace dgpipe::engine
