// NCCL channel on real GPUs: two ranks (mpirun -np 2), one GPU each. NCCL refuses two ranks of one
// communicator on the same GPU, so with fewer than two GPUs (or a build without NCCL) every test here is
// skipped, saying why.
//
// NcclChannel.TwoRanksOnTwoGpus starts this same binary under mpirun with DGPIPE_NCCL_WORKER=1; in those two
// processes the NcclChannelWorker tests run (and the launcher skips itself):
//   - ExchangesDeviceBodies: large bodies both ways at once (no send/send deadlock), an empty body, a
//   same-rank
//     hop through the mailbox with an event, contents checked byte for byte;
//   - PipelineTransparency: two stages on cuda:0/cuda:1 over the nccl channel train like the CPU reference.
// Status: written without access to a machine with two GPUs, so never run there yet.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/device.h"
#include "pipeline/channel.h"

#if defined(DGPIPE_WITH_CUDA) && defined(DGPIPE_WITH_MPI) && defined(DGPIPE_WITH_NCCL)
#include <mpi.h>
#include <unistd.h>

#include <array>

#include "engine/optim/sgd.h"
#include "pipeline/pipeline.h"
#include "pipeline_test_models.h"
#define DGPIPE_TEST_NCCL 1
#endif

using namespace dgpipe;
using namespace dgpipe::pipeline;

#ifndef DGPIPE_TEST_NCCL

TEST(NcclChannel, TwoRanksOnTwoGpus) {
  GTEST_SKIP() << "built without the NCCL channel (needs CUDA, MPI and NCCL)";
}

#else

namespace {

using engine::Tensor;

bool is_worker() {
  return std::getenv("DGPIPE_NCCL_WORKER") != nullptr;
}

class FinalizeMpi : public ::testing::Environment {
 public:
  // Tells the launcher that this worker ran both worker tests and passed them (a filter typo would otherwise
  // pass).
  void TearDown() override {
    if (!is_worker()) return;
    const auto* unit = ::testing::UnitTest::GetInstance();
    if (unit->failed_test_count() == 0 && unit->successful_test_count() == 2) {
      int rank = 0;
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      std::printf("nccl worker rank %d OK\n", rank);
    }
    mpi_finalize();
  }
};
::testing::Environment* const finalize_mpi = ::testing::AddGlobalTestEnvironment(new FinalizeMpi);

uint8_t pattern(size_t i, int tag) {
  return static_cast<uint8_t>((i * 13 + static_cast<size_t>(tag) * 7) & 255);
}

Tensor patterned_body(size_t n, int tag, int device) {
  Tensor host = engine::empty({static_cast<int64_t>(n)},
                              engine::TensorOptions(engine::DType::u8, engine::Device::cpu()));
  uint8_t* p = host.data<uint8_t>();
  for (size_t i = 0; i < n; ++i) p[i] = pattern(i, tag);
  return host.to(engine::Device::cuda(device));
}

// Number of bytes of `body` that differ from the pattern (0 = intact).
size_t corrupted(const Tensor& body, int tag) {
  Tensor host = body.to(engine::Device::cpu());
  const uint8_t* p = host.data<uint8_t>();
  size_t bad = 0;
  for (int64_t i = 0; i < host.numel(); ++i) bad += p[i] != pattern(static_cast<size_t>(i), tag);
  return bad;
}

Message message(int src, int dst, MsgKind kind, int mb, Tensor body) {
  Message m;
  m.src_stage = src;
  m.dst_stage = dst;
  m.kind = kind;
  m.micro_batch = mb;
  m.step = 5;
  m.bytes = {static_cast<uint8_t>(src), static_cast<uint8_t>(dst), static_cast<uint8_t>(mb)};
  m.body = std::move(body);
  return m;
}

}  // namespace

TEST(NcclChannel, TwoRanksOnTwoGpus) {
  if (is_worker()) GTEST_SKIP() << "this is a worker";
  int gpus = engine::cuda_device_count();
  if (gpus < 2)
    GTEST_SKIP() << "needs 2 GPUs (found " << gpus
                 << "): NCCL refuses two ranks of one communicator on one GPU";
  char self[4096] = {0};
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  ASSERT_GT(n, 0);
  const char* mpiexec = std::getenv("DGPIPE_MPIEXEC") ? std::getenv("DGPIPE_MPIEXEC") : "mpirun";
  setenv("DGPIPE_NCCL_WORKER", "1", 1);
  std::string cmd = std::string("timeout 300 ") + mpiexec +
                    " --allow-run-as-root --oversubscribe --bind-to none -np 2 " + self +
                    " --gtest_filter='NcclChannelWorker.*' 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  std::array<char, 4096> buf;
  while (fgets(buf.data(), buf.size(), pipe)) output += buf.data();
  int status = pclose(pipe);
  unsetenv("DGPIPE_NCCL_WORKER");
  std::printf("%s", output.c_str());
  EXPECT_EQ(status, 0) << cmd;
  EXPECT_NE(output.find("nccl worker rank 0 OK"), std::string::npos);
  EXPECT_NE(output.find("nccl worker rank 1 OK"), std::string::npos);
}

TEST(NcclChannelWorker, ExchangesDeviceBodies) {
  if (!is_worker()) GTEST_SKIP() << "runs inside mpirun (NcclChannel.TwoRanksOnTwoGpus starts it)";
  int argc = 0;
  char** argv = nullptr;
  auto [rank, size] = mpi_init(&argc, &argv);
  ASSERT_EQ(size, 2);
  // Stage 0 on rank 0; stages 1 and 2 on rank 1 (1 -> 2 is a same-rank hop with a device body).
  NcclChannel ch({0, 1, 1}, rank);
  ch.set_timeout(std::chrono::seconds(60));
  const size_t big =
      size_t(16) << 20;  // far above NCCL's internal buffers: a send blocks until its receive runs
  const int M = 4;
  if (rank == 0) {
    for (int mb = 0; mb < M; ++mb)
      ch.send(message(0, 1, MsgKind::activation, mb, patterned_body(big, mb, rank)));
    ch.send(message(0, 1, MsgKind::control, 0, Tensor()));  // no body
    for (int mb = 0; mb < M; ++mb) {
      Message g = ch.recv(1, 0, MsgKind::gradient, mb, 5);
      ASSERT_TRUE(g.body.defined());
      EXPECT_EQ(g.body.device(), engine::Device::cuda(0));
      EXPECT_EQ(static_cast<size_t>(g.body.numel()), big);
      EXPECT_EQ(corrupted(g.body, 100 + mb), 0u) << "gradient " << mb;
      EXPECT_EQ(g.bytes, (std::vector<uint8_t>{1, 0, static_cast<uint8_t>(mb)}));
    }
  } else {
    // Both directions are in flight before either side receives.
    for (int mb = 0; mb < M; ++mb)
      ch.send(message(1, 0, MsgKind::gradient, mb, patterned_body(big, 100 + mb, rank)));
    ch.send(message(1, 2, MsgKind::activation, 0, patterned_body(1000, 200, rank)));
    for (int mb = 0; mb < M; ++mb) {
      Message a = ch.recv(0, 1, MsgKind::activation, mb, 5);
      ASSERT_TRUE(a.body.defined());
      EXPECT_EQ(static_cast<size_t>(a.body.numel()), big);
      EXPECT_EQ(corrupted(a.body, mb), 0u) << "activation " << mb;
    }
    Message c = ch.recv(0, 1, MsgKind::control, 0, 5);
    EXPECT_FALSE(c.body.defined());
    EXPECT_EQ(c.bytes, (std::vector<uint8_t>{0, 1, 0}));
    Message local = ch.recv(1, 2, MsgKind::activation, 0, 5);
    EXPECT_EQ(corrupted(local.body, 200), 0u);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(NcclChannelWorker, PipelineTransparency) {
  if (!is_worker()) GTEST_SKIP() << "runs inside mpirun (NcclChannel.TwoRanksOnTwoGpus starts it)";
  int argc = 0;
  char** argv = nullptr;
  auto [rank, size] = mpi_init(&argc, &argv);
  ASSERT_EQ(size, 2);
  const OptimizerFactory make_sgd = testmodels::sgd_factory();
  auto blocks = testmodels::make_blocks("mlp");
  auto reference = testmodels::make_blocks("mlp");
  PipelineOptions opts =
      testmodels::pipeline_options(balance_by_cost(std::vector<double>(blocks.size(), 1.0), 2), 2);
  opts.kind = ScheduleKind::one_f_one_b;
  opts.devices = {engine::Device::cuda(0), engine::Device::cuda(1)};
  opts.process_channel = "nccl";
  opts.timeout = std::chrono::seconds(60);
  double worst = 0;
  {
    Pipeline pipe(blocks, opts, make_sgd, rank, size);
    auto ref_opt = testmodels::reference_optimizer(reference, make_sgd);
    for (int step = 0; step < 3; ++step) {
      MicroBatch batch = testmodels::make_batch("mlp", 8, 300 + step);
      pipe.train_step(batch);
      testmodels::reference_step(reference, *ref_opt, batch, opts.micro_batches);
    }
    worst = testmodels::max_state_difference(blocks, reference, testmodels::local_blocks(pipe));
  }
  EXPECT_LT(worst, 1e-4) << "rank " << rank << ": GPU pipeline over NCCL vs CPU reference";
  MPI_Barrier(MPI_COMM_WORLD);
}

#endif
