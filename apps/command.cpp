#include "apps/command.h"

#include <iostream>

#include "engine/error.h"

namespace dgpipe::apps {

std::map<std::string, Command>& commands() {
  static std::map<std::string, Command> registry;
  return registry;
}

int run_command(const std::string& name, const std::vector<std::string>& args) {
  auto it = commands().find(name);
  if (it == commands().end()) {
    std::cerr << "dgpipe: unknown command '" << name << "'. Commands:\n";
    for (auto& [n, c] : commands()) std::cerr << "  " << n << "  " << c.summary << "\n";
    return 2;
  }
  std::vector<std::string> storage;
  storage.push_back("dgpipe " + name);
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  try {
    return it->second.run(static_cast<int>(storage.size()), argv.data());
  } catch (const engine::Error& e) {
    std::cerr << "dgpipe " << name << ": error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "dgpipe " << name << ": error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace dgpipe::apps
