// Errors raised by dgpipe. Every check names the operation and the offending values, so a user sees
// "conv2d: input has 3 channels but weight expects 4 (input [2,3,8,8], weight [8,4,3,3])" and not a crash.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace dgpipe::engine {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace dgpipe::engine

// DGP_CHECK(cond, "op: message " << value << ...): throws dgpipe::engine::Error with the streamed message.
#define DGP_CHECK(cond, msg)                                  \
  do {                                                        \
    if (!(cond)) {                                            \
      std::ostringstream dgp_check_stream_;                   \
      dgp_check_stream_ << msg;                               \
      throw ::dgpipe::engine::Error(dgp_check_stream_.str()); \
    }                                                         \
  } while (0)

#define DGP_FAIL(msg) DGP_CHECK(false, msg)
