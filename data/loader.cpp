#include "data/loader.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "engine/error.h"

namespace dgpipe::data {

// Stream ids that keep shuffling and augmentation draws apart.
constexpr uint64_t kShuffleStream = 0x5348554646ull;  // "SHUFF"
constexpr uint64_t kAugmentStream = 0x415547ull;      // "AUG"

engine::Tensor allocate_batch_tensor(const engine::Shape& shape, engine::DType dtype, bool pinned) {
  // HOOK(pinned memory): return engine::cuda::empty_pinned(shape, dtype) here when `pinned` and a CUDA device
  // is available, once the CUDA backend provides it. Until then `pinned` only records the intent.
  (void)pinned;
  return engine::empty(shape, engine::TensorOptions(dtype));
}

// ---------------------------------------------------------------------------------------------------------------
ImageBatchSource::ImageBatchSource(std::shared_ptr<const ImageDataset> dataset, Compose transforms,
                                   Normalize normalize)
    : dataset_(std::move(dataset)), transforms_(std::move(transforms)), normalize_(normalize) {
  DGP_CHECK(dataset_ != nullptr, "ImageBatchSource: null dataset");
}

Batch ImageBatchSource::collate(const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch,
                                bool pinned) const {
  DGP_CHECK(!indices.empty(), "ImageBatchSource::collate: empty batch");
  Batch batch;
  batch.indices = indices;
  const int64_t b = static_cast<int64_t>(indices.size());
  batch.labels = allocate_batch_tensor({b}, engine::DType::i64, pinned);
  int64_t* labels = batch.labels.data<int64_t>();
  int64_t height = 0, width = 0;
  float* images = nullptr;
  for (int64_t row = 0; row < b; ++row) {
    const int64_t index = indices[static_cast<size_t>(row)];
    Image image = dataset_->image(index);
    SampleRng rng(seed, kAugmentStream, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index));
    transforms_(image, rng);
    if (row == 0) {
      height = image.height, width = image.width;
      batch.images = allocate_batch_tensor({b, 3, height, width}, engine::DType::f32, pinned);
      images = batch.images.data<float>();
    }
    DGP_CHECK(image.height == height && image.width == width && image.channels == 3,
              "collate: " << dataset_->describe(index) << " is " << image.height << "x" << image.width << "x"
                          << image.channels << " after the transforms but " << dataset_->describe(indices[0])
                          << " is " << height << "x" << width
                          << "x3; add a resize or crop so every image has one size");
    normalize_.apply(image, images + row * 3 * height * width);
    labels[row] = dataset_->label(index);
  }
  return batch;
}

// ---------------------------------------------------------------------------------------------------------------
TextBatchSource::TextBatchSource(std::shared_ptr<const TextDataset> dataset,
                                 std::shared_ptr<const Tokenizer> tokenizer, EncodeOptions options)
    : dataset_(std::move(dataset)), tokenizer_(std::move(tokenizer)), options_(options) {
  DGP_CHECK(dataset_ != nullptr && tokenizer_ != nullptr, "TextBatchSource: null dataset or tokenizer");
}

Batch TextBatchSource::collate(const std::vector<int64_t>& indices, uint64_t, int64_t, bool pinned) const {
  DGP_CHECK(!indices.empty(), "TextBatchSource::collate: empty batch");
  Batch batch;
  batch.indices = indices;
  const int64_t b = static_cast<int64_t>(indices.size());
  std::vector<Encoding> encodings;
  encodings.reserve(indices.size());
  int64_t length = 0;
  for (int64_t index : indices) {
    const TextExample& ex = dataset_->example(index);
    try {
      encodings.push_back(ex.text_b ? tokenizer_->encode(ex.text_a, std::string_view(*ex.text_b), options_)
                                    : tokenizer_->encode(ex.text_a, std::nullopt, options_));
    } catch (const engine::Error& e) {
      DGP_FAIL(dataset_->describe(index) << ": " << e.what());
    }
    length = std::max(length, encodings.back().length());
  }
  batch.input_ids = allocate_batch_tensor({b, length}, engine::DType::i64, pinned);
  batch.attention_mask = allocate_batch_tensor({b, length}, engine::DType::i64, pinned);
  batch.token_type_ids = allocate_batch_tensor({b, length}, engine::DType::i64, pinned);
  batch.labels = allocate_batch_tensor({b}, engine::DType::i64, pinned);
  int64_t* ids = batch.input_ids.data<int64_t>();
  int64_t* mask = batch.attention_mask.data<int64_t>();
  int64_t* types = batch.token_type_ids.data<int64_t>();
  for (int64_t row = 0; row < b; ++row) {
    const Encoding& enc = encodings[static_cast<size_t>(row)];
    const int64_t n = enc.length();
    std::copy(enc.input_ids.begin(), enc.input_ids.end(), ids + row * length);
    std::copy(enc.attention_mask.begin(), enc.attention_mask.end(), mask + row * length);
    std::copy(enc.token_type_ids.begin(), enc.token_type_ids.end(), types + row * length);
    std::fill(ids + row * length + n, ids + (row + 1) * length, tokenizer_->pad_id());
    std::fill(mask + row * length + n, mask + (row + 1) * length, 0);
    std::fill(types + row * length + n, types + (row + 1) * length, 0);
    batch.labels.data<int64_t>()[row] = dataset_->example(indices[static_cast<size_t>(row)]).label;
  }
  return batch;
}

// ---------------------------------------------------------------------------------------------------------------
Loader::Loader(std::shared_ptr<const BatchSource> source, LoaderOptions options)
    : source_(std::move(source)), options_(options) {
  DGP_CHECK(source_ != nullptr, "Loader: null batch source");
  DGP_CHECK(options_.batch_size > 0, "Loader: batch_size " << options_.batch_size << " must be positive");
  DGP_CHECK(options_.num_workers >= 0, "Loader: num_workers " << options_.num_workers << " must be >= 0");
  DGP_CHECK(options_.prefetch_batches > 0,
            "Loader: prefetch_batches " << options_.prefetch_batches << " must be positive");
}

Loader::~Loader() {
  stop();
}

int64_t Loader::num_batches() const {
  const int64_t n = source_->size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<int64_t> Loader::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(source_->size()));
  std::iota(order.begin(), order.end(), 0);
  if (options_.shuffle) {
    // Fisher–Yates driven by a counter-based stream of (seed, epoch): the same permutation on every machine.
    SampleRng rng(options_.seed, kShuffleStream, static_cast<uint64_t>(epoch), 0);
    for (int64_t i = static_cast<int64_t>(order.size()) - 1; i > 0; --i) {
      std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(rng.randint(0, i))]);
    }
  }
  return order;
}

void Loader::start_epoch(int64_t epoch) {
  stop();
  const std::vector<int64_t> order = epoch_order(epoch);
  std::vector<std::vector<int64_t>> batches;
  const int64_t nb = num_batches();
  for (int64_t k = 0; k < nb; ++k) {
    const size_t begin = static_cast<size_t>(k * options_.batch_size);
    const size_t end = std::min(order.size(), begin + static_cast<size_t>(options_.batch_size));
    batches.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(begin),
                         order.begin() + static_cast<std::ptrdiff_t>(end));
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    batches_ = std::move(batches);
    epoch_ = epoch;
    next_to_claim_ = 0;
    next_to_deliver_ = 0;
    ready_.clear();
    stopping_ = false;
  }
  for (int w = 0; w < options_.num_workers; ++w) workers_.emplace_back(&Loader::worker_loop, this);
}

void Loader::worker_loop() {
  const int64_t capacity = static_cast<int64_t>(options_.num_workers) * options_.prefetch_batches;
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    // Claim the next batch only while fewer than `capacity` are built ahead of the consumer.
    consumed_.wait(lock, [&] {
      return stopping_ || next_to_claim_ >= static_cast<int64_t>(batches_.size()) ||
             next_to_claim_ < next_to_deliver_ + capacity;
    });
    if (stopping_ || next_to_claim_ >= static_cast<int64_t>(batches_.size())) return;
    const int64_t k = next_to_claim_++;
    const std::vector<int64_t>& indices = batches_[static_cast<size_t>(k)];
    const int64_t epoch = epoch_;
    lock.unlock();
    Slot slot;
    try {
      slot.batch = source_->collate(indices, options_.seed, epoch, options_.pin_memory);
    } catch (...) {
      slot.error = std::current_exception();
    }
    lock.lock();
    ready_[k] = std::move(slot);
    produced_.notify_all();
  }
}

bool Loader::next(Batch& batch) {
  std::unique_lock<std::mutex> lock(mutex_);
  DGP_CHECK(epoch_ >= 0, "Loader::next: call start_epoch() first");
  if (stopping_ || next_to_deliver_ >= static_cast<int64_t>(batches_.size())) {
    lock.unlock();
    stop();  // joins the finished workers
    return false;
  }
  const int64_t k = next_to_deliver_;
  Slot slot;
  if (options_.num_workers == 0) {
    const std::vector<int64_t> indices = batches_[static_cast<size_t>(k)];
    const int64_t epoch = epoch_;
    lock.unlock();
    try {
      slot.batch = source_->collate(indices, options_.seed, epoch, options_.pin_memory);
    } catch (...) {
      slot.error = std::current_exception();
    }
    lock.lock();
  } else {
    produced_.wait(lock, [&] { return ready_.count(k) > 0; });
    slot = std::move(ready_[k]);
    ready_.erase(k);
  }
  ++next_to_deliver_;
  consumed_.notify_all();
  lock.unlock();
  if (slot.error) {
    stop();
    std::rethrow_exception(slot.error);
  }
  batch = std::move(slot.batch);
  return true;
}

void Loader::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  consumed_.notify_all();
  produced_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  std::lock_guard<std::mutex> lock(mutex_);
  ready_.clear();
}

Loader::Iterator::Iterator(Loader* loader, bool end) : loader_(loader), done_(end) {
  if (!done_) done_ = !loader_->next(batch_);
}

Loader::Iterator& Loader::Iterator::operator++() {
  done_ = !loader_->next(batch_);
  return *this;
}

}  // namespace dgpipe::data
