// `dgpipe model-info --model NAME`: the blocks a pipeline can cut between, every parameter's name and shape
// (as PyTorch's state_dict names them) and the parameter counts.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "apps/command.h"
#include "models/registry.h"

namespace {

using namespace dgpipe;

int run_model_info(int argc, char** argv) {
  CLI::App app{"Print a model's blocks, parameter names/shapes and counts", "dgpipe model-info"};
  std::string name;
  models::ModelOptions opts;
  bool names_only = false, counts_only = false;
  app.add_option("--model", name, models::model_names_help())->required();
  app.add_option("--num-classes", opts.num_classes, "classes of the head (text: 0 = encoder only)");
  app.add_option("--input-size", opts.input_size,
                 "image models: 32 (CIFAR geometry) or 224 (ImageNet geometry)");
  app.add_option("--config", opts.hf_config, "text models: Hugging Face config.json giving the sizes");
  app.add_flag("--names", names_only, "print only 'name shape' lines of the state_dict");
  app.add_flag("--counts", counts_only, "print only the blocks and counts");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  models::ModelPtr model;
  try {
    model = models::build_model(name, opts);
  } catch (const std::exception& e) {
    std::cerr << "dgpipe model-info: " << e.what() << "\n";
    return 2;
  }
  auto shape_text = [](const engine::Shape& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
    return out;
  };
  if (names_only) {
    for (auto& [n, t] : model->state_dict()) std::cout << n << " " << shape_text(t.shape()) << "\n";
    return 0;
  }
  std::cout << "model " << model->name() << "  classes " << model->num_classes << "  input "
            << engine::shape_str(model->example_input_shape(1)) << "\n\n";
  std::cout << "blocks (" << model->num_blocks() << "):\n";
  for (size_t i = 0; i < model->num_blocks(); ++i) {
    char line[160];
    std::snprintf(line, sizeof line, "  %3zu  %-22s %-28s %12lld\n", i, model->block_label(i).c_str(),
                  model->block(i)->type_name().c_str(),
                  static_cast<long long>(model->block_num_parameters(i)));
    std::cout << line;
  }
  if (!counts_only) {
    std::cout << "\nstate_dict:\n";
    for (auto& [n, t] : model->state_dict())
      std::cout << "  " << n << " [" << shape_text(t.shape()) << "] " << engine::dtype_name(t.dtype())
                << "\n";
  }
  int64_t buffers = 0;
  for (auto& [n, t] : model->named_buffers()) buffers += t.numel();
  std::cout << "\nparameters: " << model->num_parameters() << " (" << model->named_parameters().size()
            << " tensors)  buffers: " << buffers << " elements\n";
  return 0;
}

const apps::Registration registration{
    "model-info", "print a model's blocks, parameter names/shapes and counts", run_model_info};

}  // namespace
