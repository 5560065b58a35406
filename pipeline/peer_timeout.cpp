#include "pipeline/peer_timeout.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "engine/error.h"

namespace dgpipe::pipeline {

using std::chrono::milliseconds;

PeerTimeout::PeerTimeout(PeerTimeoutPolicy policy) : policy_(policy) {
  DGP_CHECK(policy_.fixed.count() >= 0, "peer timeout: a fixed bound must be >= 0");
  DGP_CHECK(policy_.factor > 0 && policy_.window >= 1 && policy_.floor.count() > 0 &&
                policy_.first_step.count() > 0,
            "peer timeout: factor, window, floor and first-step bound must be positive");
}

void PeerTimeout::record_step(double seconds) {
  recent_.push_back(std::max(seconds, 0.0));
  while (static_cast<int>(recent_.size()) > policy_.window) recent_.pop_front();
}

milliseconds PeerTimeout::bound() const {
  if (policy_.fixed.count() > 0) return policy_.fixed;
  if (recent_.empty()) return policy_.first_step;
  const double slowest = *std::max_element(recent_.begin(), recent_.end());
  const auto scaled = milliseconds(static_cast<int64_t>(std::ceil(policy_.factor * slowest * 1000.0)));
  return std::max(scaled, policy_.floor);
}

std::string PeerTimeout::describe() const {
  std::ostringstream os;
  os << bound().count() / 1000.0 << " s";
  if (policy_.fixed.count() > 0)
    os << " (fixed by --peer-timeout)";
  else if (recent_.empty())
    os << " (the first step's bound; later ones scale with the step time; --peer-timeout fixes it)";
  else
    os << " (" << policy_.factor << " x the slowest of the last " << recent_.size() << " steps, at least "
       << policy_.floor.count() / 1000.0 << " s; --peer-timeout fixes it)";
  return os.str();
}

}  // namespace dgpipe::pipeline
