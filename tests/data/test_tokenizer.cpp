#include "data/tokenizer.h"

#include <gtest/gtest.h>

#include "engine/error.h"

using dgpipe::data::truncate_longest_first;
using V = std::vector<int64_t>;

namespace {

std::pair<size_t, size_t> truncated(size_t a, size_t b, int64_t budget) {
  V va(a, 1), vb(b, 2);
  truncate_longest_first(va, &vb, budget);
  return {va.size(), vb.size()};
}

}  // namespace

TEST(Tokenizer, LongestFirstTruncationAsHuggingFace) {
  using P = std::pair<size_t, size_t>;
  EXPECT_EQ(truncated(3, 4, 10), (P{3, 4}));   // fits
  EXPECT_EQ(truncated(3, 20, 10), (P{3, 7}));  // only the longer is cut
  EXPECT_EQ(truncated(20, 3, 10), (P{7, 3}));
  EXPECT_EQ(truncated(8, 9, 10), (P{5, 5}));  // both cut to half
  EXPECT_EQ(truncated(9, 8, 11), (P{6, 5}));  // the odd token goes to the longer text
  EXPECT_EQ(truncated(8, 9, 11), (P{5, 6}));
  EXPECT_EQ(truncated(9, 9, 11), (P{5, 6}));  // a tie: the second
  EXPECT_EQ(truncated(30, 40, 7), (P{3, 4}));
  EXPECT_EQ(truncated(5, 5, 0), (P{0, 0}));
  V single(9, 1);
  truncate_longest_first(single, nullptr, 4);
  EXPECT_EQ(single.size(), 4u);
  EXPECT_THROW(truncate_longest_first(single, nullptr, -1), dgpipe::engine::Error);
}
