#include "data/image_folder.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>

#include "data/text_file.h"
#include "engine/error.h"

namespace fs = std::filesystem;

namespace dgpipe::data {

bool has_image_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

ImageFolderDataset::ImageFolderDataset(const std::string& root, ImageFolderOptions options) : root_(root) {
  DGP_CHECK(fs::is_directory(root), "image folder: '" << root << "' is not a directory");
  for (const auto& entry : fs::directory_iterator(root)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && name[0] != '.') classes_.push_back(name);
  }
  DGP_CHECK(!classes_.empty(),
            "image folder: '" << root << "' has no class sub-folders (expected root/<class>/*.jpg)");
  std::sort(classes_.begin(), classes_.end());
  for (size_t label = 0; label < classes_.size(); ++label) {
    const fs::path class_dir = fs::path(root) / classes_[label];
    std::vector<std::string> found;
    for (const auto& entry :
         fs::recursive_directory_iterator(class_dir, fs::directory_options::follow_directory_symlink)) {
      if (!entry.is_regular_file()) continue;
      const std::string name = entry.path().filename().string();
      if (name[0] == '.') continue;
      if (!has_image_extension(name)) {
        DGP_CHECK(options.skip_non_image_files,
                  "image folder: '"
                      << entry.path().string()
                      << "' is not an image file (.jpg/.jpeg/.png); remove it or set skip_non_image_files");
        continue;
      }
      found.push_back(entry.path().string());
    }
    DGP_CHECK(!found.empty(), "image folder: class folder '" << class_dir.string() << "' has no images");
    std::sort(found.begin(), found.end());
    files_.insert(files_.end(), found.begin(), found.end());
    labels_.insert(labels_.end(), found.size(), static_cast<int64_t>(label));
  }
}

ImageFolderDataset ImageFolderDataset::food101(const std::string& root, bool train) {
  const std::string who = "food101";
  ImageFolderDataset ds;
  ds.root_ = root + "/images";
  const std::string classes_file = root + "/meta/classes.txt";
  for (const std::string& line : read_utf8_lines(classes_file, who)) {
    if (!line.empty()) ds.classes_.push_back(line);
  }
  DGP_CHECK(!ds.classes_.empty(), who << ": " << classes_file << " lists no classes");
  std::vector<std::string> sorted = ds.classes_;
  std::sort(sorted.begin(), sorted.end());
  ds.classes_ = sorted;  // sorted by name, the same order as the image-folder reading of images/
  const std::string list_file = root + (train ? "/meta/train.txt" : "/meta/test.txt");
  const std::vector<std::string> lines = read_utf8_lines(list_file, who);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    const size_t slash = lines[i].find('/');
    DGP_CHECK(slash != std::string::npos && slash > 0 && slash + 1 < lines[i].size(),
              who << ": " << list_file << ":" << i + 1 << ": expected '<class>/<image id>', got '" << lines[i]
                  << "'");
    const std::string cls = lines[i].substr(0, slash);
    auto it = std::lower_bound(sorted.begin(), sorted.end(), cls);
    DGP_CHECK(it != sorted.end() && *it == cls, who << ": " << list_file << ":" << i + 1 << ": class '" << cls
                                                    << "' is not in " << classes_file);
    const std::string path = ds.root_ + "/" + lines[i] + ".jpg";
    DGP_CHECK(fs::is_regular_file(path),
              who << ": " << list_file << ":" << i + 1 << ": image '" << path << "' does not exist");
    ds.files_.push_back(path);
    ds.labels_.push_back(it - sorted.begin());
  }
  DGP_CHECK(!ds.files_.empty(), who << ": " << list_file << " lists no images");
  return ds;
}

const std::string& ImageFolderDataset::path(int64_t index) const {
  DGP_CHECK(index >= 0 && index < size(), "image folder: index " << index << " outside 0.." << size() - 1);
  return files_[static_cast<size_t>(index)];
}

Image ImageFolderDataset::image(int64_t index) const {
  return load_image(path(index));
}

int64_t ImageFolderDataset::label(int64_t index) const {
  DGP_CHECK(index >= 0 && index < size(), "image folder: index " << index << " outside 0.." << size() - 1);
  return labels_[static_cast<size_t>(index)];
}

void ImageFolderDataset::verify_all(int threads) const {
  std::atomic<int64_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr first_error;
  int64_t first_error_index = size();
  auto work = [&] {
    for (int64_t i = next++; i < size(); i = next++) {
      try {
        image(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (i < first_error_index) {
          first_error_index = i;
          first_error = std::current_exception();
        }
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(1, threads); ++t) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace dgpipe::data
