#include "data/sentencepiece_tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>

#include "data_test_paths.h"
#include "engine/error.h"

using namespace dgpipe::data;
using dgpipe::engine::Error;
using dgpipe::testing::ScratchDir;

namespace {

// Trains a small unigram model on a generated corpus (no model file needs to be committed).
std::string train_tiny_model(const ScratchDir& dir) {
  {
    std::ofstream corpus(dir / "corpus.txt");
    const char* words[] = {"the", "cat", "sat",  "on",      "mat",   "dog",
                           "ran", "far", "away", "quickly", "slowly"};
    for (int i = 0; i < 600; ++i) {
      for (int k = 0; k < 7; ++k) corpus << words[(i * 7 + k * 3 + i / 5) % 11] << (k < 6 ? " " : "\n");
    }
  }
  train_sentencepiece(
      dir / "corpus.txt", dir / "tiny", 40,
      {{"model_type", "unigram"}, {"pad_id", "3"}, {"num_threads", "1"}, {"minloglevel", "2"}});
  return dir / "tiny.model";
}

}  // namespace

TEST(SentencePieceTokenizer, EncodesDecodesAndAddsSpecialTokens) {
  ScratchDir dir;
  const std::string model = train_tiny_model(dir);
  SentencePieceTokenizer tok(model);
  EXPECT_EQ(tok.vocab_size(), 40);
  EXPECT_EQ(tok.pad_id(), 3);
  const std::string text = "the cat sat on the mat";
  const auto ids = tok.tokenize(text);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(tok.decode(ids), text);
  const auto pieces = tok.pieces(text);
  ASSERT_EQ(pieces.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(tok.piece_to_id(pieces[i]), ids[i]);
  // Default layout: <s> A </s> and <s> A </s> B </s> (SentencePiece's bos = 1, eos = 2).
  EncodeOptions opt;
  opt.max_length = static_cast<int64_t>(ids.size()) + 6;
  const auto enc = tok.encode(text, std::string_view("dog"), opt);
  EXPECT_EQ(enc.input_ids.front(), 1);
  EXPECT_EQ(enc.input_ids[ids.size() + 1], 2);
  EXPECT_EQ(enc.attention_mask.back(), 0);
  EXPECT_EQ(enc.input_ids.back(), 3);
  // A custom layout by piece text.
  SentencePieceOptions custom;
  custom.single_prefix = {"<s>"};
  custom.single_suffix = {"</s>", "</s>"};
  SentencePieceTokenizer two_eos(model, custom);
  opt.max_length = 0;
  const auto single = two_eos.encode("far away", std::nullopt, opt);
  EXPECT_EQ(single.input_ids.back(), 2);
  EXPECT_EQ(single.input_ids[single.input_ids.size() - 2], 2);
}

TEST(SentencePieceTokenizer, BadInputsAreNamed) {
  ScratchDir dir;
  try {
    SentencePieceTokenizer tok(dir / "absent.model");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("absent.model"), std::string::npos) << e.what();
  }
  std::ofstream(dir / "junk.model") << "not a protobuf";
  try {
    SentencePieceTokenizer tok(dir / "junk.model");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("junk.model"), std::string::npos) << e.what();
  }
  const std::string model = train_tiny_model(dir);
  SentencePieceOptions bad;
  bad.single_prefix = {"[NOPE]"};
  EXPECT_THROW(SentencePieceTokenizer(model, bad), Error);
  SentencePieceTokenizer tok(model);
  EXPECT_THROW(tok.tokenize("a \xff b"), Error);
  EXPECT_THROW(train_sentencepiece(dir / "no_corpus.txt", dir / "x", 10), Error);
}
