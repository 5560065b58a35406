#include "data/unicode.h"

#include <algorithm>
#include <iterator>

namespace dgpipe::data::unicode {
namespace {

struct ClassRange {
  uint32_t first, last;
  uint8_t cls;
};
struct Decomposition {
  uint32_t code;
  uint8_t length;
  uint32_t parts[4];
};
struct CombiningClass {
  uint32_t code;
  uint8_t ccc;
};
struct LowercaseMapping {
  uint32_t code;
  uint8_t length;
  uint32_t parts[3];
};

#include "data/unicode_tables.inc"

// Hangul syllables decompose arithmetically (Unicode §3.12) rather than through the table.
constexpr char32_t kHangulBase = 0xAC00, kLeadBase = 0x1100, kVowelBase = 0x1161, kTrailBase = 0x11A7;
constexpr int kVowelCount = 21, kTrailCount = 28, kSyllableCount = 11172;

// The entry for code point `c` in a table sorted by code, or null when the table has none.
template <class Entry, size_t N>
const Entry* find_entry(const Entry (&table)[N], char32_t c) {
  const Entry* it = std::lower_bound(std::begin(table), std::end(table), c,
                                     [](const Entry& e, char32_t v) { return e.code < v; });
  return it != std::end(table) && it->code == c ? it : nullptr;
}

// Appends what `table` maps `c` to (the entry's parts), or `c` itself when the table does not map it.
template <class Entry, size_t N>
void append_mapped(const Entry (&table)[N], char32_t c, std::u32string& out) {
  if (const Entry* e = find_entry(table, c))
    out.append(e->parts, e->parts + e->length);
  else
    out.push_back(c);
}

uint8_t combining_class(char32_t c) {
  if (c < 0x300) return 0;
  const CombiningClass* e = find_entry(kCombiningClasses, c);
  return e ? e->ccc : 0;
}

}  // namespace

CharClass char_class(char32_t c) {
  auto it = std::upper_bound(std::begin(kClassRanges), std::end(kClassRanges), c,
                             [](char32_t v, const ClassRange& r) { return v < r.first; });
  if (it == std::begin(kClassRanges)) return CharClass::other;
  --it;
  return c <= it->last ? static_cast<CharClass>(it->cls) : CharClass::other;
}

bool is_white_space(char32_t c) {
  switch (c) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

bool decode_utf8(std::string_view text, std::u32string& out, size_t* bad_offset) {
  out.clear();
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  auto fail = [&](size_t at) {
    if (bad_offset) *bad_offset = at;
    return false;
  };
  while (i < n) {
    unsigned char b = s[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    int extra;
    char32_t cp, min_value;
    if ((b & 0xE0) == 0xC0) {
      extra = 1, cp = b & 0x1F, min_value = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
      extra = 2, cp = b & 0x0F, min_value = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
      extra = 3, cp = b & 0x07, min_value = 0x10000;
    } else {
      return fail(i);
    }
    for (int k = 1; k <= extra; ++k) {
      if (i + k >= n || (s[i + k] & 0xC0) != 0x80) return fail(i);
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min_value || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return fail(i);
    out.push_back(cp);
    i += extra + 1;
  }
  return true;
}

size_t find_invalid_utf8(std::string_view text) {
  std::u32string scratch;
  size_t bad = std::string::npos;
  if (decode_utf8(text, scratch, &bad)) return std::string::npos;
  return bad;
}

void append_utf8(char32_t c, std::string& out) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string to_utf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) append_utf8(c, out);
  return out;
}

std::u32string nfd(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c < 0xC0) {  // nothing below U+00C0 decomposes
      out.push_back(c);
      continue;
    }
    if (c >= kHangulBase && c < kHangulBase + kSyllableCount) {
      const int index = static_cast<int>(c - kHangulBase);
      out.push_back(kLeadBase + index / (kVowelCount * kTrailCount));
      out.push_back(kVowelBase + (index % (kVowelCount * kTrailCount)) / kTrailCount);
      if (index % kTrailCount != 0) out.push_back(kTrailBase + index % kTrailCount);
      continue;
    }
    append_mapped(kDecompositions, c, out);
  }
  // Canonical ordering: a stable sort of each run of non-starters by combining class.
  size_t i = 0;
  while (i < out.size()) {
    if (combining_class(out[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < out.size() && combining_class(out[j]) != 0) ++j;
    std::stable_sort(out.begin() + i, out.begin() + j,
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  return out;
}

void append_lowercase(char32_t c, std::u32string& out) {
  if (c < 0x80) {
    out.push_back((c >= 'A' && c <= 'Z') ? c + 32 : c);
    return;
  }
  append_mapped(kLowercase, c, out);
}

}  // namespace dgpipe::data::unicode
