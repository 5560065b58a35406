// Transparency: with codec `none`, a pipelined step gives the same parameters as single-device training on
// the same micro-batches, whatever the stage count, micro-batch count, schedule or placement. Plus partition,
// wire accounting with codecs, trace output and failure propagation.
#include "pipeline/pipeline.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <thread>

#include "compress/codec.h"
#include "engine/cuda.h"
#include "engine/ops.h"
#include "engine/optim/sgd.h"
#include "layers/layers.h"
#include "pipeline_test_models.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe;
using namespace dgpipe::pipeline;
using engine::Tensor;

namespace {

const pipeline::OptimizerFactory make_sgd = testmodels::sgd_factory(1e-3);

double max_param_diff(const std::vector<layers::ModulePtr>& a, const std::vector<layers::ModulePtr>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    auto pa = a[i]->state_dict(), pb = b[i]->state_dict();
    for (size_t k = 0; k < pa.size(); ++k) {
      auto va = pa[k].second.to_vector(), vb = pb[k].second.to_vector();
      double num = 0, den = 0;
      for (size_t j = 0; j < va.size(); ++j) {
        num += (va[j] - vb[j]) * (va[j] - vb[j]);
        den += vb[j] * vb[j];
      }
      // Relative L2 with a floor of RMS 1e-2: some tensors are analytically zero up to float noise (the
      // attention key bias gets no gradient; a batch norm after a 2-sample micro-batch at 1x1 has running
      // mean 0), and noise over noise is no signal. Real parameters have RMS 0.1-1, where this is a plain
      // relative error.
      double floor = 1e-4 * static_cast<double>(va.size());
      double rel = std::sqrt(num / std::max(den, floor));
      if (rel > 1e-5 && std::getenv("DGPIPE_DEBUG_TRANSPARENCY"))
        std::printf("  block %zu %s: relative difference %.3g\n", i, pa[k].first.c_str(), rel);
      worst = std::max(worst, rel);
    }
  }
  return worst;
}

void check_transparency(const std::string& model, int S, int M, ScheduleKind kind, Placement placement,
                        double clip = 0.0) {
  SCOPED_TRACE(model + " S=" + std::to_string(S) + " M=" + std::to_string(M) + " " +
               schedule_kind_name(kind) + " clip=" + std::to_string(clip));
  auto ref_blocks = testmodels::make_blocks(model);
  auto pipe_blocks = testmodels::make_blocks(model);
  ASSERT_LT(max_param_diff(ref_blocks, pipe_blocks), 1e-12) << "factories must build identical models";
  auto ref_opt = testmodels::reference_optimizer(ref_blocks, make_sgd);

  PipelineOptions opts =
      testmodels::pipeline_options(balance_by_cost(std::vector<double>(pipe_blocks.size(), 1.0), S), M);
  opts.kind = kind;
  opts.placement = placement;
  opts.clip_norm = clip;
  Pipeline pipe(pipe_blocks, opts, make_sgd);
  for (int step = 0; step < 3; ++step) {
    MicroBatch batch = testmodels::make_batch(model, 8, 100 + step);
    const double norm = testmodels::reference_step(ref_blocks, *ref_opt, batch, M, clip);
    if (clip > 0) {
      EXPECT_GT(norm, 2 * clip) << "the test must clip for real";
    }
    pipe.train_step(batch);
  }
  EXPECT_LT(max_param_diff(pipe_blocks, ref_blocks), 1e-5);
}

}  // namespace

TEST(Pipeline, TransparencyMlpAllShapes) {
  for (int S : {1, 2, 3, 4})
    for (int M : {1, 2, 4})
      for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b})
        check_transparency("mlp", S, M, kind, S >= 3 ? Placement::client_server : Placement::chain);
}

TEST(Pipeline, TransparencyModels) {
  for (const std::string& model : testmodels::available_models()) {
    if (model == "mlp") continue;
    for (int S : {2, 3, 4})
      for (int M : {1, 2, 4}) check_transparency(model, S, M, ScheduleKind::gpipe, Placement::chain);
    check_transparency(model, 3, 4, ScheduleKind::one_f_one_b, Placement::client_server);
  }
}

// --clip: every stage scales its gradients by the factor of the whole model's norm, as clip_grad_norm_ does
// unpipelined (a per-stage norm would clip each stage differently).
TEST(Pipeline, TransparencyWithGradientClipping) {
  for (int S : {1, 2, 3, 4}) check_transparency("mlp", S, 2, ScheduleKind::gpipe, Placement::chain, 0.05);
  check_transparency("resnet", 3, 2, ScheduleKind::one_f_one_b, Placement::client_server, 0.05);
}

TEST(Pipeline, BalanceByCost) {
  EXPECT_EQ(balance_by_cost({1, 1, 1, 1}, 2), (std::vector<int>{2, 2}));
  EXPECT_EQ(balance_by_cost({5, 1, 1, 1, 1, 1}, 2), (std::vector<int>{1, 5}));
  EXPECT_EQ(balance_by_cost({4, 1, 1, 1, 1, 4}, 3), (std::vector<int>{1, 4, 1}));
  EXPECT_EQ(parse_balance("1,17,1", 19, 3), (std::vector<int>{1, 17, 1}));
  EXPECT_THROW(parse_balance("1,17", 19, 2), engine::Error);
  EXPECT_THROW(parse_balance("1,x,1", 19, 3), engine::Error);
  EXPECT_THROW(parse_balance("1,2", 3, 3), engine::Error);
  EXPECT_EQ(place_stages(Placement::client_server, 4), (std::vector<int>{0, 1, 2, 0}));
  EXPECT_THROW(place_stages(Placement::client_server, 2), engine::Error);
  EXPECT_THROW(parse_placement("ring"), engine::Error);
}

TEST(Pipeline, WireBytesFollowTheCodecFormulas) {
  auto blocks = testmodels::make_blocks("mlp");
  PipelineOptions opts = testmodels::pipeline_options({2, 1, 2}, 4, "fwd=sortquant:6+2,bwd=uniform:8");
  Pipeline pipe(blocks, opts, make_sgd);
  const int steps = 2;
  MicroBatch batch = testmodels::make_batch("mlp", 8, 1);
  for (int i = 0; i < steps; ++i) pipe.train_step(batch);
  // Each boundary carries one activation [2,16] per micro-batch forward and one gradient back.
  auto fwd = compress::make_codec("sortquant:6+2"), bwd = compress::make_codec("uniform:8");
  engine::Shape shape{2, 16};
  for (auto& st : pipe.local_stages()) {
    int s = st->setup().stage;
    if (s < 2) {
      EXPECT_EQ(st->boundary_stats(Side::downstream, Direction::fwd).wire_bytes,
                steps * 4 * fwd->wire_bytes(shape))
          << "stage " << s;
      EXPECT_EQ(st->boundary_stats(Side::downstream, Direction::fwd).raw_bytes, steps * 4 * 2 * 16 * 4u);
    }
    if (s > 0) {
      EXPECT_EQ(st->boundary_stats(Side::upstream, Direction::bwd).wire_bytes,
                steps * 4 * bwd->wire_bytes(shape))
          << "stage " << s;
    }
  }
  // On a real boundary tensor, bit-packed 8-bit codes cost a quarter of f32 plus a small header: the ratio is
  // real.
  engine::Shape boundary{64, 32, 32, 32};
  double raw = 64.0 * 32 * 32 * 32 * 4;
  EXPECT_GT(fwd->wire_bytes(boundary), 0.25 * raw);
  EXPECT_LT(fwd->wire_bytes(boundary), 0.2501 * raw);
}

TEST(Pipeline, TraceHasOneEventPerInstruction) {
  auto blocks = testmodels::make_blocks("mlp");
  PipelineOptions opts = testmodels::pipeline_options({1, 2, 2}, 3);
  opts.trace = true;
  Pipeline pipe(blocks, opts, make_sgd);
  pipe.train_step(testmodels::make_batch("mlp", 6, 2));
  std::string path = ::testing::TempDir() + "dgpipe_trace.json";
  pipe.write_trace(path);
  std::ifstream f(path);
  nlohmann::json j = nlohmann::json::parse(f);
  size_t expected = 0;
  for (auto& p : make_schedule(3, 3, ScheduleKind::gpipe)) expected += p.size();
  EXPECT_EQ(j["traceEvents"].size(), expected);
  for (auto& e : j["traceEvents"]) {
    EXPECT_EQ(e["ph"], "X");
    EXPECT_GE(e["dur"].get<double>(), 0.0);
  }
  std::remove(path.c_str());
}

TEST(Pipeline, FailingStageStopsEveryStage) {
  // A codec that cannot encode (NaN activations) makes stage 0 fail; stage 1 must not hang waiting for it.
  auto blocks = testmodels::make_blocks("mlp");
  PipelineOptions opts = testmodels::pipeline_options({1, 4}, 2, "uniform:8");
  opts.timeout = std::chrono::seconds(30);
  Pipeline pipe(blocks, opts, make_sgd);
  MicroBatch batch = testmodels::make_batch("mlp", 4, 3);
  batch.input = engine::mul(batch.input, std::nan(""));
  auto t0 = std::chrono::steady_clock::now();
  try {
    pipe.train_step(batch);
    FAIL() << "expected an error";
  } catch (const engine::Error& e) {
    std::string w = e.what();
    EXPECT_NE(w.find("stage0->1"), std::string::npos) << w;  // names the boundary
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

namespace {

// Records how a failed step ends: the stages' abort calls, and the one end_after_failure call (its thread,
// and how many stages were still waiting in recv at that moment).
class FailureRecordingChannel : public Channel {
 public:
  void send(Message msg) override { inner_.send(std::move(msg)); }
  Message recv(int src, int dst, MsgKind kind, int micro_batch, int64_t step) override {
    waiting_++;
    try {
      Message m = inner_.recv(src, dst, kind, micro_batch, step);
      waiting_--;
      return m;
    } catch (...) {
      waiting_--;
      throw;
    }
  }
  void abort(const std::string& reason) override {
    aborts_++;
    inner_.abort(reason);
  }
  void end_after_failure(const std::string& reason) override {
    ends_++;
    end_thread_ = std::this_thread::get_id();
    waiting_at_end_ = waiting_.load();
    end_reason_ = reason;
  }

  LocalChannel inner_;
  std::atomic<int> waiting_{0}, aborts_{0}, ends_{0}, waiting_at_end_{-1};
  std::thread::id end_thread_;
  std::string end_reason_;
};

// A block that passes its input through, and sleeps first while `stall` is set (a stage that is stuck).
class StallBlock : public layers::Module {
 public:
  Tensor forward(const Tensor& x, const layers::BlockContext&) override {
    if (stall) std::this_thread::sleep_for(std::chrono::seconds(2));
    return x;
  }
  std::string type_name() const override { return "StallBlock"; }
  std::atomic<bool> stall{false};
};

}  // namespace

TEST(Pipeline, FailureEndsTheJobOnceFromTheCallingThreadAfterEveryStageStopped) {
  // An MPI job is ended by MPI_Abort, which must be called once per process and from a thread no other of
  // which is inside MPI: two stage threads calling it together crashed rank 0 with signal 11.
  auto blocks = testmodels::make_blocks("mlp");
  PipelineOptions opts = testmodels::pipeline_options({1, 2, 2}, 2, "uniform:8");
  auto channel = std::make_shared<FailureRecordingChannel>();
  Pipeline pipe(blocks, opts, make_sgd, channel);
  MicroBatch batch = testmodels::make_batch("mlp", 4, 3);
  batch.input = engine::mul(batch.input, std::nan(""));  // stage 0 cannot encode its activation
  EXPECT_THROW(pipe.train_step(batch), engine::Error);
  EXPECT_GE(channel->aborts_.load(), 1);
  EXPECT_EQ(channel->ends_.load(), 1);
  EXPECT_EQ(channel->end_thread_, std::this_thread::get_id());
  EXPECT_EQ(channel->waiting_at_end_.load(), 0);
  EXPECT_NE(channel->end_reason_.find("stage 0 failed at step 0"), std::string::npos) << channel->end_reason_;
  EXPECT_NE(channel->end_reason_.find("stage0->1"), std::string::npos) << channel->end_reason_;
}

TEST(Pipeline, PeerTimeoutFollowsTheStepTimeAndAFixedBoundReplacesIt) {
  for (bool fixed : {false, true}) {
    SCOPED_TRACE(fixed ? "fixed" : "adaptive");
    auto blocks = testmodels::make_blocks("mlp");
    auto stall = std::make_shared<StallBlock>();
    blocks.insert(blocks.begin() + 2, stall);
    // The stall block is stage 1.
    PipelineOptions opts = testmodels::pipeline_options({2, 1, static_cast<int>(blocks.size()) - 3}, 2);
    opts.adaptive_timeout.first_step = std::chrono::seconds(60);
    opts.adaptive_timeout.floor = std::chrono::milliseconds(300);
    if (fixed) opts.timeout = std::chrono::milliseconds(700);
    Pipeline pipe(blocks, opts, make_sgd);
    EXPECT_EQ(pipe.peer_timeout().bound(), fixed ? std::chrono::milliseconds(700) : std::chrono::seconds(60));
    MicroBatch batch = testmodels::make_batch("mlp", 4, 3);
    pipe.train_step(batch);
    pipe.train_step(batch);
    // Steps of milliseconds: the adaptive bound is its floor.
    EXPECT_EQ(pipe.peer_timeout().bound(),
              fixed ? std::chrono::milliseconds(700) : std::chrono::milliseconds(300));
    stall->stall = true;  // stage 1 is stuck for 2 s: stages 0 and 2 wait for it, and give up at the bound
    try {
      pipe.train_step(batch);
      ADD_FAILURE() << "expected a timeout";
    } catch (const engine::Error& e) {
      std::string w = e.what();
      EXPECT_NE(w.find("from stage 1"), std::string::npos) << w;
      EXPECT_NE(w.find(fixed ? "within 0.7 s" : "within 0.3 s"), std::string::npos) << w;
      EXPECT_NE(w.find(fixed ? "fixed by --peer-timeout" : "x the slowest of the last 2 steps"),
                std::string::npos)
          << w;
    }
  }
}

TEST(Pipeline, RecomputeTrainsAndReportsAsKeepingActivations) {
  // --recompute runs each micro-batch's forward again in backward; the step must train and report as without
  // it (the loss and accuracy of each micro-batch counted once).
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b}) {
    SCOPED_TRACE(schedule_kind_name(kind));
    auto kept_blocks = testmodels::make_blocks("mlp");
    auto recomputed_blocks = testmodels::make_blocks("mlp");
    PipelineOptions opts = testmodels::pipeline_options({2, 1, 2}, 2);
    opts.kind = kind;
    Pipeline kept(kept_blocks, opts, make_sgd);
    opts.recompute = true;
    Pipeline recomputed(recomputed_blocks, opts, make_sgd);
    for (int step = 0; step < 2; ++step) {
      MicroBatch batch = testmodels::make_batch("mlp", 8, 30 + step);
      StepResult a = kept.train_step(batch), b = recomputed.train_step(batch);
      EXPECT_DOUBLE_EQ(b.loss, a.loss);
      EXPECT_EQ(b.correct, a.correct);
      EXPECT_EQ(b.samples, a.samples);
    }
    EXPECT_LT(max_param_diff(recomputed_blocks, kept_blocks), 1e-6);
  }
}

TEST(Pipeline, RobertaWithExplicitPositionIdsMatchesUnpipelined) {
  // Position ids shifted away from what the embedding would compute from the token ids: a pipeline that drops
  // them on the way to the embedding (when splitting the batch, or moving it to the stage's device) gives
  // other logits.
  const int M = 2;
  MicroBatch batch = testmodels::with_shifted_positions(testmodels::make_batch("roberta", 8, 7), 3);
  auto ref_blocks = testmodels::make_blocks("roberta");
  testmodels::Unpipelined ref = testmodels::run_unpipelined(ref_blocks, batch, M);
  auto computed_blocks = testmodels::make_blocks("roberta");
  testmodels::Unpipelined computed =
      testmodels::run_unpipelined(computed_blocks, testmodels::make_batch("roberta", 8, 7), M);
  ASSERT_GT(testmodels::relative_difference(computed.logits[0], ref.logits[0]), 1e-3)
      << "the shift must change the logits";

  for (int S : {2, 3}) {
    SCOPED_TRACE("S=" + std::to_string(S));
    auto blocks = testmodels::make_blocks("roberta");
    PipelineOptions opts =
        testmodels::pipeline_options(balance_by_cost(std::vector<double>(blocks.size(), 1.0), S), M);
    Pipeline pipe(blocks, opts, OptimizerFactory{});  // no optimizer: the gradients stay in the parameters
    StepResult eval = pipe.eval_step(batch, /*keep_logits=*/true);
    ASSERT_EQ(eval.logits.size(), ref.logits.size());
    for (int m = 0; m < M; ++m)
      EXPECT_LT(testmodels::relative_difference(eval.logits[m], ref.logits[m]), 1e-6) << "micro-batch " << m;
    pipe.train_step(batch);
    for (size_t i = 0; i < blocks.size(); ++i) {
      auto params = blocks[i]->parameters();
      ASSERT_EQ(params.size(), ref.grads[i].size());
      for (size_t k = 0; k < params.size(); ++k) {
        ASSERT_TRUE(params[k].grad().defined()) << "block " << i << " parameter " << k;
        EXPECT_LT(testmodels::relative_difference(params[k].grad(), ref.grads[i][k]), 1e-5)
            << "block " << i << " parameter " << k;
      }
    }
  }
}

TEST(Pipeline, EverySideInputReachesEveryStage) {
  // Blocks that record the context they are given, on each of three stages, with every side input set: each
  // stage must see each field of its micro-batch, sent along with the activations.
  std::vector<std::vector<layers::BlockContext>> seen(3);
  auto probe = [&seen](int stage) {
    return std::make_shared<layers::Block>(
        "ContextProbe", std::vector<std::pair<std::string, std::shared_ptr<layers::Module>>>{},
        [&seen, stage](const Tensor& x, const layers::BlockContext& ctx) {
          seen[stage].push_back(ctx);
          return x;
        });
  };
  engine::Generator gen(5);
  std::vector<layers::ModulePtr> blocks = {std::make_shared<layers::Linear>(8, 8, true, &gen), probe(0),
                                           probe(1), std::make_shared<layers::Linear>(8, 4, true, &gen),
                                           probe(2)};
  MicroBatch batch = testmodels::make_batch("mlp", 4, 9);
  int field = 0;
  batch.ctx.for_each([&](const char*, Tensor& t) {
    // distinct values per field and sample, alternately integer and floating
    ++field;
    std::vector<int64_t> values;
    for (int64_t i = 0; i < 12; ++i) values.push_back(100 * field + i);
    t = engine::from_vector(values, {4, 3});
    if (field % 2 == 0) t = t.to(engine::DType::f32);
  });
  PipelineOptions opts = testmodels::pipeline_options({2, 1, 2}, 2, "uniform:8");
  Pipeline pipe(blocks, opts, make_sgd);
  pipe.train_step(batch);
  pipe.eval_step(batch);
  std::vector<MicroBatch> micro = {testmodels::rows(batch, 0, 2), testmodels::rows(batch, 2, 2)};
  for (int s = 0; s < 3; ++s) {
    ASSERT_EQ(seen[s].size(), 4u) << "stage " << s;  // two micro-batches, a train and an eval step
    for (size_t call = 0; call < seen[s].size(); ++call) {
      std::vector<Tensor> expected;
      micro[call % 2].ctx.for_each([&](const char*, const Tensor& t) { expected.push_back(t); });
      size_t i = 0;
      seen[s][call].for_each([&](const char* name, const Tensor& t) {
        SCOPED_TRACE("stage " + std::to_string(s) + " call " + std::to_string(call) + " " + name);
        ASSERT_TRUE(t.defined());
        EXPECT_EQ(t.dtype(), expected[i].dtype());
        EXPECT_EQ(t.to_vector(), expected[i].to_vector());
        ++i;
      });
    }
  }
}

TEST(Pipeline, SideInputsMustHaveTheBatchRows) {
  MicroBatch batch = testmodels::make_batch("roberta", 8, 1);
  batch.ctx.position_ids = batch.ctx.position_ids.narrow(0, 0, 6);
  EXPECT_NE(dgpipe::testing::error_of([&] { split_micro_batches(batch, 2); }).find("side input position_ids"),
            std::string::npos);
}

namespace {

// A pass-through block that runs `fn` whenever it is called.
layers::ModulePtr hook_block(std::function<void()> fn) {
  return std::make_shared<layers::Block>(
      "Hook", std::vector<std::pair<std::string, std::shared_ptr<layers::Module>>>{},
      [fn](const Tensor& x, const layers::BlockContext&) {
        fn();
        return x;
      });
}

}  // namespace

TEST(Pipeline, StageThreadsLiveForThePipeline) {
  // Every stage records which thread runs it and a count kept in a thread_local: a stage whose thread-local
  // state survives from step to step sees the count go on, where a new thread per step would start it again
  // at 1.
  struct Call {
    std::thread::id thread;
    int count;
  };
  std::vector<std::vector<Call>> calls(3);
  auto probe = [&calls](int stage) {
    return hook_block([&calls, stage] {
      thread_local int count = 0;
      calls[stage].push_back({std::this_thread::get_id(), ++count});
    });
  };
  engine::Generator gen(3);
  std::vector<layers::ModulePtr> blocks = {std::make_shared<layers::Linear>(8, 8, true, &gen), probe(0),
                                           probe(1), std::make_shared<layers::Linear>(8, 4, true, &gen),
                                           probe(2)};
  PipelineOptions opts = testmodels::pipeline_options({2, 1, 2}, 2);
  Pipeline pipe(blocks, opts, make_sgd);
  MicroBatch batch = testmodels::make_batch("mlp", 4, 2);
  pipe.train_step(batch);
  const uint64_t threads_after_first_step = StageWorker::threads_started();
  for (int step = 1; step < 6; ++step) pipe.train_step(batch);
  pipe.eval_step(batch);
  EXPECT_EQ(StageWorker::threads_started(), threads_after_first_step) << "steps must not start threads";
  for (int s = 0; s < 3; ++s) {
    SCOPED_TRACE("stage " + std::to_string(s));
    ASSERT_EQ(calls[s].size(), 14u);  // 6 training and 1 evaluation step, 2 micro-batches each
    for (size_t i = 0; i < calls[s].size(); ++i) {
      EXPECT_EQ(calls[s][i].thread, calls[s][0].thread) << "call " << i;
      EXPECT_EQ(calls[s][i].count, static_cast<int>(i) + 1) << "call " << i;
    }
    EXPECT_NE(calls[s][0].thread, std::this_thread::get_id());
    if (s > 0) {
      EXPECT_NE(calls[s][0].thread, calls[s - 1][0].thread);
    }
  }
}

TEST(Pipeline, FailingStageEndsTheStepWithItsErrorAndThePipelineCloses) {
  std::atomic<bool> fail{false};
  engine::Generator gen(4);
  std::vector<layers::ModulePtr> blocks = {std::make_shared<layers::Linear>(8, 8, true, &gen),
                                           hook_block([&fail] {
                                             if (fail) DGP_FAIL("the middle stage broke");
                                           }),
                                           std::make_shared<layers::Linear>(8, 4, true, &gen)};
  PipelineOptions opts = testmodels::pipeline_options({1, 1, 1}, 2);
  opts.timeout = std::chrono::seconds(30);
  auto pipe = std::make_unique<Pipeline>(blocks, opts, make_sgd);
  MicroBatch batch = testmodels::make_batch("mlp", 4, 5);
  pipe->train_step(batch);
  fail = true;
  // The root cause, not the other stages' "pipeline aborted".
  std::string error = dgpipe::testing::error_of([&] { pipe->train_step(batch); });
  EXPECT_NE(error.find("the middle stage broke"), std::string::npos) << error;
  pipe.reset();  // the stage threads stop: returning from here is the test
}

namespace {
// The mlp batch of 8 samples, with the dataset indices a loader gives them.
MicroBatch batch_with_ids(uint64_t seed) {
  MicroBatch batch = testmodels::make_batch("mlp", 8, seed);
  batch.ctx.sample_ids = engine::arange(0, 8);
  return batch;
}
}  // namespace

TEST(Pipeline, DeltaWithExactChangesIsTransparent) {
  // delta>none sends every sample's first activation and then its exact change: the receiver reconstructs the
  // activation to float rounding, so training is what single-device training is. The same 8 samples every
  // step, so from the second step on every row is a change.
  auto ref_blocks = testmodels::make_blocks("mlp"), pipe_blocks = testmodels::make_blocks("mlp");
  auto ref_opt = testmodels::reference_optimizer(ref_blocks, make_sgd);
  PipelineOptions opts = testmodels::pipeline_options({2, 3}, 2, "fwd=delta>none,bwd=none");
  Pipeline pipe(pipe_blocks, opts, make_sgd);
  for (int step = 0; step < 3; ++step) {
    testmodels::reference_step(ref_blocks, *ref_opt, batch_with_ids(7), 2);
    pipe.train_step(batch_with_ids(7));
  }
  EXPECT_LT(max_param_diff(pipe_blocks, ref_blocks), 1e-5);
  // Each end holds one f32 row [16] per sample.
  EXPECT_EQ(pipe.local_stages()[0]->codec_state_bytes(Side::downstream, Direction::fwd), 8u * 16u * 4u);
  EXPECT_EQ(pipe.local_stages()[1]->codec_state_bytes(Side::upstream, Direction::fwd), 8u * 16u * 4u);
}

TEST(Pipeline, DeltaSendsOnlyChangesAfterTheFirstEpoch) {
  auto blocks = testmodels::make_blocks("mlp");
  PipelineOptions opts = testmodels::pipeline_options({2, 3}, 2, "fwd=delta>uniform:4,bwd=none");
  Pipeline pipe(blocks, opts, make_sgd);
  auto sent = [&] {
    return pipe.local_stages()[0]->boundary_stats(Side::downstream, Direction::fwd).wire_bytes;
  };
  pipe.train_step(batch_with_ids(3));
  const uint64_t first = sent();  // exact first sends: f32, 316 bytes per [4,16] micro-batch with the header
  pipe.train_step(batch_with_ids(3));
  const uint64_t second = sent() - first;  // 4-bit changes: 108 bytes, of which 60 header and statistics
  EXPECT_EQ(second, 2u * 108u);
  EXPECT_EQ(first, 2u * 316u);
  // Evaluation sends every row as a first send and leaves the references alone.
  const uint64_t held = pipe.local_stages()[0]->codec_state_bytes(Side::downstream, Direction::fwd);
  MicroBatch other = testmodels::make_batch("mlp", 8, 99);
  other.ctx.sample_ids = engine::arange(100, 108);
  pipe.eval_step(other);
  EXPECT_EQ(pipe.local_stages()[0]->codec_state_bytes(Side::downstream, Direction::fwd), held);
}

TEST(Pipeline, DeltaNeedsSampleIdsAndActivations) {
  PipelineOptions opts;
  opts.balance = {2, 3};
  opts.codecs = {compress::parse_direction_pair("fwd=delta>uniform:4,bwd=none")};
  Pipeline pipe(testmodels::make_blocks("mlp"), opts, make_sgd);
  const std::string msg =
      dgpipe::testing::error_of([&] { pipe.train_step(testmodels::make_batch("mlp", 8, 1)); });
  EXPECT_TRUE(dgpipe::testing::contains(msg, "needs the sample ids")) << msg;
  EXPECT_TRUE(dgpipe::testing::contains(msg, "stage0->1 fwd")) << msg;
  opts.codecs = {compress::parse_direction_pair("fwd=none,bwd=delta>uniform:4")};
  const std::string bwd =
      dgpipe::testing::error_of([&] { Pipeline p(testmodels::make_blocks("mlp"), opts, make_sgd); });
  EXPECT_TRUE(dgpipe::testing::contains(bwd, "delta is for activations")) << bwd;
}

TEST(Pipeline, BottleneckTrainsLikeTheSameLayersInOneProcess) {
  // A linear:4 bottleneck at the boundary of a 2-stage mlp: the pipeline runs its encoder on stage 0 and its
  // decoder on stage 1, and must train exactly like the blocks with the two layers in between.
  auto make_bottleneck = [] {
    engine::Generator gen(11);
    return std::make_shared<layers::Bottleneck>(layers::parse_bottleneck_spec("linear:4"), 16, &gen);
  };
  auto ref_blocks = testmodels::make_blocks("mlp"), pipe_blocks = testmodels::make_blocks("mlp");
  auto ref_bn = make_bottleneck(), pipe_bn = make_bottleneck();
  ref_blocks.insert(ref_blocks.begin() + 2, {ref_bn->encoder, ref_bn->decoder});
  auto ref_opt = testmodels::reference_optimizer(ref_blocks, make_sgd);
  PipelineOptions opts = testmodels::pipeline_options({2, 3}, 2);
  opts.bottlenecks = {pipe_bn};
  Pipeline pipe(pipe_blocks, opts, make_sgd);
  for (int step = 0; step < 3; ++step) {
    MicroBatch batch = testmodels::make_batch("mlp", 8, 20 + step);
    testmodels::reference_step(ref_blocks, *ref_opt, batch, 2);
    pipe.train_step(batch);
  }
  std::vector<layers::ModulePtr> pipe_all = pipe_blocks;
  pipe_all.insert(pipe_all.begin() + 2, {pipe_bn->encoder, pipe_bn->decoder});
  EXPECT_LT(max_param_diff(pipe_all, ref_blocks), 1e-5);
  // What crossed is [4, 4] per micro-batch; raw counts the [4, 16] boundary tensor it stands for.
  const BoundaryStats& f = pipe.local_stages()[0]->boundary_stats(Side::downstream, Direction::fwd);
  EXPECT_EQ(f.raw_bytes, 3u * 2u * 4u * 16u * 4u);
  EXPECT_EQ(f.wire_bytes, 3u * 2u * compress::make_codec("none")->wire_bytes({4, 4}));
  const BoundaryStats& g = pipe.local_stages()[1]->boundary_stats(Side::upstream, Direction::bwd);
  EXPECT_EQ(g.raw_bytes, f.raw_bytes);
}

// ---- On a GPU: a step is ordered with the stream of its caller ----

namespace {

// Tens of milliseconds of GEMMs on the current stream of `device` (a constant matrix of 1/n is its own
// square).
void queue_slow_work(engine::Device device) {
  const engine::TensorOptions o(engine::DType::f32, device);
  Tensor a = engine::mul(engine::ones({4096, 4096}, o), 1.0 / 4096);
  for (int i = 0; i < 30; ++i) a = engine::matmul(a, a);
}

// Every value of the blocks' state, read on the current stream: what a checkpoint written now would hold.
std::vector<double> state_now(const std::vector<layers::ModulePtr>& blocks) {
  std::vector<double> all;
  for (auto& b : blocks)
    for (auto& [name, t] : b->state_dict()) {
      std::vector<double> v = t.to_vector();
      all.insert(all.end(), v.begin(), v.end());
    }
  return all;
}

}  // namespace

TEST(Pipeline, CudaStepStartsAfterTheCallersWork) {
  DGP_SKIP_WITHOUT_CUDA();
  // The caller's stream builds the pipeline (moves the parameters to the GPU) and then, behind tens of
  // milliseconds of other work, halves every parameter. The step's first forward must see the halved values,
  // as the CPU pipeline does: the stage streams wait for the caller's stream at step entry.
  const engine::Device gpu = engine::Device::cuda(0);
  auto gpu_blocks = testmodels::make_blocks("mlp"), cpu_blocks = testmodels::make_blocks("mlp");
  PipelineOptions opts = testmodels::pipeline_options({2, 1, 2}, 2);
  Pipeline cpu_pipe(cpu_blocks, opts, make_sgd);
  engine::cuda::Stream caller = engine::cuda::Stream::create(0);
  engine::cuda::StreamGuard on_caller(caller);
  opts.devices = {gpu};
  Pipeline gpu_pipe(gpu_blocks, opts, make_sgd);
  auto halve = [](std::vector<layers::ModulePtr>& blocks) {
    engine::NoGradGuard no_graph;
    for (auto& b : blocks)
      for (Tensor p : b->parameters()) engine::mul_(p, 0.5);
  };
  halve(cpu_blocks);
  queue_slow_work(gpu);
  halve(gpu_blocks);
  MicroBatch batch = testmodels::make_batch("mlp", 8, 7);
  const double cpu_loss = cpu_pipe.train_step(batch).loss;
  const double gpu_loss = gpu_pipe.train_step(batch).loss;
  EXPECT_NEAR(gpu_loss, cpu_loss, 1e-5 * std::max(1.0, std::abs(cpu_loss)));
  EXPECT_LT(max_param_diff(gpu_blocks, cpu_blocks), 1e-5);
}

TEST(Pipeline, CudaParametersAreFinalWhenTrainStepReturns) {
  DGP_SKIP_WITHOUT_CUDA();
  // Stage 0 holds large layers and reads nothing back from the device (codec none), so its worker has queued
  // its backward and optimizer step milliseconds before the GPU has run them when train_step returns. A
  // checkpoint taken right then, on the caller's stream, must already hold the updated parameters: the
  // caller's stream waits for every stage's stream at step exit.
  const engine::Device gpu = engine::Device::cuda(0);
  engine::Generator gen(9);
  std::vector<layers::ModulePtr> blocks = {std::make_shared<layers::Linear>(1024, 4096, true, &gen),
                                           layers::ReLU(),
                                           std::make_shared<layers::Linear>(4096, 4096, true, &gen),
                                           layers::ReLU(),
                                           std::make_shared<layers::Linear>(4096, 4096, true, &gen),
                                           std::make_shared<layers::Linear>(4096, 4, true, &gen)};
  PipelineOptions opts = testmodels::pipeline_options({5, 1}, 2);
  opts.devices = {gpu};
  engine::cuda::Stream caller = engine::cuda::Stream::create(0);
  engine::cuda::StreamGuard on_caller(caller);
  Pipeline pipe(blocks, opts, make_sgd);
  MicroBatch batch;
  batch.input = engine::mul(engine::randn({2048, 1024}, {}, &gen), 0.1);
  std::vector<int64_t> labels(2048);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int64_t>(i % 4);
  batch.labels = engine::from_vector(labels, {2048});
  std::vector<double> previous = state_now(blocks);
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    EXPECT_TRUE(std::isfinite(pipe.train_step(batch).loss));
    std::vector<double> right_after = state_now(blocks);
    engine::cuda::device_synchronize();
    std::vector<double> settled = state_now(blocks);
    ASSERT_EQ(right_after.size(), settled.size());
    size_t stale = 0;
    for (size_t i = 0; i < settled.size(); ++i) stale += right_after[i] != settled[i];
    EXPECT_EQ(stale, 0u) << "of " << settled.size() << " values read right after the step";
    EXPECT_NE(settled, previous) << "the step changed nothing";
    previous = settled;
  }
}

// ---- precision (--precision): autocast per stage, master weights, loss scaling agreed across stages ----

namespace {

using engine::amp::Precision;

struct PrecisionRun {
  std::vector<double> losses;
  std::vector<StepResult> results;
  double wire_bytes = 0, raw_bytes = 0;  // stage 0's activations sent (codec none)
};

// `steps` steps of `model` over S stages (2 micro-batches, SGD as every pipeline test) in precision p.
PrecisionRun train_in(const std::string& model, int S, Precision p, int steps) {
  auto blocks = testmodels::make_blocks(model);
  PipelineOptions opts =
      testmodels::pipeline_options(balance_by_cost(std::vector<double>(blocks.size(), 1.0), S), 2);
  opts.precision = p;
  Pipeline pipe(blocks, opts, make_sgd);
  PrecisionRun run;
  for (int step = 0; step < steps; ++step) {
    StepResult r = pipe.train_step(testmodels::make_batch(model, 8, 200 + step));
    run.losses.push_back(r.loss);
    run.results.push_back(r);
  }
  const BoundaryStats& sent = pipe.local_stages()[0]->boundary_stats(Side::downstream, Direction::fwd);
  run.wire_bytes = static_cast<double>(sent.wire_bytes);
  run.raw_bytes = static_cast<double>(sent.raw_bytes);
  return run;
}

}  // namespace

// The acceptance test of mixed precision: a run in each half precision follows the fp32 run of the same seed
// (same initial weights, same batches) step by step, on a small CNN over 3 stages and a small encoder over 2,
// within a stated tolerance on the loss: 2% of the fp32 loss for f16 compute, 5% for bf16 (3 fewer mantissa
// bits), over the first 6 steps.
//
// The convolutions run on the reference backend: how far a half run drifts from the fp32 run by step 6
// depends on which f16 roundings flip, and the oneDNN backend's f32 sums (another order; its fp32 run agrees
// with the reference's to 1e-7) flip others from the first step: CNN mixed drifted 2.4e-2 there
// against 1.0e-2 here, while its bf16 rows drifted less. The policy is what this test checks;
// test_conv_onednn checks the backend.
TEST(PipelinePrecision, HalfPrecisionRunsFollowTheFp32Run) {
  const dgpipe::testing::CpuConvBackendScope reference(engine::CpuConvBackend::reference);
  const int steps = 6;
  for (const auto& [model, S] : std::vector<std::pair<std::string, int>>{{"resnet", 3}, {"roberta", 2}}) {
    const PrecisionRun ref = train_in(model, S, Precision::fp32, steps);
    for (Precision p : {Precision::mixed, Precision::mixed_bf16, Precision::fp16, Precision::bf16}) {
      SCOPED_TRACE(model + " " + engine::amp::precision_name(p));
      const PrecisionRun run = train_in(model, S, p, steps);
      const double tol = engine::amp::compute_dtype(p) == engine::DType::f16 ? 0.02 : 0.05;
      double worst = 0;
      for (int i = 0; i < steps; ++i) {
        worst = std::max(worst, std::fabs(run.losses[i] - ref.losses[i]) / ref.losses[i]);
        EXPECT_FALSE(run.results[i].skipped) << "step " << i;
      }
      EXPECT_LE(worst, tol);
      std::printf("  %s %-10s worst relative loss difference over %d steps: %.2e (tolerance %.0e)\n",
                  model.c_str(), engine::amp::precision_name(p), steps, worst, tol);
      EXPECT_EQ(run.results.back().loss_scale, engine::amp::needs_loss_scaling(p) ? 65536.0 : 1.0);
    }
  }
}

// A half-precision stage sends half activations: with codec none, half the bytes of f32 (plus the packet
// headers, under 2% on these small tensors).
// Under mixed the CNN's activations are half too (batch norm returns its input's dtype); the encoder's are
// fp32 (layer norm runs in fp32 under autocast).
TEST(PipelinePrecision, HalfActivationsCrossAsHalf) {
  for (Precision p : {Precision::fp16, Precision::bf16, Precision::mixed}) {
    const PrecisionRun cnn = train_in("resnet", 2, p, 1);
    EXPECT_NEAR(cnn.wire_bytes / cnn.raw_bytes, 0.5, 0.02) << engine::amp::precision_name(p);
  }
  const PrecisionRun encoder = train_in("roberta", 2, Precision::mixed, 1);
  EXPECT_NEAR(encoder.wire_bytes / encoder.raw_bytes, 1.0, 0.02);
  const PrecisionRun half_encoder = train_in("roberta", 2, Precision::bf16, 1);
  EXPECT_NEAR(half_encoder.wire_bytes / half_encoder.raw_bytes, 0.5, 0.02);
}

namespace {

// Identity on its input; its one parameter w gets a NaN gradient while armed (0 * inf in the backward of
// w * inf, a branch where() never selects), so exactly one stage's gradients are not finite.
class NanGradientInjector : public layers::Module {
 public:
  NanGradientInjector() { w = register_parameter("w", engine::ones({1})); }
  Tensor forward(const Tensor& x, const layers::BlockContext&) override {
    const double c = armed ? std::numeric_limits<double>::infinity() : 1.0;
    Tensor never = engine::zeros({1}, engine::DType::boolean);
    Tensor branch = engine::where(never, engine::mul(w, c), engine::zeros_like(w));
    return engine::add(x, engine::cast(branch, x.dtype()));
  }
  std::string type_name() const override { return "NanGradientInjector"; }
  Tensor w;
  bool armed = false;
};

std::vector<std::vector<double>> state_values(const std::vector<layers::ModulePtr>& blocks) {
  std::vector<std::vector<double>> out;
  for (auto& b : blocks)
    for (auto& [name, t] : b->state_dict()) out.push_back(t.to_vector());
  return out;
}

}  // namespace

// The acceptance test of loss scaling in a pipeline: a NaN in one gradient of the middle stage skips that
// step on every stage (a stage whose gradients are finite must not step while another skips): no parameter of
// any stage changes, and every stage halves its scale; the scale then grows after growth_interval good steps,
// in step on every stage.
TEST(PipelinePrecision, ANonFiniteGradientInOneStageSkipsTheStepEverywhere) {
  for (Precision p : {Precision::mixed, Precision::fp16}) {
    SCOPED_TRACE(engine::amp::precision_name(p));
    auto blocks = testmodels::make_blocks("mlp");
    auto injector = std::make_shared<NanGradientInjector>();
    blocks.insert(blocks.begin() + 2, injector);  // [linear, relu | injector, linear | tanh, linear]
    PipelineOptions opts = testmodels::pipeline_options({2, 2, 2}, 2);
    opts.precision = p;
    opts.loss_scaler.init_scale = 1024.0;
    opts.loss_scaler.growth_interval = 2;
    Pipeline pipe(blocks, opts, make_sgd);
    auto step = [&](uint64_t seed) { return pipe.train_step(testmodels::make_batch("mlp", 8, seed)); };
    auto scales = [&] {
      std::vector<double> out;
      for (size_t i = 0; i < pipe.local_stages().size(); ++i)
        out.push_back(pipe.stage_precision(i)->loss_scale());
      return out;
    };
    EXPECT_FALSE(step(1).skipped);
    const auto before = state_values(blocks);
    injector->armed = true;
    const StepResult bad = step(2);
    injector->armed = false;
    EXPECT_TRUE(bad.skipped);
    EXPECT_EQ(state_values(blocks), before) << "no stage may update on a skipped step";
    EXPECT_EQ(scales(), std::vector<double>(3, 512.0)) << "every stage halves its scale";
    EXPECT_FALSE(step(3).skipped);
    EXPECT_EQ(scales(), std::vector<double>(3, 512.0));
    EXPECT_FALSE(step(4).skipped);
    EXPECT_EQ(scales(), std::vector<double>(3, 1024.0)) << "grows after growth_interval good steps";
    EXPECT_NE(state_values(blocks), before);
    for (size_t i = 0; i < pipe.local_stages().size(); ++i)
      EXPECT_EQ(pipe.stage_precision(i)->scaler().skipped_steps(), 1) << "stage " << i;
  }
}

// The CUDA twin of a pipelined precision run: the same steps with the stages on a GPU (and with a CPU client
// and a GPU server, half boundaries crossing between them) follow the CPU run of the same seed within
// half-precision rounding, with the same skip decisions.
TEST(PipelinePrecision, CudaStagesFollowTheCpuTwin) {
  DGP_SKIP_WITHOUT_CUDA();
  for (Precision p : {Precision::mixed, Precision::mixed_bf16, Precision::fp16, Precision::bf16}) {
    SCOPED_TRACE(engine::amp::precision_name(p));
    auto run_on = [&](std::vector<engine::Device> devices) {
      auto blocks = testmodels::make_blocks("resnet");
      PipelineOptions opts =
          testmodels::pipeline_options(balance_by_cost(std::vector<double>(blocks.size(), 1.0), 2), 2);
      opts.precision = p;
      opts.devices = devices;
      Pipeline pipe(blocks, opts, make_sgd);
      std::vector<StepResult> out;
      for (int step = 0; step < 4; ++step)
        out.push_back(pipe.train_step(testmodels::make_batch("resnet", 8, 300 + step)));
      return out;
    };
    const auto cpu = run_on({engine::Device::cpu()});
    const double tol = engine::amp::compute_dtype(p) == engine::DType::f16 ? 1e-2 : 3e-2;
    for (const auto& devices :
         {std::vector<engine::Device>{engine::Device::cuda(0)},
          std::vector<engine::Device>{engine::Device::cpu(), engine::Device::cuda(0)}}) {
      const auto gpu = run_on(devices);
      for (size_t i = 0; i < cpu.size(); ++i) {
        EXPECT_NEAR(gpu[i].loss, cpu[i].loss, tol * cpu[i].loss)
            << "step " << i << ", " << devices.size() << " device(s)";
        EXPECT_EQ(gpu[i].skipped, cpu[i].skipped) << "step " << i;
        EXPECT_EQ(gpu[i].loss_scale, cpu[i].loss_scale) << "step " << i;
      }
    }
  }
}
