// Tokenizers: text -> ids, matching Hugging Face tokenizers id for id. A concrete tokenizer turns one text
// into ids without special tokens (tokenize); encode() adds the model's special tokens for one text or a
// pair, truncates longest-first to max_length and pads, like HF's post-processor + truncation + padding.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dgpipe::data {

struct Encoding {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> attention_mask;  // 1 for real tokens, 0 for padding
  std::vector<int64_t>
      token_type_ids;  // segment of each token (0 for the first text, 1 for the second in BERT)
  int64_t length() const { return static_cast<int64_t>(input_ids.size()); }
};

struct EncodeOptions {
  int64_t max_length = 512;       // 0: no limit (then no truncation and no padding)
  bool truncation = true;         // longest-first, as HF TruncationStrategy::LongestFirst
  bool pad_to_max_length = true;  // pad ids with pad_id, mask 0, type 0, up to max_length
};

// Where the special tokens go around one text or a pair, and which segment id the second text gets.
struct SpecialTokenLayout {
  std::vector<int64_t> single_prefix, single_suffix;           // prefix A suffix
  std::vector<int64_t> pair_prefix, pair_middle, pair_suffix;  // prefix A middle B suffix
  bool second_segment_is_type_one = false;  // BERT: B and pair_suffix get type 1; prefix, A, middle stay 0
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Ids of one text, no special tokens. Throws on invalid UTF-8, naming the byte offset.
  virtual std::vector<int64_t> tokenize(std::string_view text) const = 0;
  virtual int64_t pad_id() const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual const SpecialTokenLayout& special_tokens() const = 0;
  virtual std::string name() const = 0;  // for error messages: "bpe(vocab.json)" ...

  // Special tokens + truncation + padding for one text (b empty) or a pair.
  Encoding encode(std::string_view a, std::optional<std::string_view> b = std::nullopt,
                  const EncodeOptions& options = {}) const;
};

// A tokenizer over a vocabulary file of token strings (BPE's vocab.json, WordPiece's vocab.txt): the
// vocabulary both ways, the pad id and the special-token layout, which the subclass's constructor fills in.
class VocabularyTokenizer : public Tokenizer {
 public:
  int64_t pad_id() const override { return pad_id_; }
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  const SpecialTokenLayout& special_tokens() const override { return layout_; }
  std::string name() const override { return kind_ + " (" + vocab_path_ + ")"; }

  int64_t token_to_id(const std::string& token) const;  // -1 when absent
  const std::string& id_to_token(int64_t id) const;     // throws naming the tokenizer for an id outside

 protected:
  // `kind` names the tokenizer in name() ("WordPiece"), `vocab_path` is the vocabulary file it reads.
  VocabularyTokenizer(std::string kind, std::string vocab_path)
      : vocab_path_(std::move(vocab_path)), kind_(std::move(kind)) {}

  std::string vocab_path_;
  std::unordered_map<std::string, int64_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  int64_t pad_id_ = 0;
  SpecialTokenLayout layout_;

 private:
  std::string kind_;
};

// HF's longest-first truncation of a pair to `budget` tokens in total (the shorter keeps what it can; when
// both must be cut, the first gets ceil(budget/2) if it was the longer one). Exposed for tests.
void truncate_longest_first(std::vector<int64_t>& a, std::vector<int64_t>* b, int64_t budget);

}  // namespace dgpipe::data
