// Reads the tokenizer parity goldens (tests/data/tokenizer/*.txt, written by
// scripts/gen_tokenizer_goldens.py) and checks a tokenizer against one of them on the GLUE dev set it was
// made from.
#pragma once
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/glue.h"
#include "data/tokenizer.h"
#include "data_test_paths.h"

namespace dgpipe::testing {

struct TokenizerGolden {
  int64_t max_length = 0;
  int64_t pad_id = 0;
  std::string set;                       // rte_dev or cola_dev
  std::vector<data::Encoding> expected;  // padded, as Hugging Face returned them
};

inline TokenizerGolden read_tokenizer_golden(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  TokenizerGolden golden;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream header(line.substr(1));
      std::string field;
      while (header >> field) {
        const size_t eq = field.find('=');
        if (eq == std::string::npos) continue;
        const std::string key = field.substr(0, eq), value = field.substr(eq + 1);
        if (key == "max_length") golden.max_length = std::stoll(value);
        if (key == "pad_id") golden.pad_id = std::stoll(value);
        if (key == "set") golden.set = value;
      }
      continue;
    }
    std::istringstream row(line);
    int64_t length = 0, first_type_one = -1, id = 0;
    row >> length >> first_type_one;
    data::Encoding enc;
    while (row >> id) enc.input_ids.push_back(id);
    EXPECT_EQ(static_cast<int64_t>(enc.input_ids.size()), length) << path << ": malformed line";
    for (int64_t i = 0; i < golden.max_length; ++i) {
      enc.attention_mask.push_back(i < length ? 1 : 0);
      enc.token_type_ids.push_back(first_type_one >= 0 && i >= first_type_one && i < length ? 1 : 0);
    }
    enc.input_ids.resize(static_cast<size_t>(golden.max_length), golden.pad_id);
    golden.expected.push_back(std::move(enc));
  }
  return golden;
}

// Encodes every example of the golden's GLUE dev set; returns the fraction identical in ids, mask and type
// ids.
inline double tokenizer_parity(const data::Tokenizer& tokenizer, const std::string& golden_file,
                               bool check_type_ids) {
  const TokenizerGolden golden = read_tokenizer_golden(fixture_path("tokenizer/" + golden_file));
  const std::string glue = shared_data_dir() + "/glue";
  const data::GlueDataset dataset =
      golden.set == "rte_dev" ? data::GlueDataset::from_directory(glue, data::GlueTask::rte, "dev")
                              : data::GlueDataset::from_directory(glue, data::GlueTask::cola, "dev");
  EXPECT_EQ(dataset.size(), static_cast<int64_t>(golden.expected.size())) << golden_file;
  data::EncodeOptions options;
  options.max_length = golden.max_length;
  int64_t identical = 0, reported = 0;
  for (int64_t i = 0; i < dataset.size() && i < static_cast<int64_t>(golden.expected.size()); ++i) {
    const data::TextExample& ex = dataset.example(i);
    const data::Encoding got = ex.text_b ? tokenizer.encode(ex.text_a, std::string_view(*ex.text_b), options)
                                         : tokenizer.encode(ex.text_a, std::nullopt, options);
    const data::Encoding& want = golden.expected[static_cast<size_t>(i)];
    const bool same = got.input_ids == want.input_ids && got.attention_mask == want.attention_mask &&
                      (!check_type_ids || got.token_type_ids == want.token_type_ids);
    identical += same;
    if (!same && reported++ < 3) {
      ADD_FAILURE() << golden_file << " example " << i << " (" << dataset.describe(i) << ") differs: '"
                    << ex.text_a << "'";
    }
  }
  const double parity = static_cast<double>(identical) / static_cast<double>(golden.expected.size());
  std::printf("[parity] %s: %lld / %zu identical (%.2f%%)\n", golden_file.c_str(),
              static_cast<long long>(identical), golden.expected.size(), 100.0 * parity);
  return parity;
}

}  // namespace dgpipe::testing
