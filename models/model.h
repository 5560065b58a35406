// Model: an ordered list of blocks (so a pipeline can cut between any two) that together form one Module
// whose state_dict names are the PyTorch / Hugging Face names of the same network.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "layers/bottleneck.h"
#include "layers/layers.h"

namespace dgpipe::models {

using engine::DType;
using engine::Shape;
using engine::Tensor;
using layers::BlockContext;
using layers::Module;
using layers::NamedTensors;

enum class InputKind { image, tokens };

class Model : public Module {
  std::string name_;

 public:
  // (name_ is declared first so that it is initialised first.)
  Model(std::string name, InputKind kind, int64_t num_classes)
      : name_(std::move(name)), input_kind(kind), num_classes(num_classes) {}

  // Appends a block. Its parameters are named `prefix` + the block's own names (prefix "" for blocks whose
  // parts already carry full names).
  void add_block(const std::string& label, std::shared_ptr<Module> block, const std::string& prefix = "");
  // A module that belongs to the checkpoint but to no block (e.g. a BertModel pooler kept only so that
  // checkpoints load). It takes no part in forward.
  void add_unused(const std::string& prefix, std::shared_ptr<Module> module);

  // A learned bottleneck between block `after` and block `after + 1`, registered under `name` (its parameters
  // are "<name>.encoder.weight", ...) so that checkpoints, optimizers and model-info see it. forward() does
  // not run it: a pipeline runs its encoder at the end of one stage and its decoder at the start of the next.
  void add_bottleneck(const std::string& name, size_t after, std::shared_ptr<layers::Bottleneck> bottleneck);
  struct Insertion {
    std::string name;
    size_t after;  // the block it follows
    std::shared_ptr<layers::Bottleneck> module;
  };
  const std::vector<Insertion>& bottlenecks() const { return bottlenecks_; }
  // Shape of the output of blocks [0, end) for an input of shape `input` (images [N,3,H,W], tokens [N,L];
  // empty: example_input_shape(1)): one forward pass of zeros in eval mode without gradients, on the blocks'
  // devices.
  Shape block_output_shape(size_t end, const Shape& input = {});

  size_t num_blocks() const { return blocks_.size(); }
  const std::shared_ptr<Module>& block(size_t i) const { return blocks_.at(i).module; }
  const std::string& block_label(size_t i) const { return blocks_.at(i).label; }
  // Full (model-level) names of block i's parameters.
  NamedTensors block_named_parameters(size_t i) const;
  int64_t block_num_parameters(size_t i) const;

  // Runs every block.
  Tensor forward(const Tensor& x, const BlockContext& ctx) override;
  // Runs blocks [begin, end) — what one pipeline stage does.
  Tensor forward_blocks(const Tensor& x, const BlockContext& ctx, size_t begin, size_t end);
  // Side inputs every stage rebuilds from the model input: for text models the attention mask and position
  // ids from the token ids (padding = pad token); for image models nothing.
  virtual BlockContext make_context(const Tensor& input) const { return BlockContext(); }
  // Mean cross-entropy of logits [N,C] against class ids [N].
  Tensor loss(const Tensor& logits, const Tensor& target) const;
  // A batch-N input shape for this model (images [N,3,S,S]; tokens [N,L]).
  virtual Shape example_input_shape(int64_t batch) const = 0;

  std::string type_name() const override { return name_; }
  const std::string& name() const { return name_; }

  const InputKind input_kind;
  const int64_t num_classes;  // 0: no head (the model returns features / hidden states)

 private:
  struct BlockEntry {
    std::string label, prefix;
    std::shared_ptr<Module> module;
  };
  std::vector<BlockEntry> blocks_;
  std::vector<Insertion> bottlenecks_;
};

using ModelPtr = std::shared_ptr<Model>;

// Loads a checkpoint written by PyTorch/Hugging Face (safetensors). Keys are matched after two adjustments
// that Hugging Face itself makes: non-persistent buffers (…position_ids, …token_type_ids) are dropped, and a
// base-model checkpoint ("embeddings.…") loads into a model with a task head ("bert.embeddings.…").
// strict=false lets the task head stay missing (fine-tuning from a pretrained encoder); what was
// missing/unexpected is reported.
layers::LoadReport load_checkpoint(Model& model, const std::string& path, bool strict = true);

// Inserts a learned bottleneck at every boundary of the pipeline cut `balance` (blocks per stage) whose spec
// is not "none". `specs`: one spec (layers::parse_bottleneck_spec) for every boundary, or one per boundary
// separated by ';' ("conv:8/2;none"). Boundary b's bottleneck is "bottleneck.<b>", sized from the tensor that
// crosses the boundary and initialised from `seed`. Returns one entry per boundary, null where there is none.
std::vector<std::shared_ptr<layers::Bottleneck>> insert_bottlenecks(Model& model, const std::string& specs,
                                                                    const std::vector<int>& balance,
                                                                    uint64_t seed);

}  // namespace dgpipe::models
