// WordPiece (BERT) from vocab.txt, matching Hugging Face's BertNormalizer (clean text, CJK spacing, accent
// stripping, lower-casing) + BertPreTokenizer (split on whitespace, isolate punctuation) + WordPiece model
// (greedy longest match, "##" continuations, [UNK] for a word with no split) + BertProcessing:
// [CLS] A [SEP] and [CLS] A [SEP] B [SEP], with token type 1 on "B [SEP]".
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "data/tokenizer.h"

namespace dgpipe::data {

struct WordPieceOptions {
  bool lowercase = true;              // BERT uncased
  std::optional<bool> strip_accents;  // unset: follow lowercase (as HF)
  bool handle_chinese_chars = true;
  bool clean_text = true;
  std::string unk_token = "[UNK]";
  std::string cls_token = "[CLS]";
  std::string sep_token = "[SEP]";
  std::string pad_token = "[PAD]";
  std::string continuing_prefix = "##";
  size_t max_input_chars_per_word = 100;
};

class WordPieceTokenizer : public VocabularyTokenizer {
 public:
  // Throws naming the file and line for a missing file or invalid UTF-8, and naming a missing special token.
  explicit WordPieceTokenizer(const std::string& vocab_txt_path, WordPieceOptions options = {});

  std::vector<int64_t> tokenize(std::string_view text) const override;

  // Normalised text split into words and punctuation (BERT's "basic tokenization"), before WordPiece. For
  // tests.
  std::vector<std::string> basic_tokenize(std::string_view text) const;

 private:
  std::u32string normalize(std::string_view text) const;
  void wordpiece(const std::u32string& word, std::vector<int64_t>& out) const;

  WordPieceOptions options_;
  int64_t unk_id_ = 0;
};

}  // namespace dgpipe::data
