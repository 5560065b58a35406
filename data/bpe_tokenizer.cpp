#include "data/bpe_tokenizer.h"

#include <array>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>

#include "data/text_file.h"
#include "data/unicode.h"
#include "engine/error.h"

namespace dgpipe::data {
namespace {

// GPT-2 keeps printable Latin-1 bytes as themselves and moves every other byte to U+0100 and up, in order, so
// no token contains whitespace or control characters.
std::array<std::string, 256> make_byte_map() {
  std::array<std::string, 256> map;
  int next_extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next_extra++);
    unicode::append_utf8(c, map[b]);
  }
  return map;
}

size_t line_of_offset(const std::string& text, size_t offset) {
  size_t line = 1;
  for (size_t i = 0; i < offset && i < text.size(); ++i) line += text[i] == '\n';
  return line;
}

enum class PieceClass { letter, number, space, other };
PieceClass piece_class(char32_t c) {
  if (unicode::is_white_space(c)) return PieceClass::space;
  switch (unicode::char_class(c)) {
    case unicode::CharClass::letter:
      return PieceClass::letter;
    case unicode::CharClass::number:
      return PieceClass::number;
    default:
      return PieceClass::other;
  }
}

// Length (in code points) of the contraction at i ('s 't 're 've 'm 'll 'd), or 0.
size_t contraction_length(const std::u32string& t, size_t i) {
  if (t[i] != U'\'' || i + 1 >= t.size()) return 0;
  const char32_t c1 = t[i + 1];
  if (c1 == U's' || c1 == U't' || c1 == U'm' || c1 == U'd') return 2;
  if (i + 2 < t.size()) {
    const char32_t c2 = t[i + 2];
    if ((c1 == U'r' && c2 == U'e') || (c1 == U'v' && c2 == U'e') || (c1 == U'l' && c2 == U'l')) return 3;
  }
  return 0;
}

// Splits like the GPT-2 pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// scanning left to right; each alternative is a run of one class, so no backtracking is needed except the
// whitespace look-ahead, which leaves the last space of a run to prefix the next word.
std::vector<std::u32string> gpt2_split(const std::u32string& t) {
  std::vector<std::u32string> pieces;
  const size_t n = t.size();
  size_t i = 0;
  while (i < n) {
    size_t len = contraction_length(t, i);
    if (len == 0) {
      const PieceClass c0 = piece_class(t[i]);
      size_t start_of_run = i;
      PieceClass run_class = c0;
      if (t[i] == U' ' && i + 1 < n && piece_class(t[i + 1]) != PieceClass::space) {
        start_of_run = i + 1;
        run_class = piece_class(t[i + 1]);
      }
      if (run_class != PieceClass::space) {
        size_t j = start_of_run;
        while (j < n && piece_class(t[j]) == run_class) ++j;
        len = j - i;
      } else {
        size_t j = i;
        while (j < n && piece_class(t[j]) == PieceClass::space) ++j;
        const size_t run = j - i;
        len = (j == n || run == 1) ? run : run - 1;
      }
    }
    pieces.emplace_back(t, i, len);
    i += len;
  }
  return pieces;
}

}  // namespace

const std::string& byte_to_unicode(uint8_t byte) {
  static const std::array<std::string, 256> map = make_byte_map();
  return map[byte];
}

ByteLevelBpeTokenizer::ByteLevelBpeTokenizer(const std::string& vocab_json_path,
                                             const std::string& merges_txt_path, BpeOptions options)
    : VocabularyTokenizer("byte-level BPE", vocab_json_path), options_(std::move(options)) {
  const std::string who = "bpe tokenizer";
  const std::string json_text = read_file_bytes(vocab_json_path, who);
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    DGP_FAIL(who << ": " << vocab_json_path << ":" << line_of_offset(json_text, e.byte)
                 << ": not valid JSON (" << e.what() << ")");
  }
  DGP_CHECK(vocab.is_object(), who << ": " << vocab_json_path << ": expected a JSON object of token -> id");
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    DGP_CHECK(
        it.value().is_number_integer() && it.value().get<int64_t>() >= 0,
        who << ": " << vocab_json_path << ": token '" << it.key() << "' has a non-integer or negative id");
    const int64_t id = it.value().get<int64_t>();
    token_to_id_[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [token, id] : token_to_id_) id_to_token_[id] = token;

  for (int b = 0; b < 256; ++b) {
    const int64_t id = token_to_id(byte_to_unicode(static_cast<uint8_t>(b)));
    DGP_CHECK(id >= 0, who << ": " << vocab_json_path << ": byte " << b << " ('" << byte_to_unicode(b)
                           << "') has no id; not a byte-level vocabulary");
    byte_ids_[b] = static_cast<int32_t>(id);
  }

  const std::vector<std::string> lines = read_utf8_lines(merges_txt_path, who);
  int32_t rank = 0;
  for (size_t ln = 0; ln < lines.size(); ++ln) {
    const std::string& line = lines[ln];
    if (line.rfind("#version", 0) == 0) continue;
    const std::vector<std::string> parts = split_fields(line, ' ');
    DGP_CHECK(parts.size() == 2 && !parts[0].empty() && !parts[1].empty(),
              who << ": " << merges_txt_path << ":" << ln + 1
                  << ": expected two space-separated symbols, got '" << line << "'");
    const int64_t left = token_to_id(parts[0]), right = token_to_id(parts[1]);
    const int64_t merged = token_to_id(parts[0] + parts[1]);
    DGP_CHECK(left >= 0 && right >= 0 && merged >= 0,
              who << ": " << merges_txt_path << ":" << ln + 1 << ": merge '" << line
                  << "' uses a token missing from " << vocab_json_path);
    const uint64_t key = (static_cast<uint64_t>(left) << 32) | static_cast<uint64_t>(right);
    merges_.emplace(key, Merge{rank++, static_cast<int32_t>(merged)});  // first occurrence wins, as in HF
  }

  auto special = [&](const std::string& token) {
    const int64_t id = token_to_id(token);
    DGP_CHECK(id >= 0, who << ": special token '" << token << "' is not in " << vocab_json_path);
    return id;
  };
  const int64_t bos = special(options_.bos_token), eos = special(options_.eos_token);
  pad_id_ = special(options_.pad_token);
  layout_.single_prefix = {bos};
  layout_.single_suffix = {eos};
  layout_.pair_prefix = {bos};
  layout_.pair_middle = {eos, eos};
  layout_.pair_suffix = {eos};
  layout_.second_segment_is_type_one = false;
}

std::unique_ptr<ByteLevelBpeTokenizer> ByteLevelBpeTokenizer::from_directory(const std::string& dir,
                                                                             BpeOptions options) {
  return std::make_unique<ByteLevelBpeTokenizer>(dir + "/vocab.json", dir + "/merges.txt",
                                                 std::move(options));
}

std::vector<std::string> ByteLevelBpeTokenizer::pre_tokenize(std::string_view text) const {
  std::u32string decoded;
  size_t bad = 0;
  DGP_CHECK(unicode::decode_utf8(text, decoded, &bad),
            name() << ": invalid UTF-8 at byte " << bad << " of the input");
  if (options_.add_prefix_space && !decoded.empty() && decoded[0] != U' ')
    decoded.insert(decoded.begin(), U' ');
  std::vector<std::string> out;
  for (const std::u32string& piece : gpt2_split(decoded)) out.push_back(unicode::to_utf8(piece));
  return out;
}

void ByteLevelBpeTokenizer::bpe_piece(const std::string& piece, std::vector<int64_t>& out) const {
  const bool cacheable = piece.size() <= 64 && options_.cache_capacity > 0;
  if (cacheable) {
    std::shared_lock<std::shared_mutex> lock(cache_mutex_);
    auto it = cache_.find(piece);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols;
  symbols.reserve(piece.size());
  for (unsigned char b : piece) symbols.push_back(byte_ids_[b]);
  // Repeatedly merge the adjacent pair with the lowest rank (the leftmost on a tie), as HF's BPE does.
  while (symbols.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    size_t best_pos = 0;
    int32_t best_id = -1;
    for (size_t p = 0; p + 1 < symbols.size(); ++p) {
      const uint64_t key = (static_cast<uint64_t>(symbols[p]) << 32) | static_cast<uint64_t>(symbols[p + 1]);
      auto it = merges_.find(key);
      if (it != merges_.end() && it->second.rank < best_rank) {
        best_rank = it->second.rank;
        best_pos = p;
        best_id = it->second.merged_id;
      }
    }
    if (best_id < 0) break;
    symbols[best_pos] = best_id;
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best_pos) + 1);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
  if (cacheable) {
    std::unique_lock<std::shared_mutex> lock(cache_mutex_);
    if (cache_.size() >= options_.cache_capacity) cache_.clear();
    cache_.emplace(piece, std::move(symbols));
  }
}

std::vector<int64_t> ByteLevelBpeTokenizer::tokenize(std::string_view text) const {
  std::vector<int64_t> ids;
  for (const std::string& piece : pre_tokenize(text)) bpe_piece(piece, ids);
  return ids;
}

}  // namespace dgpipe::data
