// How long a stage waits for a message before it declares its peer dead or stuck.
//
// A fixed bound is either too short for a slow link or a big model, or far too long for a fast one (a dead
// peer of a 0.2 s step was noticed only after two minutes). So by default the bound follows the measured step
// time: `factor` times the slowest of the last `window` training steps, never below `floor`. Before any step
// has completed there is no history, and the first step also pays for data loader start-up, first-touch
// allocations, library initialisation (BLAS threads, cuDNN/cuBLAS handles) and a big model's first pass, so
// it gets `first_step`. A fixed bound (`dgpipe train --peer-timeout`) replaces the whole policy.
#pragma once
#include <chrono>
#include <deque>
#include <string>

namespace dgpipe::pipeline {

struct PeerTimeoutPolicy {
  std::chrono::milliseconds fixed{0};  // > 0: this bound always (the rest is ignored)
  std::chrono::milliseconds first_step{std::chrono::seconds(120)};
  std::chrono::milliseconds floor{std::chrono::seconds(30)};
  double factor = 10;
  int window = 20;  // training steps remembered
};

class PeerTimeout {
 public:
  explicit PeerTimeout(PeerTimeoutPolicy policy = {});
  // A training step took `seconds` (wall time, waiting included).
  void record_step(double seconds);
  // The bound for the waits of the next step.
  std::chrono::milliseconds bound() const;
  // "30 s (10 x the slowest of the last 20 steps, at least 30 s)" and the like, for messages.
  std::string describe() const;
  const PeerTimeoutPolicy& policy() const { return policy_; }

 private:
  PeerTimeoutPolicy policy_;
  std::deque<double> recent_;  // seconds of the last `window` training steps
};

}  // namespace dgpipe::pipeline
