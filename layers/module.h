// Module: the unit layers and models are built from.
//
// A Module owns named parameters and buffers and named child modules, in registration order, so that
// named_parameters() / state_dict() produce exactly the names and order PyTorch's state_dict would
// ("features.1.conv.0.0.weight", "roberta.encoder.layer.0.attention.self.query.weight", ...). A child
// registered under a name containing dots ("features.3") simply contributes that prefix; a child registered
// under "" adds no prefix (a Model's blocks use this, so the blocks' names are the whole model's names).
//
// Every module takes one tensor and returns one tensor, plus a BlockContext carrying side inputs made from
// the model input (the attention mask of a text model), which the pipeline sends along with the activations.
// That is what lets a pipeline cut a model between any two blocks.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/ops.h"

namespace dgpipe::layers {

using engine::Device;
using engine::DType;
using engine::Shape;
using engine::Tensor;

// The side inputs of a forward pass, one X(name) per field. This list is the only place a side input is
// named: BlockContext's members and its for_each are generated from it, and every consumer (the pipeline
// splitting a batch into micro-batches, sending side inputs with activations, receiving them, moving them to
// a device) loops over for_each. Adding a side input is adding a line here; none can be left behind in
// transit.
//   attention_mask  [N,L] text models: 1 = attend, 0 = padding, as the tokenizer gives it.
//   additive_mask   [N,1,1,L] float mask added to the attention scores: 0 where attended, a large negative
//   where
//                   padded.
//   token_type_ids  [N,L] segment ids (BERT); undefined means all zeros.
//   position_ids    [N,L] i64 position ids (RoBERTa counts only non-padding tokens); built by the model's
//                   make_context; the embedding refuses a context without them.
//   sample_ids      [N] i64 dataset index of each row, set by the data owner when a boundary codec remembers
//                   each training sample (delta, compress/codec.h); no block reads it.
#define DGP_BLOCK_CONTEXT_FIELDS(X) \
  X(attention_mask)                 \
  X(additive_mask)                  \
  X(token_type_ids)                 \
  X(position_ids)                   \
  X(sample_ids)

// Side inputs of a forward pass, shared by all blocks of one (micro-)batch. Every field is a tensor whose dim
// 0 is the batch (so that a batch splits into micro-batches along it); any may be undefined.
struct BlockContext {
#define DGP_CONTEXT_MEMBER(name) Tensor name;
  DGP_BLOCK_CONTEXT_FIELDS(DGP_CONTEXT_MEMBER)
#undef DGP_CONTEXT_MEMBER

  // Calls fn(name, tensor) for every field, in the order of DGP_BLOCK_CONTEXT_FIELDS, defined or not.
  template <class Fn>
  void for_each(Fn&& fn) {
    visit(*this, fn);
  }
  template <class Fn>
  void for_each(Fn&& fn) const {
    visit(*this, fn);
  }

 private:
  template <class Self, class Fn>
  static void visit(Self& self, Fn& fn) {
#define DGP_CONTEXT_VISIT(name) fn(#name, self.name);
    DGP_BLOCK_CONTEXT_FIELDS(DGP_CONTEXT_VISIT)
#undef DGP_CONTEXT_VISIT
  }
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// What load_state_dict found: keys the module expected but the file lacked, and keys the module does not
// have.
struct LoadReport {
  std::vector<std::string> missing;
  std::vector<std::string> unexpected;
  std::vector<std::string> loaded;
};

class Module : public std::enable_shared_from_this<Module> {
 public:
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  // The computation. x is the block input; ctx carries side inputs (unused by most layers).
  virtual Tensor forward(const Tensor& x, const BlockContext& ctx) = 0;
  Tensor operator()(const Tensor& x, const BlockContext& ctx) { return forward(x, ctx); }
  Tensor operator()(const Tensor& x);

  // A short type name for printing ("Conv2d", "InvertedResidual", ...).
  virtual std::string type_name() const = 0;
  // Extra description for printing ("3->8, k=3, s=1, p=1").
  virtual std::string extra_repr() const { return ""; }

  // ---- structure ----
  NamedTensors named_parameters(const std::string& prefix = "") const;
  NamedTensors named_buffers(const std::string& prefix = "") const;
  std::vector<Tensor> parameters() const;
  // PyTorch order: per module (pre-order), its parameters then its buffers.
  NamedTensors state_dict(const std::string& prefix = "") const;
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }
  // Every module with its full name, pre-order (this one first, named prefix).
  std::vector<std::pair<std::string, std::shared_ptr<const Module>>> named_modules(
      const std::string& prefix = "") const;
  int64_t num_parameters() const;  // elements of all parameters (buffers not counted)

  // Copies the values of `tensors` (matched by name) into this module's parameters and buffers (shape must
  // match; dtype and device are converted). strict: any missing or unexpected key is an error naming the
  // keys.
  LoadReport load_state_dict(const std::map<std::string, Tensor>& tensors, bool strict = true);

  // ---- modes ----
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // ---- gradients and placement ----
  void zero_grad();
  // Moves every parameter and buffer to `device` in place: the tensor handles (held by layers and optimizers)
  // stay the same, only their storage changes.
  void to(Device device);
  // Converts floating parameters and buffers to dtype in place (same handles).
  void to(DType dtype);
  // Converts floating parameters and buffers to the half type `half` (f16 or bf16) in place, except those of
  // modules that keep_fp32_parameters() (the normalisation layers: fp32 statistics and scales, computed in
  // fp32): what --precision fp16 / bf16 stores the model in.
  void to_half_precision(DType half);
  // True for modules whose parameters and buffers stay fp32 in a half-precision model.
  virtual bool keeps_fp32_parameters() const { return false; }

  // Indented tree: "name (Type extra) params".
  std::string repr(const std::string& name = "", int indent = 0) const;

 protected:
  // Registers a parameter (requires_grad is switched on) and returns the handle the layer keeps.
  Tensor register_parameter(const std::string& name, Tensor value);
  Tensor register_buffer(const std::string& name, Tensor value);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }
  void add_child(const std::string& name, std::shared_ptr<Module> module);

 private:
  void collect(const std::string& prefix, bool params, bool buffers, NamedTensors& out) const;

  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

using ModulePtr = std::shared_ptr<Module>;

// "a" + "b" -> "a.b"; empty parts are skipped.
std::string join_name(const std::string& prefix, const std::string& name);

// Loads named tensors from a safetensors file into a map (for load_state_dict).
std::map<std::string, Tensor> read_tensors(const std::string& path);
// Writes the module's state_dict to a safetensors file (names as PyTorch's).
void save_state_dict(const Module& module, const std::string& path,
                     const std::map<std::string, std::string>& metadata = {});
// Reads a safetensors file and loads it (strict as load_state_dict).
LoadReport load_state_dict_file(Module& module, const std::string& path, bool strict = true);

}  // namespace dgpipe::layers
