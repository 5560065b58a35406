// Loads tests/data/codecs/goldens.json (written by scripts/goldens_codecs.py).
#pragma once
#include <cstdlib>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace dgpipe::testing {

inline nlohmann::json load_codec_goldens() {
  const char* root = std::getenv("DGPIPE_SOURCE_DIR");
  std::string path = std::string(root ? root : ".") + "/tests/data/codecs/goldens.json";
  std::ifstream f(path);
  if (!f) return nlohmann::json();
  return nlohmann::json::parse(f);
}

}  // namespace dgpipe::testing
