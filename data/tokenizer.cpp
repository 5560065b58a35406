#include "data/tokenizer.h"

#include <algorithm>

#include "engine/error.h"

namespace dgpipe::data {

int64_t VocabularyTokenizer::token_to_id(const std::string& token) const {
  auto it = token_to_id_.find(token);
  return it == token_to_id_.end() ? -1 : it->second;
}

const std::string& VocabularyTokenizer::id_to_token(int64_t id) const {
  DGP_CHECK(id >= 0 && id < vocab_size(),
            name() << ": id " << id << " outside the vocabulary of " << vocab_size());
  return id_to_token_[id];
}

void truncate_longest_first(std::vector<int64_t>& a, std::vector<int64_t>* b, int64_t budget) {
  DGP_CHECK(budget >= 0, "truncate_longest_first: negative budget " << budget);
  if (b == nullptr) {
    if (static_cast<int64_t>(a.size()) > budget) a.resize(budget);
    return;
  }
  const int64_t len_a = static_cast<int64_t>(a.size()), len_b = static_cast<int64_t>(b->size());
  if (len_a + len_b <= budget) return;
  // The shorter text keeps all it has when that leaves room for at least as much of the longer one;
  // otherwise both get half, the odd token going to the longer text (to the second on a tie).
  const bool first_is_longer = len_a > len_b;
  int64_t shorter = std::min(len_a, len_b);
  int64_t longer_keep;
  if (shorter > budget) {
    longer_keep = shorter;
  } else {
    longer_keep = std::max(shorter, budget - shorter);
  }
  if (shorter + longer_keep > budget) {
    shorter = budget / 2;
    longer_keep = shorter + budget % 2;
  }
  const int64_t keep_a = first_is_longer ? longer_keep : shorter;
  const int64_t keep_b = first_is_longer ? shorter : longer_keep;
  if (len_a > keep_a) a.resize(keep_a);
  if (len_b > keep_b) b->resize(keep_b);
}

Encoding Tokenizer::encode(std::string_view a, std::optional<std::string_view> b,
                           const EncodeOptions& options) const {
  const SpecialTokenLayout& layout = special_tokens();
  std::vector<int64_t> ids_a = tokenize(a);
  std::vector<int64_t> ids_b;
  if (b) ids_b = tokenize(*b);
  const int64_t num_special =
      b ? static_cast<int64_t>(layout.pair_prefix.size() + layout.pair_middle.size() +
                               layout.pair_suffix.size())
        : static_cast<int64_t>(layout.single_prefix.size() + layout.single_suffix.size());
  if (options.max_length > 0 && options.truncation) {
    DGP_CHECK(options.max_length >= num_special, name() << ": max_length " << options.max_length
                                                        << " leaves no room after " << num_special
                                                        << " special tokens");
    truncate_longest_first(ids_a, b ? &ids_b : nullptr, options.max_length - num_special);
  }

  Encoding enc;
  auto append = [&](const std::vector<int64_t>& ids, int64_t type) {
    enc.input_ids.insert(enc.input_ids.end(), ids.begin(), ids.end());
    enc.token_type_ids.insert(enc.token_type_ids.end(), ids.size(), type);
  };
  if (b) {
    const int64_t second = layout.second_segment_is_type_one ? 1 : 0;
    append(layout.pair_prefix, 0);
    append(ids_a, 0);
    append(layout.pair_middle, 0);
    append(ids_b, second);
    append(layout.pair_suffix, second);
  } else {
    append(layout.single_prefix, 0);
    append(ids_a, 0);
    append(layout.single_suffix, 0);
  }
  enc.attention_mask.assign(enc.input_ids.size(), 1);
  if (options.max_length > 0 && options.pad_to_max_length && enc.length() < options.max_length) {
    const size_t pad = static_cast<size_t>(options.max_length - enc.length());
    enc.input_ids.insert(enc.input_ids.end(), pad, pad_id());
    enc.attention_mask.insert(enc.attention_mask.end(), pad, 0);
    enc.token_type_ids.insert(enc.token_type_ids.end(), pad, 0);
  }
  return enc;
}

}  // namespace dgpipe::data
