// Small models for pipeline tests, built deterministically so two calls give identical weights.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "layers/layers.h"
#include "pipeline/executor.h"
#include "pipeline/pipeline.h"

namespace dgpipe::testmodels {

std::vector<std::string> available_models();
std::vector<layers::ModulePtr> make_blocks(const std::string& name);
// A batch of n samples for the model (inputs, labels and context), deterministic in seed.
pipeline::MicroBatch make_batch(const std::string& name, int64_t n, uint64_t seed);
// The roberta batch with explicit position ids that are not what the model would compute from the token ids
// (those shifted by `shift`): a stage that lost them and rebuilt them from the ids would compute other
// logits.
pipeline::MicroBatch with_shifted_positions(pipeline::MicroBatch batch, int64_t shift);
// Rows [begin, begin + n) of a batch, side inputs included: a split made by the tests, not by the pipeline.
pipeline::MicroBatch rows(const pipeline::MicroBatch& batch, int64_t begin, int64_t n);
// What the blocks compute unpipelined on a batch cut into M equal micro-batches: each micro-batch's logits in
// eval mode, and, per block, its parameters' gradients after one backward over all micro-batches (micro-batch
// m's loss scaled by n_m / N, as the pipeline does). Leaves the gradients in the blocks.
struct Unpipelined {
  std::vector<engine::Tensor> logits;
  std::vector<std::vector<engine::Tensor>> grads;
};
Unpipelined run_unpipelined(std::vector<layers::ModulePtr>& blocks, const pipeline::MicroBatch& batch, int M);
// Indices of the blocks held by the stages this process runs (all of them in a single-process pipeline).
std::vector<size_t> local_blocks(const pipeline::Pipeline& pipe);
// The largest element-wise |a - b| / max(1, |b|) over the state (parameters and buffers) of blocks `which`.
double max_state_difference(const std::vector<layers::ModulePtr>& a, const std::vector<layers::ModulePtr>& b,
                            const std::vector<size_t>& which);
// |a - b| / |b| (L2); infinite when the shapes differ.
double relative_difference(const engine::Tensor& a, const engine::Tensor& b);
// The optimizer every pipeline test trains with (SGD, lr 0.1, momentum 0.9), the same for every stage, so
// that a pipelined run and a single-process reference take identical steps.
pipeline::OptimizerFactory sgd_factory(double weight_decay = 0.0);
// The options most pipeline tests start from: blocks per stage, micro-batches per step and, when `codecs` is
// not empty, one boundary codec pair (parse_direction_pair syntax) for every boundary; the rest default.
pipeline::PipelineOptions pipeline_options(std::vector<int> balance, int micro_batches,
                                           const std::string& codecs = "");
// The optimizer of a single-process reference: `factory`'s, over every parameter of the blocks.
std::unique_ptr<engine::Optimizer> reference_optimizer(const std::vector<layers::ModulePtr>& blocks,
                                                       const pipeline::OptimizerFactory& factory);
// One training step of the single-process reference: the batch cut into M micro-batches as the pipeline cuts
// it, micro-batch m's loss scaled by n_m / N, gradients clipped to the global norm `clip` (0: not clipped),
// one optimizer step. Returns the gradient norm before clipping (0 when not clipped).
double reference_step(std::vector<layers::ModulePtr>& blocks, engine::Optimizer& opt,
                      const pipeline::MicroBatch& batch, int M, double clip = 0.0);

}  // namespace dgpipe::testmodels
