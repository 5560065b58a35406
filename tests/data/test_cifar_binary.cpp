#include "data/cifar_binary.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "data_test_paths.h"
#include "engine/error.h"
#include "support/test_util.h"

using namespace dgpipe::data;
using dgpipe::engine::Error;
using namespace dgpipe::testing;

namespace {

// Record r's pixel at (channel c, row y, column x) is a function of all four, so any layout mix-up shows.
uint8_t pattern(int r, int c, int y, int x) {
  return static_cast<uint8_t>(r * 31 + c * 80 + y * 7 + x * 3);
}

std::vector<uint8_t> planar_pixels(int records) {
  std::vector<uint8_t> px;
  for (int r = 0; r < records; ++r) {
    for (int c = 0; c < 3; ++c) {
      for (int y = 0; y < 32; ++y) {
        for (int x = 0; x < 32; ++x) px.push_back(pattern(r, c, y, x));
      }
    }
  }
  return px;
}

}  // namespace

TEST(CifarBinary, ReadsTheOfficialCifar10Layout) {
  ScratchDir dir;
  std::filesystem::create_directories(dir / "cifar-10-batches-bin");
  // Written by hand (not with write_cifar_binary) so the reader is checked against the format, not against
  // itself.
  for (int file = 1; file <= 5; ++file) {
    std::ofstream out(dir / ("cifar-10-batches-bin/data_batch_" + std::to_string(file) + ".bin"),
                      std::ios::binary);
    for (int r = 0; r < 3; ++r) {
      const int global = (file - 1) * 3 + r;
      out.put(static_cast<char>(global % 10));
      for (int c = 0; c < 3; ++c) {
        for (int i = 0; i < 1024; ++i) out.put(static_cast<char>(pattern(global, c, i / 32, i % 32)));
      }
    }
  }
  CifarBinaryDataset train = CifarBinaryDataset::cifar10(dir.str(), true);
  ASSERT_EQ(train.size(), 15);
  EXPECT_EQ(train.num_classes(), 10);
  EXPECT_EQ(train.classes()[0], "airplane");
  EXPECT_EQ(train.classes()[9], "truck");
  for (int r = 0; r < 15; ++r) {
    EXPECT_EQ(train.label(r), r % 10);
    const auto img = train.image(r);
    ASSERT_EQ(img.height, 32);
    ASSERT_EQ(img.channels, 3);
    for (int y : {0, 5, 31}) {
      for (int x : {0, 17, 31}) {
        for (int c = 0; c < 3; ++c)
          ASSERT_EQ(img.at(y, x, c), pattern(r, c, y, x)) << r << " " << y << " " << x;
      }
    }
  }
  EXPECT_NE(train.describe(7).find("data_batch_3.bin record 1"), std::string::npos) << train.describe(7);
  EXPECT_THROW(train.image(15), Error);
  // The test split is a different file: absent here, and the error names it.
  const std::string msg = error_of([&] { CifarBinaryDataset::cifar10(dir.str(), false); });
  EXPECT_NE(msg.find("test_batch.bin"), std::string::npos) << msg;
}

TEST(CifarBinary, Cifar100FineAndCoarseLabels) {
  ScratchDir dir;
  const std::vector<int64_t> fine = {99, 0, 42}, coarse = {19, 0, 7};
  write_cifar_binary(dir / "train.bin", CifarKind::cifar100_fine, planar_pixels(3), fine, coarse);
  EXPECT_EQ(std::filesystem::file_size(dir / "train.bin"), 3u * (2 + 3072));
  auto fine_ds = CifarBinaryDataset::cifar100(dir.str(), true, true);
  auto coarse_ds = CifarBinaryDataset::cifar100(dir.str(), true, false);
  EXPECT_EQ(fine_ds.num_classes(), 100);
  EXPECT_EQ(coarse_ds.num_classes(), 20);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(fine_ds.label(r), fine[r]);
    EXPECT_EQ(coarse_ds.label(r), coarse[r]);
    EXPECT_EQ(fine_ds.image(r).at(3, 4, 2), pattern(r, 2, 3, 4));
  }
}

TEST(CifarBinary, TruncatedFileAndBadLabelsAreNamed) {
  ScratchDir dir;
  write_cifar_binary(dir / "data.bin", CifarKind::cifar10, planar_pixels(2), {3, 4});
  std::filesystem::resize_file(dir / "data.bin", 2 * 3073 - 100);
  std::string msg = error_of([&] { CifarBinaryDataset({dir / "data.bin"}, CifarKind::cifar10); });
  EXPECT_NE(msg.find("data.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("record 1 is truncated"), std::string::npos) << msg;

  write_cifar_binary(dir / "labels.bin", CifarKind::cifar10, planar_pixels(3), {1, 2, 3});
  {
    std::fstream f(dir / "labels.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(2 * 3073);
    f.put(static_cast<char>(12));  // record 2's label
  }
  msg = error_of([&] { CifarBinaryDataset({dir / "labels.bin"}, CifarKind::cifar10); });
  EXPECT_NE(msg.find("labels.bin record 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("label 12"), std::string::npos) << msg;

  { std::ofstream(dir / "empty.bin"); }
  msg = error_of([&] { CifarBinaryDataset({dir / "empty.bin"}, CifarKind::cifar10); });
  EXPECT_NE(msg.find("empty.bin is empty"), std::string::npos) << msg;
  msg = error_of([&] { CifarBinaryDataset({dir / "nope.bin"}, CifarKind::cifar10); });
  EXPECT_NE(msg.find("nope.bin"), std::string::npos) << msg;
}
