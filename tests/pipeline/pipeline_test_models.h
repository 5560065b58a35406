// Small models for pipeline tests, built deterministically so two calls give identical weights.
#pragma once
#include <string>
#include <vector>

#include "layers/layers.h"
#include "pipeline/executor.h"

namespace dgpipe::testmodels {

std::vector<std::string> available_models();
std::vector<layers::ModulePtr> make_blocks(const std::string& name);
// A batch of n samples for the model (inputs, labels and context), deterministic in seed.
pipeline::MicroBatch make_batch(const std::string& name, int64_t n, uint64_t seed);

}  // namespace dgpipe::testmodels
