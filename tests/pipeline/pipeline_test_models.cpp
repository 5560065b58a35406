#include "pipeline_test_models.h"

#include "engine/ops.h"

namespace dgpipe::testmodels {

using engine::Generator;
using engine::Tensor;

std::vector<std::string> available_models() { return {"mlp"}; }

std::vector<layers::ModulePtr> make_blocks(const std::string& name) {
  Generator gen(1234);
  std::vector<layers::ModulePtr> b;
  if (name == "mlp") {
    b.push_back(std::make_shared<layers::Linear>(8, 16, true, &gen));
    b.push_back(layers::ReLU());
    b.push_back(std::make_shared<layers::Linear>(16, 16, true, &gen));
    b.push_back(layers::Tanh());
    b.push_back(std::make_shared<layers::Linear>(16, 4, true, &gen));
    return b;
  }
  DGP_FAIL("test model '" << name << "' unknown");
}

pipeline::MicroBatch make_batch(const std::string& name, int64_t n, uint64_t seed) {
  Generator gen(seed);
  pipeline::MicroBatch mb;
  if (name == "mlp") {
    mb.input = engine::randn({n, 8}, {}, &gen);
    std::vector<int64_t> labels;
    for (int64_t i = 0; i < n; ++i) labels.push_back((seed + i * 7) % 4);
    mb.labels = engine::from_vector(labels, {n});
    return mb;
  }
  DGP_FAIL("test model '" << name << "' unknown");
}

}  // namespace dgpipe::testmodels
