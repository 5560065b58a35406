// Launched by the test suite with mpirun (one process per rank). Modes:
//   transparency chain|client-server  — pipelined training over the MPI channel equals single-device training
//   kill                              — rank 1 dies (SIGKILL) in step 1: every rank must exit non-zero
//   stuck                             — rank 1 hangs in step 1: its neighbours time out naming it and the
//   step
#include <mpi.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>

#include "engine/optim/sgd.h"
#include "pipeline/pipeline.h"
#include "pipeline_test_models.h"

using namespace dgpipe;
using namespace dgpipe::pipeline;
using engine::Tensor;

namespace {
const pipeline::OptimizerFactory make_sgd = testmodels::sgd_factory();
}  // namespace

int main(int argc, char** argv) {
  auto [rank, size] = mpi_init(&argc, &argv);
  std::string mode = argc > 1 ? argv[1] : "transparency";
  std::string placement_name = argc > 2 ? argv[2] : "chain";
  Placement placement = parse_placement(placement_name);
  int S = placement == Placement::chain ? size : size + 1;
  const int M = 4;
  int code = 0;
  try {
    auto blocks = testmodels::make_blocks("mlp");
    auto reference = testmodels::make_blocks("mlp");
    PipelineOptions opts;
    opts.balance = balance_by_cost(std::vector<double>(blocks.size(), 1.0), S);
    opts.micro_batches = M;
    opts.placement = placement;
    opts.timeout = std::chrono::seconds(mode == "stuck" ? 3 : 60);
    Pipeline pipe(blocks, opts, make_sgd, rank, size);
    std::vector<Tensor> ref_params;
    for (auto& b : reference)
      for (auto& p : b->parameters()) ref_params.push_back(p);
    auto ref_opt = make_sgd(ref_params, 0);
    for (int step = 0; step < 3; ++step) {
      if (step == 1 && rank == 1 && mode == "kill") std::raise(SIGKILL);
      if (step == 1 && rank == 1 && mode == "stuck") std::this_thread::sleep_for(std::chrono::hours(1));
      MicroBatch batch = testmodels::make_batch("mlp", 8, 100 + step);
      pipe.train_step(batch);
      // single-device reference on the same micro-batches
      auto micro = split_micro_batches(batch, M);
      for (auto& mb : micro) {
        Tensor h = mb.input;
        for (auto& b : reference) h = b->forward(h, mb.ctx);
        engine::mul(engine::cross_entropy(h, mb.labels), 1.0 / M).backward();
      }
      ref_opt->step();
      ref_opt->zero_grad();
    }
    // Compare the blocks this rank trained.
    double worst = 0;
    int at = 0;
    for (int s = 0; s < S; ++s) {
      for (int k = 0; k < opts.balance[s]; ++k, ++at) {
        if (!pipe.runs_stage(s)) continue;
        auto pa = blocks[at]->state_dict(), pb = reference[at]->state_dict();
        for (size_t i = 0; i < pa.size(); ++i) {
          auto va = pa[i].second.to_vector(), vb = pb[i].second.to_vector();
          for (size_t j = 0; j < va.size(); ++j)
            worst = std::max(worst, std::fabs(va[j] - vb[j]) / std::max(1.0, std::fabs(vb[j])));
        }
      }
    }
    std::printf("rank %d: max relative parameter difference %.3g\n", rank, worst);
    if (worst > 1e-5) code = 1;
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
