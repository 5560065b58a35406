// Launched by the test suite with mpirun (one process per rank). Modes:
//   transparency chain|client-server  — pipelined training over the MPI channel equals single-device training
//   positions chain|client-server     — a RoBERTa fed explicit (shifted) position ids gives the unpipelined
//                                       logits and gradients over the MPI channel
//   kill                              — rank 1 dies (SIGKILL) in step 1: every rank must exit non-zero
//   stuck                             — rank 1 hangs in step 1: its neighbours time out naming it and the
//   step
#include <mpi.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>

#include "engine/optim/sgd.h"
#include "pipeline/pipeline.h"
#include "pipeline_test_models.h"

using namespace dgpipe;
using namespace dgpipe::pipeline;

namespace {
const pipeline::OptimizerFactory make_sgd = testmodels::sgd_factory();

// S stages of (nearly) equal block counts, M micro-batches.
PipelineOptions even_stages(size_t blocks, int S, int M, Placement placement, std::chrono::seconds timeout) {
  PipelineOptions opts =
      testmodels::pipeline_options(balance_by_cost(std::vector<double>(blocks, 1.0), S), M);
  opts.placement = placement;
  opts.timeout = timeout;
  return opts;
}

// The largest relative difference to the unpipelined run, over the logits (on the rank running the last
// stage) and the gradients of the blocks this rank runs.
double positions_difference(int rank, int size, Placement placement, int S) {
  const int M = 2;
  auto blocks = testmodels::make_blocks("roberta");
  auto reference = testmodels::make_blocks("roberta");
  PipelineOptions opts = even_stages(blocks.size(), S, M, placement, std::chrono::seconds(60));
  Pipeline pipe(blocks, opts, OptimizerFactory{}, rank, size);  // no optimizer: gradients stay
  MicroBatch batch = testmodels::with_shifted_positions(testmodels::make_batch("roberta", 8, 7), 3);
  StepResult eval = pipe.eval_step(batch, /*keep_logits=*/true);
  pipe.train_step(batch);
  testmodels::Unpipelined ref = testmodels::run_unpipelined(reference, batch, M);
  double worst = 0;
  if (pipe.runs_stage(S - 1)) {
    if (eval.logits.size() != ref.logits.size()) return 1.0;
    for (int m = 0; m < M; ++m)
      worst = std::max(worst, testmodels::relative_difference(eval.logits[m], ref.logits[m]));
  }
  for (size_t at : testmodels::local_blocks(pipe)) {
    auto params = blocks[at]->parameters();
    for (size_t i = 0; i < params.size(); ++i)
      worst = std::max(worst, params[i].grad().defined()
                                  ? testmodels::relative_difference(params[i].grad(), ref.grads[at][i])
                                  : 1.0);
  }
  return worst;
}

// Three SGD steps of the MLP through the pipeline and on one device (kill/stuck: a rank fails in step 1).
int transparency(int rank, int size, const std::string& mode, Placement placement, int S) {
  const int M = 4;
  auto blocks = testmodels::make_blocks("mlp");
  auto reference = testmodels::make_blocks("mlp");
  PipelineOptions opts =
      even_stages(blocks.size(), S, M, placement, std::chrono::seconds(mode == "stuck" ? 3 : 60));
  Pipeline pipe(blocks, opts, make_sgd, rank, size);
  auto ref_opt = testmodels::reference_optimizer(reference, make_sgd);
  for (int step = 0; step < 3; ++step) {
    if (step == 1 && rank == 1 && mode == "kill") std::raise(SIGKILL);
    if (step == 1 && rank == 1 && mode == "stuck") std::this_thread::sleep_for(std::chrono::hours(1));
    MicroBatch batch = testmodels::make_batch("mlp", 8, 100 + step);
    pipe.train_step(batch);
    testmodels::reference_step(reference, *ref_opt, batch, M);  // single-device, the same micro-batches
  }
  // Compare the blocks this rank trained.
  double worst = testmodels::max_state_difference(blocks, reference, testmodels::local_blocks(pipe));
  std::printf("rank %d: max relative parameter difference %.3g\n", rank, worst);
  return worst > 1e-5 ? 1 : 0;
}
}  // namespace

int main(int argc, char** argv) {
  auto [rank, size] = mpi_init(&argc, &argv);
  std::string mode = argc > 1 ? argv[1] : "transparency";
  std::string placement_name = argc > 2 ? argv[2] : "chain";
  Placement placement = parse_placement(placement_name);
  int S = placement == Placement::chain ? size : size + 1;
  int code = 0;
  try {
    if (mode == "positions") {
      double worst = positions_difference(rank, size, placement, S);
      std::printf("rank %d: max relative difference of logits and gradients %.3g\n", rank, worst);
      if (worst > 1e-5) code = 1;
    } else {
      code = transparency(rank, size, mode, placement, S);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  int any = 0;
  MPI_Allreduce(&code, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  mpi_finalize();
  if (rank == 0) std::printf(any ? "MPI transparency FAILED\n" : "MPI transparency OK\n");
  return any;
}
