// The `dgpipe` command line: dispatches to the registered subcommands (apps/cmd_*.cpp).
#include <iostream>
#include <string>
#include <vector>

#include "apps/command.h"
#include "engine/parallel.h"

int main(int argc, char** argv) {
  dgpipe::engine::restart_with_passive_openmp_wait(argv);
  using dgpipe::apps::commands;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout
        << "dgpipe: pipeline-parallel training with compressed stage boundaries\n\n"
        << "usage: dgpipe <command> [options]   (dgpipe <command> --help for its options)\n\ncommands:\n";
    for (auto& [name, cmd] : commands())
      std::cout << "  " << name << std::string(14 - std::min<size_t>(13, name.size()), ' ') << cmd.summary
                << "\n";
    return argc < 2 ? 2 : 0;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  return dgpipe::apps::run_command(argv[1], args);
}
