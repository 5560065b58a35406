// Byte-level BPE (GPT-2 / RoBERTa) from vocab.json + merges.txt, matching Hugging Face's ByteLevel
// pre-tokenizer (GPT-2 split pattern, no prefix space by default) + BPE model + RobertaProcessing: <s> A </s>
// and <s> A </s></s> B </s>, all token types 0.
#pragma once
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "data/tokenizer.h"

namespace dgpipe::data {

struct BpeOptions {
  bool add_prefix_space = false;  // roberta-base: false
  std::string bos_token = "<s>";
  std::string eos_token = "</s>";
  std::string pad_token = "<pad>";
  size_t cache_capacity = 200000;  // words whose merges are remembered (cleared when full)
};

class ByteLevelBpeTokenizer : public VocabularyTokenizer {
 public:
  // Throws naming the file (and line) for a missing file, bad JSON, a malformed merge line or a merge whose
  // parts or result are not in the vocabulary.
  ByteLevelBpeTokenizer(const std::string& vocab_json_path, const std::string& merges_txt_path,
                        BpeOptions options = {});
  // roberta-base style directory holding vocab.json and merges.txt.
  static std::unique_ptr<ByteLevelBpeTokenizer> from_directory(const std::string& dir,
                                                               BpeOptions options = {});

  std::vector<int64_t> tokenize(std::string_view text) const override;

  // The GPT-2 pre-tokenizer split, as UTF-8 pieces (before the byte-to-unicode mapping). For tests.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  void bpe_piece(const std::string& piece, std::vector<int64_t>& out) const;

  BpeOptions options_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> rank and result
  int32_t byte_ids_[256];                       // id of each byte's mapped character
  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// GPT-2's reversible byte -> printable-character map (as UTF-8), e.g. ' ' -> "Ġ", '\n' -> "Ċ".
const std::string& byte_to_unicode(uint8_t byte);

}  // namespace dgpipe::data
