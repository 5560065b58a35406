#include "data/wordpiece_tokenizer.h"

#include "data/text_file.h"
#include "data/unicode.h"
#include "engine/error.h"

namespace dgpipe::data {
namespace {

// BERT's notions, as HF's tokenizers define them.
bool bert_is_whitespace(char32_t c) {
  return unicode::is_white_space(c);
}
bool bert_is_control(char32_t c) {
  if (c == U'\t' || c == U'\n' || c == U'\r') return false;
  return unicode::char_class(c) == unicode::CharClass::control;
}
bool bert_is_punctuation(char32_t c) {
  const bool ascii_punct =
      (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
  return ascii_punct || unicode::char_class(c) == unicode::CharClass::punctuation;
}
bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// Words of the normalised text: whitespace separates, each punctuation character is a word of its own.
template <class Fn>
void for_each_word(const std::u32string& text, Fn&& fn) {
  size_t start = 0;
  auto flush = [&](size_t end) {
    if (end > start) fn(text.substr(start, end - start));
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    if (bert_is_whitespace(c)) {
      flush(i);
      start = i + 1;
    } else if (bert_is_punctuation(c)) {
      flush(i);
      fn(text.substr(i, 1));
      start = i + 1;
    }
  }
  flush(text.size());
}

}  // namespace

WordPieceTokenizer::WordPieceTokenizer(const std::string& vocab_txt_path, WordPieceOptions options)
    : VocabularyTokenizer("WordPiece", vocab_txt_path), options_(std::move(options)) {
  const std::string who = "wordpiece tokenizer";
  std::vector<std::string> lines = read_utf8_lines(vocab_txt_path, who);
  DGP_CHECK(!lines.empty(), who << ": " << vocab_txt_path << " is empty");
  id_to_token_.reserve(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string token = lines[i];
    // HF trims trailing whitespace of each line.
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t' || token.back() == '\r'))
      token.pop_back();
    token_to_id_[token] = static_cast<int64_t>(i);  // a repeated token keeps its last id, as in HF
    id_to_token_.push_back(token);
  }
  auto special = [&](const std::string& token) {
    const int64_t id = token_to_id(token);
    DGP_CHECK(id >= 0, who << ": special token '" << token << "' is not in " << vocab_txt_path);
    return id;
  };
  unk_id_ = special(options_.unk_token);
  pad_id_ = special(options_.pad_token);
  const int64_t cls = special(options_.cls_token), sep = special(options_.sep_token);
  layout_.single_prefix = {cls};
  layout_.single_suffix = {sep};
  layout_.pair_prefix = {cls};
  layout_.pair_middle = {sep};
  layout_.pair_suffix = {sep};
  layout_.second_segment_is_type_one = true;
}

std::u32string WordPieceTokenizer::normalize(std::string_view text) const {
  std::u32string decoded;
  size_t bad = 0;
  DGP_CHECK(unicode::decode_utf8(text, decoded, &bad),
            name() << ": invalid UTF-8 at byte " << bad << " of the input");
  std::u32string out;
  out.reserve(decoded.size() + 8);
  // Order as HF's BertNormalizer: clean, space out CJK, strip accents, lower-case.
  for (char32_t c : decoded) {
    if (options_.clean_text) {
      if (c == 0 || c == 0xFFFD || bert_is_control(c)) continue;
      if (bert_is_whitespace(c)) c = U' ';
    }
    if (options_.handle_chinese_chars && is_chinese_char(c)) {
      out.push_back(U' ');
      out.push_back(c);
      out.push_back(U' ');
    } else {
      out.push_back(c);
    }
  }
  if (options_.strip_accents.value_or(options_.lowercase)) {
    std::u32string decomposed = unicode::nfd(out);
    out.clear();
    for (char32_t c : decomposed) {
      if (unicode::char_class(c) != unicode::CharClass::mark_nonspacing) out.push_back(c);
    }
  }
  if (options_.lowercase) {
    std::u32string lowered;
    lowered.reserve(out.size());
    for (char32_t c : out) unicode::append_lowercase(c, lowered);
    out.swap(lowered);
  }
  return out;
}

std::vector<std::string> WordPieceTokenizer::basic_tokenize(std::string_view text) const {
  std::vector<std::string> words;
  for_each_word(normalize(text), [&](const std::u32string& w) { words.push_back(unicode::to_utf8(w)); });
  return words;
}

void WordPieceTokenizer::wordpiece(const std::u32string& word, std::vector<int64_t>& out) const {
  if (word.size() > options_.max_input_chars_per_word) {
    out.push_back(unk_id_);
    return;
  }
  const size_t first = out.size();
  size_t start = 0;
  std::string candidate;
  while (start < word.size()) {
    size_t end = word.size();
    int64_t found = -1;
    while (start < end) {
      candidate = start > 0 ? options_.continuing_prefix : std::string();
      for (size_t k = start; k < end; ++k) unicode::append_utf8(word[k], candidate);
      found = token_to_id(candidate);
      if (found >= 0) break;
      --end;
    }
    if (found < 0) {  // no piece matches here: the whole word is unknown
      out.resize(first);
      out.push_back(unk_id_);
      return;
    }
    out.push_back(found);
    start = end;
  }
}

std::vector<int64_t> WordPieceTokenizer::tokenize(std::string_view text) const {
  std::vector<int64_t> ids;
  for_each_word(normalize(text), [&](const std::u32string& w) { wordpiece(w, ids); });
  return ids;
}

}  // namespace dgpipe::data
