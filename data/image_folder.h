// Image folders: root/<class>/**/<image>.{jpg,jpeg,png}, as torchvision's ImageFolder reads them — classes
// are the sub-folders of root sorted by name (class i = i-th name), files sorted within each class. Images
// are decoded on demand (in the loader's workers) with stb_image. Also Food-101's layout
// (images/<class>/<id>.jpg with meta/{classes,train,test}.txt).
#pragma once
#include <string>
#include <vector>

#include "data/dataset.h"

namespace dgpipe::data {

struct ImageFolderOptions {
  // A file without an image extension inside a class folder is an error (it is usually a mistake: a stray
  // archive, a half-extracted copy). Set to skip such files instead. Hidden files (".name") are always
  // skipped.
  bool skip_non_image_files = false;
};

class ImageFolderDataset : public ImageDataset {
 public:
  // Scans the folder. Throws naming the path for a missing root, a root without class folders, an empty class
  // folder, or (by default) a non-image file.
  explicit ImageFolderDataset(const std::string& root, ImageFolderOptions options = {});
  // Food-101: root/meta/classes.txt, root/meta/{train,test}.txt ("class/id" lines),
  // root/images/<class>/<id>.jpg.
  static ImageFolderDataset food101(const std::string& root, bool train);

  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  Image image(int64_t index) const override;  // throws naming the file when it is not a readable image
  int64_t label(int64_t index) const override;
  const std::vector<std::string>& classes() const override { return classes_; }
  std::string describe(int64_t index) const override { return path(index); }
  const std::string& path(int64_t index) const;
  // Decodes every image on `threads` threads; throws naming the first unreadable file. For data preparation.
  void verify_all(int threads = 4) const;

 private:
  ImageFolderDataset() = default;
  std::string root_;
  std::vector<std::string> classes_;
  std::vector<std::string> files_;
  std::vector<int64_t> labels_;
};

// True for the extensions image folders read: .jpg .jpeg .png (any case).
bool has_image_extension(const std::string& path);

}  // namespace dgpipe::data
