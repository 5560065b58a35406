// What the loader reads from: image datasets (decoded pixels + class label) and text datasets (one text or a
// pair
// + label). Implementations are safe to read from several threads at once.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/image.h"
#include "engine/tensor.h"

namespace dgpipe::data {

class ImageDataset {
 public:
  virtual ~ImageDataset() = default;
  virtual int64_t size() const = 0;
  virtual Image image(int64_t index) const = 0;  // decoded, RGB
  virtual int64_t label(int64_t index) const = 0;
  virtual const std::vector<std::string>& classes() const = 0;
  // Where sample `index` comes from ("path/to/file.jpg", "data_batch_1.bin record 17"), for messages.
  virtual std::string describe(int64_t index) const = 0;
  int64_t num_classes() const { return static_cast<int64_t>(classes().size()); }
};

struct TextExample {
  std::string text_a;
  std::optional<std::string> text_b;  // second sentence of a pair task
  int64_t label = -1;                 // -1 for unlabelled (test) files
};

class TextDataset {
 public:
  virtual ~TextDataset() = default;
  virtual int64_t size() const = 0;
  virtual const TextExample& example(int64_t index) const = 0;
  virtual const std::vector<std::string>& classes() const = 0;
  virtual std::string describe(int64_t index) const = 0;
  int64_t num_classes() const { return static_cast<int64_t>(classes().size()); }
};

// A collated batch. Image batches fill images/labels; text batches fill labels and the three id tensors.
struct Batch {
  std::vector<int64_t> indices;   // dataset index of each row
  engine::Tensor images;          // f32 [B,3,H,W], normalised
  engine::Tensor labels;          // i64 [B]
  engine::Tensor input_ids;       // i64 [B,L]
  engine::Tensor attention_mask;  // i64 [B,L]
  engine::Tensor token_type_ids;  // i64 [B,L]
  int64_t size() const { return static_cast<int64_t>(indices.size()); }
};

}  // namespace dgpipe::data
