// Reading golden files written by scripts/*.py (tests/data/*.json): tensors stored as {"shape": [...],
// "data": [...]} with data flat in row-major order. The file is looked up in $DGPIPE_SOURCE_DIR/tests/data/
// (CTest sets it), then in ./tests/data/ and ./ (running a test binary by hand from the repository root or
// the data folder).
#pragma once
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tensor.h"

namespace dgpipe::testing {

inline nlohmann::json load_golden_json(const std::string& file_name) {
  std::vector<std::string> candidates;
  if (const char* root = std::getenv("DGPIPE_SOURCE_DIR"))
    candidates.push_back(std::string(root) + "/tests/data/" + file_name);
  candidates.push_back("tests/data/" + file_name);
  candidates.push_back(file_name);
  std::string tried;
  for (const std::string& path : candidates) {
    std::ifstream in(path);
    if (!in) {
      tried += " " + path;
      continue;
    }
    try {
      return nlohmann::json::parse(in);
    } catch (const std::exception& e) {
      throw engine::Error("golden file " + path + " is not valid JSON: " + e.what());
    }
  }
  throw engine::Error("golden file " + file_name + " not found (tried:" + tried +
                      "); set DGPIPE_SOURCE_DIR to the repository root");
}

// Case `name` of a golden file's "cases". The file is parsed once per test binary: a file's tests read many
// cases of the same file.
inline const nlohmann::json& golden_case(const std::string& file_name, const std::string& name) {
  static std::map<std::string, nlohmann::json> parsed;
  auto it = parsed.find(file_name);
  if (it == parsed.end()) it = parsed.emplace(file_name, load_golden_json(file_name)).first;
  return it->second.at("cases").at(name);
}

// A {"shape", "data"} entry as a tensor of the given dtype.
inline engine::Tensor golden_tensor(const nlohmann::json& entry, engine::DType dtype) {
  engine::Shape shape = entry.at("shape").get<engine::Shape>();
  std::vector<double> data = entry.at("data").get<std::vector<double>>();
  return engine::from_vector(data, shape, engine::TensorOptions(dtype));
}

}  // namespace dgpipe::testing
