#include "data/text_file.h"

#include <gtest/gtest.h>

#include <fstream>

#include "data_test_paths.h"
#include "engine/error.h"

using namespace dgpipe::data;
using dgpipe::testing::ScratchDir;

TEST(TextFile, LinesSplitAndValidated) {
  ScratchDir dir;
  std::ofstream(dir / "a.txt", std::ios::binary) << "one\r\ntwo\n\nthree";
  EXPECT_EQ(read_utf8_lines(dir / "a.txt", "test"), (std::vector<std::string>{"one", "two", "", "three"}));
  std::ofstream(dir / "b.txt", std::ios::binary) << "ok\nstill ok\nbad \xc3\n";
  try {
    read_utf8_lines(dir / "b.txt", "reader");
    FAIL() << "expected an error";
  } catch (const dgpipe::engine::Error& e) {
    EXPECT_NE(std::string(e.what()).find("reader: " + (dir / "b.txt") + ":3: invalid UTF-8 at byte 4"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(read_file_bytes(dir / "none.txt", "reader"), dgpipe::engine::Error);
  EXPECT_EQ(split_fields("a\t\tb\t", '\t'), (std::vector<std::string>{"a", "", "b", ""}));
}
