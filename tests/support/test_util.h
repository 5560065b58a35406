// Small helpers that many test files share: the message of an expected error, substring checks on it, and the
// op thread budget and CPU convolution backend for a scope.
#pragma once
#include <functional>
#include <string>

#include "engine/error.h"
#include "engine/ops/conv_onednn.h"
#include "engine/parallel.h"

namespace dgpipe::testing {

// The message of the dgpipe error that `action` throws, or "(no error)" when it throws none (so that an
// assertion on the message fails and prints why). Other exception types propagate and fail the test loudly.
inline std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const engine::Error& e) {
    return e.what();
  }
  return "(no error)";
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Sets the process-wide op thread budget (engine/parallel.h) for the scope.
class ThreadsScope {
 public:
  explicit ThreadsScope(int n) : previous_(engine::cpu_threads()) { engine::set_cpu_threads(n); }
  ~ThreadsScope() { engine::set_cpu_threads(previous_); }
  ThreadsScope(const ThreadsScope&) = delete;
  ThreadsScope& operator=(const ThreadsScope&) = delete;

 private:
  int previous_;
};

// Runs the CPU convolutions of the scope on `backend` (engine/ops/conv_onednn.h), then restores the previous
// one.
class CpuConvBackendScope {
 public:
  explicit CpuConvBackendScope(engine::CpuConvBackend backend) : previous_(engine::cpu_conv_backend()) {
    engine::set_cpu_conv_backend(backend);
  }
  ~CpuConvBackendScope() { engine::set_cpu_conv_backend(previous_); }
  CpuConvBackendScope(const CpuConvBackendScope&) = delete;
  CpuConvBackendScope& operator=(const CpuConvBackendScope&) = delete;

 private:
  engine::CpuConvBackend previous_;
};

}  // namespace dgpipe::testing
