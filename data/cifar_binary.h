// CIFAR-10 and CIFAR-100 in their official binary layout.
//   CIFAR-10  (data_batch_1..5.bin, test_batch.bin): records of 1 label byte + 3072 pixel bytes.
//   CIFAR-100 (train.bin, test.bin):                records of coarse label byte + fine label byte + 3072
//   bytes.
// Pixels are planar: 1024 red (row-major 32x32), then 1024 green, then 1024 blue.
#pragma once
#include <string>
#include <vector>

#include "data/dataset.h"

namespace dgpipe::data {

enum class CifarKind { cifar10, cifar100_fine, cifar100_coarse };

class CifarBinaryDataset : public ImageDataset {
 public:
  // Reads every record of the files into memory. Throws naming the file for a missing file, a size that is
  // not a whole number of records (naming the truncated record) or a label outside the class range (naming
  // the record).
  CifarBinaryDataset(const std::vector<std::string>& files, CifarKind kind);
  // The official file names under `dir` (cifar-10-batches-bin/ or cifar-100-binary/, or their contents).
  static CifarBinaryDataset cifar10(const std::string& dir, bool train);
  static CifarBinaryDataset cifar100(const std::string& dir, bool train, bool fine_labels = true);

  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  Image image(int64_t index) const override;
  int64_t label(int64_t index) const override;
  const std::vector<std::string>& classes() const override { return classes_; }
  std::string describe(int64_t index) const override;

  static constexpr int64_t kPixelBytes = 3 * 32 * 32;
  static int64_t record_bytes(CifarKind kind) {
    return kind == CifarKind::cifar10 ? 1 + kPixelBytes : 2 + kPixelBytes;
  }

 private:
  CifarKind kind_;
  std::vector<std::string> files_;
  std::vector<int64_t> file_first_index_;  // index of each file's first record
  std::vector<uint8_t> pixels_;            // planar 3x32x32 per record, records back to back
  std::vector<int64_t> labels_;
  std::vector<std::string> classes_;
};

// Writes records in the official layout (for tests and tools). pixels: planar 3072 bytes per record.
void write_cifar_binary(const std::string& path, CifarKind kind, const std::vector<uint8_t>& pixels,
                        const std::vector<int64_t>& labels, const std::vector<int64_t>& coarse_labels = {});

}  // namespace dgpipe::data
