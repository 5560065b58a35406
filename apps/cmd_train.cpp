// `dgpipe train`: see apps/train_config.h for the options and apps/trainer.cpp for the loop.
#include "apps/command.h"
#include "apps/train_config.h"
#include "apps/trainer.h"

namespace dgpipe::apps {
namespace {
int run_train(int argc, char** argv) {
  TrainConfig config;
  if (!parse_train_args(argc, argv, config)) return 0;
  run_training(config);
  return 0;
}
const Registration reg{"train", "train or fine-tune a model through a compressed pipeline", run_train};
}  // namespace
}  // namespace dgpipe::apps
