#include "data/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>

#include "data/unicode.h"
#include "engine/error.h"

namespace dgpipe::data {

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path, SentencePieceOptions options)
    : model_path_(model_path), processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  const std::string who = "sentencepiece tokenizer";
  DGP_CHECK(std::filesystem::is_regular_file(model_path),
            who << ": cannot open '" << model_path << "' (no such file)");
  const auto status = processor_->Load(model_path);
  DGP_CHECK(status.ok(), who << ": cannot load '" << model_path << "': " << status.ToString());

  auto ids_of = [&](const std::vector<std::string>& pieces) {
    std::vector<int64_t> ids;
    for (const std::string& p : pieces) {
      const int id = processor_->PieceToId(p);
      DGP_CHECK(id != processor_->unk_id() || p == processor_->IdToPiece(processor_->unk_id()),
                who << ": special piece '" << p << "' is not in " << model_path);
      ids.push_back(id);
    }
    return ids;
  };
  const bool custom =
      !(options.single_prefix.empty() && options.single_suffix.empty() && options.pair_prefix.empty() &&
        options.pair_middle.empty() && options.pair_suffix.empty());
  if (custom) {
    layout_.single_prefix = ids_of(options.single_prefix);
    layout_.single_suffix = ids_of(options.single_suffix);
    layout_.pair_prefix = ids_of(options.pair_prefix);
    layout_.pair_middle = ids_of(options.pair_middle);
    layout_.pair_suffix = ids_of(options.pair_suffix);
  } else {
    std::vector<int64_t> bos, eos;
    if (processor_->bos_id() >= 0) bos.push_back(processor_->bos_id());
    if (processor_->eos_id() >= 0) eos.push_back(processor_->eos_id());
    layout_.single_prefix = bos;
    layout_.single_suffix = eos;
    layout_.pair_prefix = bos;
    layout_.pair_middle = eos;
    layout_.pair_suffix = eos;
  }
  layout_.second_segment_is_type_one = options.second_segment_is_type_one;
  if (!options.pad_piece.empty()) {
    pad_id_ = ids_of({options.pad_piece})[0];
  } else {
    pad_id_ = processor_->pad_id() >= 0 ? processor_->pad_id() : 0;
  }
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

int64_t SentencePieceTokenizer::vocab_size() const {
  return processor_->GetPieceSize();
}

std::vector<int64_t> SentencePieceTokenizer::tokenize(std::string_view text) const {
  const size_t bad = unicode::find_invalid_utf8(text);
  DGP_CHECK(bad == std::string::npos, name() << ": invalid UTF-8 at byte " << bad << " of the input");
  std::vector<int> ids;
  const auto status = processor_->Encode(text, &ids);
  DGP_CHECK(status.ok(), name() << ": encode failed: " << status.ToString());
  return std::vector<int64_t>(ids.begin(), ids.end());
}

std::vector<std::string> SentencePieceTokenizer::pieces(std::string_view text) const {
  std::vector<std::string> out;
  const auto status = processor_->Encode(text, &out);
  DGP_CHECK(status.ok(), name() << ": encode failed: " << status.ToString());
  return out;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> narrow;
  for (int64_t id : ids) {
    DGP_CHECK(id >= 0 && id < vocab_size(),
              name() << ": decode: id " << id << " outside 0.." << vocab_size() - 1);
    narrow.push_back(static_cast<int>(id));
  }
  std::string text;
  const auto status = processor_->Decode(narrow, &text);
  DGP_CHECK(status.ok(), name() << ": decode failed: " << status.ToString());
  return text;
}

int64_t SentencePieceTokenizer::piece_to_id(const std::string& piece) const {
  return processor_->PieceToId(piece);
}

void train_sentencepiece(const std::string& input_path, const std::string& model_prefix, int vocab_size,
                         const std::unordered_map<std::string, std::string>& extra_args) {
  DGP_CHECK(std::filesystem::is_regular_file(input_path),
            "train_sentencepiece: cannot open '" << input_path << "' (no such file)");
  std::unordered_map<std::string, std::string> args = {
      {"input", input_path}, {"model_prefix", model_prefix}, {"vocab_size", std::to_string(vocab_size)}};
  for (const auto& [key, value] : extra_args) args[key] = value;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  DGP_CHECK(status.ok(),
            "train_sentencepiece: training on '" << input_path << "' failed: " << status.ToString());
}

}  // namespace dgpipe::data
