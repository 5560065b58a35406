#include "data/bpe_tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>

#include "data_test_paths.h"
#include "engine/error.h"
#include "support/test_util.h"
#include "tokenizer_golden.h"

using dgpipe::data::BpeOptions;
using dgpipe::data::ByteLevelBpeTokenizer;
using dgpipe::data::EncodeOptions;
using dgpipe::engine::Error;
using namespace dgpipe::testing;

namespace {

std::string roberta_dir() {
  return shared_data_dir() + "/roberta-base";
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// A tiny byte-level vocabulary: every byte's character, the merged tokens, and the specials.
void write_tiny_bpe(const ScratchDir& dir, const std::string& merges) {
  std::string json = "{";
  int id = 0;
  for (const char* special : {"<s>", "<pad>", "</s>", "<unk>"})
    json += "\"" + std::string(special) + "\": " + std::to_string(id++) + ", ";
  for (int b = 0; b < 256; ++b) {
    std::string token = dgpipe::data::byte_to_unicode(static_cast<uint8_t>(b));
    if (token == "\"" || token == "\\") token = "\\" + token;
    json += "\"" + token + "\": " + std::to_string(id++) + ", ";
  }
  json += "\"ab\": 300, \"abc\": 301, \"bc\": 302, \"aa\": 303, \"\u0120a\": 304}";
  write_text(dir / "vocab.json", json);
  write_text(dir / "merges.txt", "#version: 0.2\n" + merges);
}

}  // namespace

TEST(BpeTokenizer, Gpt2PreTokenizerSplitsLikeHuggingFace) {
  ScratchDir dir;
  write_tiny_bpe(dir, "");
  ByteLevelBpeTokenizer tok(dir / "vocab.json", dir / "merges.txt");
  using V = std::vector<std::string>;
  // Expected pieces from tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False), before the byte
  // mapping.
  EXPECT_EQ(tok.pre_tokenize("Hello world, it's  fine.\n x"),
            (V{"Hello", " world", ",", " it", "'s", " ", " fine", ".", "\n", " x"}));
  EXPECT_EQ(tok.pre_tokenize("  a  b\t\tc  "), (V{" ", " a", " ", " b", "\t", "\t", "c", "  "}));
  EXPECT_EQ(tok.pre_tokenize("I'll've 'sup ''s 12.5%"),
            (V{"I", "'ll", "'ve", " '", "sup", " ''", "s", " 12", ".", "5", "%"}));
  EXPECT_EQ(tok.pre_tokenize("naïve café 中文 ١٢٣"), (V{"naïve", " café", " 中文", " ١٢٣"}));
  EXPECT_EQ(tok.pre_tokenize("x\u00a0y\u3000z"), (V{"x", "\u00a0", "y", "\u3000", "z"}));
  EXPECT_EQ(tok.pre_tokenize(""), V{});
}

TEST(BpeTokenizer, MergesApplyLowestRankFirst) {
  ScratchDir dir;
  // "b c" outranks "a b": "abc" -> a + bc, unless "a bc" exists; here it does not, so no "abc".
  write_tiny_bpe(dir, "b c\na b\nab c\na a\n");
  ByteLevelBpeTokenizer tok(dir / "vocab.json", dir / "merges.txt");
  EXPECT_EQ(tok.tokenize("abc"), (std::vector<int64_t>{tok.token_to_id("a"), 302}));
  EXPECT_EQ(tok.tokenize("ab"), (std::vector<int64_t>{300}));
  EXPECT_EQ(tok.tokenize("aaa"), (std::vector<int64_t>{303, tok.token_to_id("a")}));  // leftmost pair first
  // Space is mapped to U+0120 and starts the next word's piece.
  EXPECT_EQ(tok.tokenize("a a"),
            (std::vector<int64_t>{tok.token_to_id("a"), tok.token_to_id("\u0120"), tok.token_to_id("a")}));
  // Special-token layout: <s> A </s></s> B </s>, type ids 0, padding with <pad>.
  EncodeOptions opt;
  opt.max_length = 10;
  const auto enc = tok.encode("ab", std::string_view("ab"), opt);
  EXPECT_EQ(enc.input_ids, (std::vector<int64_t>{0, 300, 2, 2, 300, 2, 1, 1, 1, 1}));
  EXPECT_EQ(enc.attention_mask, (std::vector<int64_t>{1, 1, 1, 1, 1, 1, 0, 0, 0, 0}));
  EXPECT_EQ(enc.token_type_ids, std::vector<int64_t>(10, 0));
}

TEST(BpeTokenizer, BadInputsNameTheFileAndLine) {
  ScratchDir dir;
  write_tiny_bpe(dir, "a b\nab\n");
  std::string msg = error_of([&] { ByteLevelBpeTokenizer(dir / "vocab.json", dir / "merges.txt"); });
  EXPECT_NE(msg.find("merges.txt:3"), std::string::npos) << msg;

  msg = error_of([&] { ByteLevelBpeTokenizer(dir / "missing.json", dir / "merges.txt"); });
  EXPECT_NE(msg.find("missing.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cannot open"), std::string::npos) << msg;

  write_tiny_bpe(dir, "a b\nq zz\n");
  msg = error_of([&] { ByteLevelBpeTokenizer(dir / "vocab.json", dir / "merges.txt"); });
  EXPECT_NE(msg.find("merges.txt:3"), std::string::npos) << msg;

  write_text(dir / "bad.json", "{\n\"a\": 1,\n\"b\" 2}");
  msg = error_of([&] { ByteLevelBpeTokenizer(dir / "bad.json", dir / "merges.txt"); });
  EXPECT_NE(msg.find("bad.json:3"), std::string::npos) << msg;

  write_text(dir / "merges_bad_utf8.txt", "#version: 0.2\na b\n\xff\xfe b\n");
  write_tiny_bpe(dir, "");
  msg = error_of([&] { ByteLevelBpeTokenizer(dir / "vocab.json", dir / "merges_bad_utf8.txt"); });
  EXPECT_NE(msg.find("merges_bad_utf8.txt:3: invalid UTF-8"), std::string::npos) << msg;

  ByteLevelBpeTokenizer tok(dir / "vocab.json", dir / "merges.txt");
  msg = error_of([&] { tok.tokenize("ok \xc3\x28"); });
  EXPECT_NE(msg.find("invalid UTF-8 at byte 3"), std::string::npos) << msg;
  EncodeOptions tiny;
  tiny.max_length = 3;
  msg = error_of([&] { tok.encode("a", std::string_view("b"), tiny); });
  EXPECT_NE(msg.find("max_length 3"), std::string::npos) << msg;
}

TEST(BpeTokenizer, RobertaMatchesHuggingFaceOnRteDev) {
  DGP_REQUIRE_FILE(roberta_dir() + "/vocab.json");
  DGP_REQUIRE_FILE(shared_data_dir() + "/glue/RTE/dev.tsv");
  const auto tok = ByteLevelBpeTokenizer::from_directory(roberta_dir());
  EXPECT_EQ(tok->vocab_size(), 50265);
  EXPECT_EQ(tok->pad_id(), 1);
  EXPECT_EQ(tokenizer_parity(*tok, "roberta_rte_dev_128.txt", true), 1.0);
  EXPECT_EQ(tokenizer_parity(*tok, "roberta_rte_dev_40.txt", true), 1.0);  // most pairs truncated
}

TEST(BpeTokenizer, RobertaMatchesHuggingFaceOnColaDev) {
  DGP_REQUIRE_FILE(roberta_dir() + "/vocab.json");
  DGP_REQUIRE_FILE(shared_data_dir() + "/glue/CoLA/dev.tsv");
  const auto tok = ByteLevelBpeTokenizer::from_directory(roberta_dir());
  EXPECT_EQ(tokenizer_parity(*tok, "roberta_cola_dev_128.txt", true), 1.0);
}

TEST(BpeTokenizer, RobertaKnownIds) {
  DGP_REQUIRE_FILE(roberta_dir() + "/vocab.json");
  const auto tok = ByteLevelBpeTokenizer::from_directory(roberta_dir());
  // From Hugging Face: "Hello world, it's  fine.\n x" / "Second  one".
  EncodeOptions opt;
  opt.max_length = 0;
  const auto enc = tok->encode("Hello world, it's  fine.\n x", std::string_view("Second  one"), opt);
  EXPECT_EQ(enc.input_ids, (std::vector<int64_t>{0, 31414, 232, 6, 24, 18, 1437, 2051, 4, 50118, 3023, 2, 2,
                                                 32703, 1437, 65, 2}));
}
