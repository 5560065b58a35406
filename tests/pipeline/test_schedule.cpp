#include "pipeline/schedule.h"

#include <gtest/gtest.h>

#include "engine/error.h"

using namespace dgpipe::pipeline;

TEST(PipelineSchedule, AllSizesBothKindsPassTheChecker) {
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b})
    for (int S = 1; S <= 8; ++S)
      for (int M = 1; M <= 16; ++M) {
        auto programs = make_schedule(S, M, kind);
        ASSERT_EQ(static_cast<int>(programs.size()), S);
        CheckResult r = check_schedule(programs, M);
        ASSERT_TRUE(r.ok) << schedule_kind_name(kind) << " S=" << S << " M=" << M << ": " << r.error;
        // Memory: GPipe holds every micro-batch, 1F1B at most S on the first stage.
        if (kind == ScheduleKind::gpipe)
          EXPECT_EQ(r.max_live_activations, M);
        else
          EXPECT_EQ(r.max_live_activations, std::min(S, M));
      }
}

TEST(PipelineSchedule, GpipeShape) {
  auto p = make_schedule(2, 2, ScheduleKind::gpipe);
  EXPECT_EQ(program_str(p[0]),
            "Forward0 SendAct0 Forward1 SendAct1 RecvGrad1 Backward1 RecvGrad0 Backward0 OptimizerStep");
  EXPECT_EQ(program_str(p[1]),
            "RecvAct0 Forward0 RecvAct1 Forward1 Backward1 SendGrad1 Backward0 SendGrad0 OptimizerStep");
  // fill-drain on equal stage times: S-1 idle slots of M+S-1 on each side
  EXPECT_DOUBLE_EQ(theoretical_bubble(4, 8), 3.0 / 11.0);
}

TEST(PipelineSchedule, ForwardScheduleShape) {
  auto p = make_forward_schedule(3, 2);
  EXPECT_EQ(program_str(p[0]), "Forward0 SendAct0 Forward1 SendAct1");
  EXPECT_EQ(program_str(p[1]), "RecvAct0 Forward0 SendAct0 RecvAct1 Forward1 SendAct1");
  EXPECT_EQ(program_str(p[2]), "RecvAct0 Forward0 RecvAct1 Forward1");
  EXPECT_THROW(make_forward_schedule(2, 0), dgpipe::engine::Error);
}

TEST(PipelineSchedule, OneFOneBShape) {
  auto p = make_schedule(3, 4, ScheduleKind::one_f_one_b);
  EXPECT_EQ(program_str(p[2]),
            "RecvAct0 Forward0 Backward0 SendGrad0 RecvAct1 Forward1 Backward1 SendGrad1 RecvAct2 Forward2 "
            "Backward2 "
            "SendGrad2 RecvAct3 Forward3 Backward3 SendGrad3 OptimizerStep");
  EXPECT_EQ(p[0][0], (Instruction{Op::Forward, 0}));
}

TEST(PipelineSchedule, CheckerFindsBrokenPrograms) {
  // Swapped receive order on stage 1: waits for micro-batch 1 while 0 is at the head of the link.
  auto p = make_schedule(2, 2, ScheduleKind::gpipe);
  std::swap(p[1][0], p[1][2]);
  CheckResult r = check_schedule(p, 2);
  EXPECT_FALSE(r.ok);
  // Deadlock: both stages receive before sending.
  std::vector<StageProgram> dead = {
      {{Op::RecvGrad, 0}, {Op::Forward, 0}, {Op::SendAct, 0}, {Op::Backward, 0}},
      {{Op::RecvAct, 0}, {Op::Forward, 0}, {Op::Backward, 0}, {Op::SendGrad, 0}}};
  r = check_schedule(dead, 1);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("deadlock"), std::string::npos) << r.error;
  // A missing backward is caught at the optimizer step.
  p = make_schedule(2, 2, ScheduleKind::gpipe);
  p[0].erase(p[0].begin() + 5);  // Backward1 of stage 0
  r = check_schedule(p, 2);
  EXPECT_FALSE(r.ok);
  EXPECT_THROW(make_schedule(0, 1, ScheduleKind::gpipe), dgpipe::engine::Error);
  EXPECT_THROW(parse_schedule_kind("zigzag"), dgpipe::engine::Error);
}
