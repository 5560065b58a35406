#include "pipeline/schedule.h"

#include <algorithm>
#include <deque>
#include <sstream>

#include "engine/error.h"

namespace dgpipe::pipeline {

const char* op_name(Op op) {
  switch (op) {
    case Op::RecvAct:
      return "RecvAct";
    case Op::Forward:
      return "Forward";
    case Op::SendAct:
      return "SendAct";
    case Op::RecvGrad:
      return "RecvGrad";
    case Op::Backward:
      return "Backward";
    case Op::SendGrad:
      return "SendGrad";
    case Op::OptimizerStep:
      return "OptimizerStep";
  }
  return "?";
}

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "gpipe") return ScheduleKind::gpipe;
  if (name == "1f1b") return ScheduleKind::one_f_one_b;
  DGP_FAIL("unknown schedule kind '" << name << "' (expected gpipe or 1f1b)");
}

const char* schedule_kind_name(ScheduleKind kind) {
  return kind == ScheduleKind::gpipe ? "gpipe" : "1f1b";
}

namespace {
void emit_forward(StageProgram& p, int s, int S, int m) {
  if (s > 0) p.push_back({Op::RecvAct, m});
  p.push_back({Op::Forward, m});
  if (s < S - 1) p.push_back({Op::SendAct, m});
}
void emit_backward(StageProgram& p, int s, int S, int m) {
  if (s < S - 1) p.push_back({Op::RecvGrad, m});
  p.push_back({Op::Backward, m});
  if (s > 0) p.push_back({Op::SendGrad, m});
}
}  // namespace

std::vector<StageProgram> make_schedule(int S, int M, ScheduleKind kind) {
  DGP_CHECK(S >= 1, "schedule: need at least one stage, got " << S);
  DGP_CHECK(M >= 1, "schedule: need at least one micro-batch, got " << M);
  std::vector<StageProgram> programs(S);
  for (int s = 0; s < S; ++s) {
    StageProgram& p = programs[s];
    if (kind == ScheduleKind::gpipe) {
      for (int m = 0; m < M; ++m) emit_forward(p, s, S, m);
      for (int m = M - 1; m >= 0; --m) emit_backward(p, s, S, m);
    } else {
      int warmup = std::min(S - s - 1, M);
      int fwd = 0, bwd = 0;
      for (int i = 0; i < warmup; ++i) emit_forward(p, s, S, fwd++);
      while (fwd < M) {
        emit_forward(p, s, S, fwd++);
        emit_backward(p, s, S, bwd++);
      }
      while (bwd < M) emit_backward(p, s, S, bwd++);
    }
    p.push_back({Op::OptimizerStep, -1});
  }
  return programs;
}

std::vector<StageProgram> make_forward_schedule(int S, int M) {
  DGP_CHECK(S >= 1, "schedule: need at least one stage, got " << S);
  DGP_CHECK(M >= 1, "schedule: need at least one micro-batch, got " << M);
  std::vector<StageProgram> programs(S);
  for (int s = 0; s < S; ++s)
    for (int m = 0; m < M; ++m) emit_forward(programs[s], s, S, m);
  return programs;
}

CheckResult check_schedule(const std::vector<StageProgram>& programs, int M) {
  CheckResult r;
  const int S = static_cast<int>(programs.size());
  auto fail = [&](const std::string& msg) {
    r.ok = false;
    r.error = msg;
    return r;
  };
  // links: act[s] carries s -> s+1, grad[s] carries s+1 -> s. Each holds micro-batch ids in order.
  std::vector<std::deque<int>> act(S), grad(S);
  std::vector<size_t> pc(S, 0);
  std::vector<std::vector<int>> forwarded(S, std::vector<int>(M, 0)), backwarded(S, std::vector<int>(M, 0));
  std::vector<std::vector<int>> received_act(S, std::vector<int>(M, 0)),
      received_grad(S, std::vector<int>(M, 0));
  std::vector<int> live(S, 0);
  while (true) {
    bool all_done = true, progressed = false;
    // One simulated time step: every stage that can run its next instruction does.
    std::vector<std::pair<int, Instruction>> sends;
    for (int s = 0; s < S; ++s) {
      if (pc[s] >= programs[s].size()) continue;
      all_done = false;
      const Instruction& in = programs[s][pc[s]];
      std::ostringstream where;
      where << "stage " << s << " instruction " << pc[s] << " (" << op_name(in.op) << " " << in.micro_batch
            << ")";
      if (in.op != Op::OptimizerStep && (in.micro_batch < 0 || in.micro_batch >= M))
        return fail(where.str() + ": micro-batch out of range");
      switch (in.op) {
        case Op::RecvAct:
          if (s == 0) return fail(where.str() + ": first stage has no upstream");
          if (act[s - 1].empty()) continue;  // blocked
          if (act[s - 1].front() != in.micro_batch)
            return fail(where.str() + ": next activation on the link is micro-batch " +
                        std::to_string(act[s - 1].front()));
          act[s - 1].pop_front();
          received_act[s][in.micro_batch]++;
          break;
        case Op::RecvGrad:
          if (s == S - 1) return fail(where.str() + ": last stage has no downstream");
          if (grad[s].empty()) continue;
          if (grad[s].front() != in.micro_batch)
            return fail(where.str() + ": next gradient on the link is micro-batch " +
                        std::to_string(grad[s].front()));
          grad[s].pop_front();
          received_grad[s][in.micro_batch]++;
          break;
        case Op::Forward:
          if (s > 0 && received_act[s][in.micro_batch] != 1)
            return fail(where.str() + ": input not received");
          if (forwarded[s][in.micro_batch]++) return fail(where.str() + ": forwarded twice");
          live[s]++;
          r.max_live_activations = std::max(r.max_live_activations, live[s]);
          break;
        case Op::SendAct:
          if (s == S - 1) return fail(where.str() + ": last stage has no downstream");
          if (!forwarded[s][in.micro_batch]) return fail(where.str() + ": sends before its forward");
          sends.push_back({s, in});
          break;
        case Op::Backward:
          if (!forwarded[s][in.micro_batch]) return fail(where.str() + ": backward before forward");
          if (s < S - 1 && received_grad[s][in.micro_batch] != 1)
            return fail(where.str() + ": gradient not received");
          if (backwarded[s][in.micro_batch]++) return fail(where.str() + ": backward twice");
          live[s]--;
          break;
        case Op::SendGrad:
          if (s == 0) return fail(where.str() + ": first stage has no upstream");
          if (!backwarded[s][in.micro_batch]) return fail(where.str() + ": sends before its backward");
          sends.push_back({s, in});
          break;
        case Op::OptimizerStep:
          if (pc[s] + 1 != programs[s].size()) return fail(where.str() + ": optimizer step is not last");
          for (int m = 0; m < M; ++m)
            if (forwarded[s][m] != 1 || backwarded[s][m] != 1)
              return fail(where.str() + ": micro-batch " + std::to_string(m) + " not fully processed");
          break;
      }
      pc[s]++;
      progressed = true;
    }
    // Messages sent in this step arrive for the next step.
    for (auto& [s, in] : sends) {
      if (in.op == Op::SendAct)
        act[s].push_back(in.micro_batch);
      else
        grad[s - 1].push_back(in.micro_batch);
    }
    if (all_done) break;
    r.steps++;
    if (!progressed) {
      std::ostringstream os;
      os << "deadlock: every unfinished stage is blocked (";
      for (int s = 0; s < S; ++s)
        if (pc[s] < programs[s].size())
          os << "stage " << s << " at " << op_name(programs[s][pc[s]].op) << " "
             << programs[s][pc[s]].micro_batch << "; ";
      os << ")";
      return fail(os.str());
    }
  }
  for (int s = 0; s < S; ++s)
    if (!act[s].empty() || !grad[s].empty())
      return fail("stage " + std::to_string(s) + ": messages left unreceived on its links");
  return r;
}

double theoretical_bubble(int S, int M) {
  return static_cast<double>(S - 1) / static_cast<double>(M + S - 1);
}

std::string program_str(const StageProgram& p) {
  std::ostringstream os;
  for (size_t i = 0; i < p.size(); ++i) {
    os << (i ? " " : "") << op_name(p[i].op);
    if (p[i].micro_batch >= 0) os << p[i].micro_batch;
  }
  return os.str();
}

}  // namespace dgpipe::pipeline
