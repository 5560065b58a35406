#include "data/unicode.h"

#include <gtest/gtest.h>

using namespace dgpipe::data::unicode;

TEST(Unicode, Utf8DecodingRejectsIllFormedSequences) {
  std::u32string out;
  size_t bad = 0;
  EXPECT_TRUE(decode_utf8("a\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80", out, &bad));
  EXPECT_EQ(out, (std::u32string{U'a', 0xE9, 0x4E2D, 0x1F600}));
  EXPECT_EQ(to_utf8(out), "a\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80");
  struct Case {
    const char* bytes;
    size_t offset;
  };
  for (const Case& c :
       {Case{"ab\x80", 2}, Case{"\xc0\xaf", 0}, Case{"x\xe0\x80\xaf", 1}, Case{"\xed\xa0\x80", 0},
        Case{"\xf4\x90\x80\x80", 0}, Case{"ok\xe4\xb8", 2}, Case{"\xff", 0}, Case{"a\xc3(", 1}}) {
    EXPECT_FALSE(decode_utf8(c.bytes, out, &bad)) << c.bytes;
    EXPECT_EQ(bad, c.offset) << c.bytes;
    EXPECT_EQ(find_invalid_utf8(c.bytes), c.offset);
  }
  EXPECT_EQ(find_invalid_utf8("fine"), std::string::npos);
}

TEST(Unicode, ClassesDecompositionAndCase) {
  EXPECT_EQ(char_class(U'a'), CharClass::letter);
  EXPECT_EQ(char_class(0x4E2D), CharClass::letter);  // CJK ideograph: Lo
  EXPECT_EQ(char_class(U'7'), CharClass::number);
  EXPECT_EQ(char_class(0x0663), CharClass::number);  // Arabic-Indic three
  EXPECT_EQ(char_class(U','), CharClass::punctuation);
  EXPECT_EQ(char_class(0x2014), CharClass::punctuation);  // em dash
  EXPECT_EQ(char_class(U'$'), CharClass::other);          // Sc, not P
  EXPECT_EQ(char_class(0x0301), CharClass::mark_nonspacing);
  EXPECT_EQ(char_class(0x200B), CharClass::control);  // zero width space: Cf
  EXPECT_EQ(char_class(0x0007), CharClass::control);
  EXPECT_EQ(char_class(0x10FFFF), CharClass::control);  // unassigned (Cn)
  EXPECT_TRUE(is_white_space(0x3000));
  EXPECT_TRUE(is_white_space(0x85));
  EXPECT_FALSE(is_white_space(0x200B));
  EXPECT_EQ(nfd(U"\u00e9"), U"e\u0301");
  EXPECT_EQ(nfd(U"\u1e69"), U"s\u0323\u0307");  // s with dot below and dot above: marks in canonical order
  EXPECT_EQ(nfd(U"s\u0307\u0323"), U"s\u0323\u0307");  // reordered by combining class
  EXPECT_EQ(nfd(U"\uac01"), U"\u1100\u1161\u11a8");    // Hangul, arithmetically
  std::u32string low;
  for (char32_t c : std::u32string(U"AÉΣİ")) append_lowercase(c, low);
  EXPECT_EQ(low, U"aéσi\u0307");
}
