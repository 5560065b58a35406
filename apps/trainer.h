// The training loop behind `dgpipe train`: data, model, pipeline, learning-rate schedule, logging,
// checkpoints.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "apps/train_config.h"

namespace dgpipe::apps {

// What a run has spent so far, over all its segments (a run killed and resumed counts every segment up to the
// checkpoint the next one started from; work after that checkpoint was redone, and is counted once).
struct RunTotals {
  uint64_t wire_bytes = 0, raw_bytes = 0;  // boundary traffic, both directions, every boundary
  double codec_seconds = 0;                // encode time at the senders plus decode time at the receivers
  double train_seconds = 0;                // wall-clock of training: everything but held-out evaluation
  double elapsed_seconds = 0;              // wall-clock, evaluation included
  int64_t segments = 1;                    // 1 + the number of resumes
  int64_t skipped_steps = 0;               // optimizer steps the loss scaler skipped (fp16 overflow)
};

// One line of metrics.jsonl / metrics.csv.
struct EpochMetrics {
  int64_t epoch = 0;
  int64_t step = 0;  // optimizer steps done
  double train_loss = 0, train_acc = 0;
  double eval_loss = 0, eval_acc = 0, eval_mcc = 0, eval_f1 = 0;
  double lr = 0;
  double samples_per_s = 0;
  double seconds = 0;
  uint64_t wire_bytes = 0, raw_bytes = 0;  // boundary traffic of the epoch, both directions
  RunTotals totals;                        // the whole run at the end of the epoch
};

struct TrainSummary {
  std::vector<EpochMetrics> epochs;
  std::vector<double> step_losses;  // every optimizer step's loss (what resume exactness is tested on)
  double final_eval_acc = 0, final_eval_mcc = 0;
  int64_t steps = 0;  // optimizer steps of the whole run, across resumes
  RunTotals totals;   // the whole run, across resumes
};

// Runs the configured job. Prints progress to stdout; writes into config.log_dir. When stop_after_steps > 0
// the run returns after that many steps of this invocation without a final checkpoint (tests use it to
// simulate an interruption).
TrainSummary run_training(const TrainConfig& config, int64_t stop_after_steps = 0);

}  // namespace dgpipe::apps
