// Pipeline schedules as pure data.
//
// A schedule maps (stages, micro-batches, kind) to one instruction list per stage. The executor interprets
// the lists; the checker simulates them with message matching, so a schedule is tested without running a
// model.
#pragma once
#include <string>
#include <vector>

namespace dgpipe::pipeline {

enum class Op { RecvAct, Forward, SendAct, RecvGrad, Backward, SendGrad, OptimizerStep };
const char* op_name(Op op);

struct Instruction {
  Op op;
  int micro_batch = -1;  // -1 for OptimizerStep
  bool operator==(const Instruction& o) const { return op == o.op && micro_batch == o.micro_batch; }
};

enum class ScheduleKind { gpipe, one_f_one_b };
ScheduleKind parse_schedule_kind(const std::string& name);  // "gpipe" | "1f1b"; throws naming the value
const char* schedule_kind_name(ScheduleKind kind);

using StageProgram = std::vector<Instruction>;

// GPipe (fill-drain): every stage runs all forwards, then all backwards in reverse micro-batch order.
// 1F1B: stage s runs min(S-s-1, M) warm-up forwards, then alternates one forward and one backward, then
// drains.
std::vector<StageProgram> make_schedule(int stages, int micro_batches, ScheduleKind kind);
// Evaluation: forward instructions only (RecvAct m, Forward m, SendAct m for m = 0..M-1), no optimizer step.
std::vector<StageProgram> make_forward_schedule(int stages, int micro_batches);

struct CheckResult {
  bool ok = true;
  std::string error;             // first violation found
  int steps = 0;                 // simulated time steps until every stage finished
  int max_live_activations = 0;  // most forward graphs any stage held at once (memory footprint)
};

// Simulates the programs with FIFO links between neighbouring stages (sends are buffered, receives block)
// and checks: every receive is matched by a send of the same kind and micro-batch, in order; each stage
// forwards and back-propagates every micro-batch exactly once, backward after forward; the optimizer step
// comes last; and no state is reached where unfinished stages all wait (deadlock).
CheckResult check_schedule(const std::vector<StageProgram>& programs, int micro_batches);

// Theoretical idle fraction of a fill-drain pipeline with equal stage times: (S-1)/(M+S-1).
double theoretical_bubble(int stages, int micro_batches);

std::string program_str(const StageProgram& program);

}  // namespace dgpipe::pipeline
