// Small models for pipeline tests, built deterministically so two calls give identical weights.
#pragma once
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
// The optimizer every pipeline test trains with (SGD, lr 0.1, momentum 0.9), the same for every stage, so
// that a pipelined run and a single-process reference take identical steps.
pipeline::OptimizerFactory sgd_factory(double weight_decay = 0.0);

}  // namespace dgpipe::testmodels
