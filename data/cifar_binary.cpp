#include "data/cifar_binary.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "data/text_file.h"
#include "engine/error.h"

namespace dgpipe::data {
namespace {

const std::vector<std::string> kCifar10Classes = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                  "dog",      "frog",       "horse", "ship", "truck"};

std::vector<std::string> numbered_classes(int n) {
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) names.push_back(std::to_string(i));
  return names;
}

// CIFAR-100 ships its label names next to the data (fine_label_names.txt / coarse_label_names.txt).
std::vector<std::string> cifar100_classes(const std::string& data_file, bool fine) {
  const auto names_file = std::filesystem::path(data_file).parent_path() /
                          (fine ? "fine_label_names.txt" : "coarse_label_names.txt");
  const int expected = fine ? 100 : 20;
  if (std::filesystem::is_regular_file(names_file)) {
    std::vector<std::string> names;
    for (const std::string& line : read_utf8_lines(names_file.string(), "cifar")) {
      if (!line.empty()) names.push_back(line);
    }
    if (static_cast<int>(names.size()) == expected) return names;
  }
  return numbered_classes(expected);
}

std::string first_existing_dir(const std::string& dir, const std::string& sub) {
  const auto nested = std::filesystem::path(dir) / sub;
  return std::filesystem::is_directory(nested) ? nested.string() : dir;
}

}  // namespace

CifarBinaryDataset::CifarBinaryDataset(const std::vector<std::string>& files, CifarKind kind)
    : kind_(kind), files_(files) {
  DGP_CHECK(!files.empty(), "cifar: no files given");
  const int64_t record = record_bytes(kind);
  const int64_t num_classes = kind == CifarKind::cifar10 ? 10 : kind == CifarKind::cifar100_fine ? 100 : 20;
  classes_ = kind == CifarKind::cifar10 ? kCifar10Classes
                                        : cifar100_classes(files.front(), kind == CifarKind::cifar100_fine);
  for (const std::string& file : files) {
    const std::string bytes = read_file_bytes(file, "cifar");
    const int64_t n = static_cast<int64_t>(bytes.size());
    DGP_CHECK(n > 0, "cifar: " << file << " is empty");
    DGP_CHECK(n % record == 0, "cifar: " << file << " has " << n << " bytes, not a whole number of " << record
                                         << "-byte records: record " << n / record << " is truncated ("
                                         << n % record << " of " << record << " bytes)");
    file_first_index_.push_back(static_cast<int64_t>(labels_.size()));
    const int64_t count = n / record;
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
    pixels_.reserve(pixels_.size() + static_cast<size_t>(count * kPixelBytes));
    for (int64_t r = 0; r < count; ++r) {
      const uint8_t* rec = p + r * record;
      const int64_t lab = kind == CifarKind::cifar10         ? rec[0]
                          : kind == CifarKind::cifar100_fine ? rec[1]
                                                             : rec[0];
      DGP_CHECK(lab < num_classes, "cifar: " << file << " record " << r << " (byte offset " << r * record
                                             << ") has label " << lab << ", outside 0.." << num_classes - 1);
      labels_.push_back(lab);
      const uint8_t* px = rec + (record - kPixelBytes);
      pixels_.insert(pixels_.end(), px, px + kPixelBytes);
    }
  }
}

CifarBinaryDataset CifarBinaryDataset::cifar10(const std::string& dir, bool train) {
  const std::string base = first_existing_dir(dir, "cifar-10-batches-bin");
  std::vector<std::string> files;
  if (train) {
    for (int i = 1; i <= 5; ++i) files.push_back(base + "/data_batch_" + std::to_string(i) + ".bin");
  } else {
    files.push_back(base + "/test_batch.bin");
  }
  return CifarBinaryDataset(files, CifarKind::cifar10);
}

CifarBinaryDataset CifarBinaryDataset::cifar100(const std::string& dir, bool train, bool fine_labels) {
  const std::string base = first_existing_dir(dir, "cifar-100-binary");
  return CifarBinaryDataset({base + (train ? "/train.bin" : "/test.bin")},
                            fine_labels ? CifarKind::cifar100_fine : CifarKind::cifar100_coarse);
}

Image CifarBinaryDataset::image(int64_t index) const {
  DGP_CHECK(index >= 0 && index < size(), "cifar: index " << index << " outside 0.." << size() - 1);
  Image img(32, 32, 3);
  const uint8_t* planes = pixels_.data() + index * kPixelBytes;
  for (int64_t c = 0; c < 3; ++c) {
    for (int64_t i = 0; i < 1024; ++i) img.pixels[static_cast<size_t>(i * 3 + c)] = planes[c * 1024 + i];
  }
  return img;
}

int64_t CifarBinaryDataset::label(int64_t index) const {
  DGP_CHECK(index >= 0 && index < size(), "cifar: index " << index << " outside 0.." << size() - 1);
  return labels_[static_cast<size_t>(index)];
}

std::string CifarBinaryDataset::describe(int64_t index) const {
  auto it = std::upper_bound(file_first_index_.begin(), file_first_index_.end(), index);
  const size_t file = static_cast<size_t>(it - file_first_index_.begin()) - 1;
  return files_[file] + " record " + std::to_string(index - file_first_index_[file]);
}

void write_cifar_binary(const std::string& path, CifarKind kind, const std::vector<uint8_t>& pixels,
                        const std::vector<int64_t>& labels, const std::vector<int64_t>& coarse_labels) {
  const int64_t px = CifarBinaryDataset::kPixelBytes;
  DGP_CHECK(static_cast<int64_t>(pixels.size()) == static_cast<int64_t>(labels.size()) * px,
            "write_cifar_binary: " << pixels.size() << " pixel bytes for " << labels.size() << " labels");
  std::ofstream out(path, std::ios::binary);
  DGP_CHECK(out.good(), "write_cifar_binary: cannot create '" << path << "'");
  for (size_t r = 0; r < labels.size(); ++r) {
    if (kind == CifarKind::cifar10) {
      out.put(static_cast<char>(labels[r]));
    } else {
      const int64_t coarse = coarse_labels.empty() ? 0 : coarse_labels[r];
      out.put(static_cast<char>(coarse));
      out.put(static_cast<char>(labels[r]));
    }
    out.write(reinterpret_cast<const char*>(pixels.data() + r * px), px);
  }
  DGP_CHECK(out.good(), "write_cifar_binary: error writing '" << path << "'");
}

}  // namespace dgpipe::data
