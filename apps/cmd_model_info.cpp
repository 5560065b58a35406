// `dgpipe model-info --model NAME`: the blocks a pipeline can cut between, every parameter's name and shape
// (as PyTorch's state_dict names them) and the parameter counts; with --bottleneck and --balance, the learned
// bottlenecks `dgpipe train` would insert at the boundaries of that cut, with their shapes.
//   dgpipe model-info --model mobilenetv2 --balance 1,18,1 --bottleneck 'conv:8/2;conv:320' --counts
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "apps/command.h"
#include "models/registry.h"
#include "pipeline/pipeline.h"

namespace {

using namespace dgpipe;

// One line per block, and below a block the bottleneck inserted after it (its shapes per sample).
void print_blocks(models::Model& model) {
  std::cout << "blocks (" << model.num_blocks() << "):\n";
  for (size_t i = 0; i < model.num_blocks(); ++i) {
    char line[160];
    std::snprintf(line, sizeof line, "  %3zu  %-22s %-28s %12lld\n", i, model.block_label(i).c_str(),
                  model.block(i)->type_name().c_str(), static_cast<long long>(model.block_num_parameters(i)));
    std::cout << line;
    for (const auto& b : model.bottlenecks()) {
      if (b.after != i) continue;
      const engine::Shape wide = model.block_output_shape(i + 1), narrow = b.module->narrow_shape(wide);
      std::snprintf(line, sizeof line, "       + %-20s %-28s %12lld   %s -> %s\n", b.name.c_str(),
                    ("Bottleneck " + b.module->spec.str()).c_str(),
                    static_cast<long long>(b.module->num_parameters()), engine::shape_str(wide).c_str(),
                    engine::shape_str(narrow).c_str());
      std::cout << line;
    }
  }
}

int run_model_info(int argc, char** argv) {
  CLI::App app{"Print a model's blocks, parameter names/shapes and counts", "dgpipe model-info"};
  std::string name, bottleneck = "none", balance;
  models::ModelOptions opts;
  bool names_only = false, counts_only = false;
  app.add_option("--model", name, models::model_names_help())->required();
  app.add_option("--num-classes", opts.num_classes, "classes of the head (text: 0 = encoder only)");
  app.add_option("--input-size", opts.input_size,
                 "image models: 32 (CIFAR geometry) or 224 (ImageNet geometry)");
  app.add_option("--width", opts.width_mult, "image models: width multiplier");
  app.add_option("--config", opts.hf_config, "text models: Hugging Face config.json giving the sizes");
  app.add_option("--bottleneck", bottleneck, "learned bottlenecks as for dgpipe train (needs --balance)");
  app.add_option("--balance", balance, "blocks per stage, e.g. 1,18,1: where the boundaries are");
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
    if (bottleneck != "none") {
      DGP_CHECK(!balance.empty(), "--bottleneck needs --balance (the blocks per stage, so the boundaries)");
      models::insert_bottlenecks(
          *model, bottleneck, pipeline::parse_balance(balance, static_cast<int>(model->num_blocks()), 0), 0);
    }
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
  print_blocks(*model);
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
