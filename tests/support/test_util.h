// Small helpers that many test files share: the message of an expected error, and substring checks on it.
#pragma once
#include <functional>
#include <string>

#include "engine/error.h"

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

}  // namespace dgpipe::testing
