// SentencePiece models (ALBERT, XLNet, T5, ... ) through the sentencepiece library. The model file carries
// its own normalisation and segmentation; this wrapper adds the special-token layout, truncation and padding.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "data/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace dgpipe::data {

struct SentencePieceOptions {
  // Special tokens by piece text. Unset layout (all empty, the default) means: the model's bos/eos pieces
  // around the text, <bos> A <eos> and <bos> A <eos> B <eos>, leaving out whichever the model lacks.
  std::vector<std::string> single_prefix, single_suffix, pair_prefix, pair_middle, pair_suffix;
  bool second_segment_is_type_one = false;
  std::string pad_piece;  // empty: the model's pad id, else 0
};

class SentencePieceTokenizer : public Tokenizer {
 public:
  // Throws naming the file when it is missing or not a SentencePiece model, and naming unknown special
  // pieces.
  explicit SentencePieceTokenizer(const std::string& model_path, SentencePieceOptions options = {});
  ~SentencePieceTokenizer() override;

  std::vector<int64_t> tokenize(std::string_view text) const override;
  int64_t pad_id() const override { return pad_id_; }
  int64_t vocab_size() const override;
  const SpecialTokenLayout& special_tokens() const override { return layout_; }
  std::string name() const override { return "SentencePiece (" + model_path_ + ")"; }

  std::vector<std::string> pieces(std::string_view text) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t piece_to_id(const std::string& piece) const;  // the unknown id when absent

 private:
  std::string model_path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  int64_t pad_id_ = 0;
  SpecialTokenLayout layout_;
};

// Trains a SentencePiece model on a text file (one sentence a line) and writes <model_prefix>.model/.vocab.
// extra_args: further trainer flags as key -> value (e.g. {"model_type","bpe"}). Throws with the trainer's
// message.
void train_sentencepiece(const std::string& input_path, const std::string& model_prefix, int vocab_size,
                         const std::unordered_map<std::string, std::string>& extra_args = {});

}  // namespace dgpipe::data
