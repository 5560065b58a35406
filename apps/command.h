// Subcommand registry of the `dgpipe` binary. A subcommand file defines
//   static const dgpipe::apps::Registration reg{"codec", "analyse boundary codecs on a tensor", run_codec};
// and its function receives the arguments after the subcommand name (argv[0] is "dgpipe <name>").
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace dgpipe::apps {

using CommandFn = std::function<int(int argc, char** argv)>;

struct Command {
  std::string summary;
  CommandFn run;
};

std::map<std::string, Command>& commands();

struct Registration {
  Registration(const std::string& name, const std::string& summary, CommandFn fn) {
    commands()[name] = Command{summary, std::move(fn)};
  }
};

// Runs a subcommand by name with its arguments (used by main and by tests). Returns the exit code.
int run_command(const std::string& name, const std::vector<std::string>& args);

}  // namespace dgpipe::apps
