// The loader: seeded shuffling, batches built by worker threads ahead of the consumer (prefetch), delivered
// in a fixed order, optional drop-last, a known number of batches per epoch, and a clean stop at any time.
//
// What a batch holds is decided by a BatchSource (images with transforms, or tokenised text); the loader only
// decides which indices go together and runs the sources' collate() on its workers. Batches are identical for
// a given (seed, epoch) whatever the number of workers.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/tokenizer.h"
#include "data/transforms.h"

namespace dgpipe::data {

// Allocates a host tensor for a batch. HOOK(pinned memory): when `pinned` is true and the CUDA backend offers
// page-locked host allocation, it belongs here so host->device copies can be asynchronous; today every batch
// tensor is ordinary (aligned) CPU memory.
engine::Tensor allocate_batch_tensor(const engine::Shape& shape, engine::DType dtype, bool pinned);

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual int64_t size() const = 0;
  // Builds the batch of `indices`. seed/epoch key each sample's random stream. Must be safe to call
  // concurrently.
  virtual Batch collate(const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch,
                        bool pinned) const = 0;
};

// Images: decode, transform (seeded per sample), normalise into images f32 [B,3,H,W]; labels i64 [B].
// Every sample must come out of the transforms with the same size.
class ImageBatchSource : public BatchSource {
 public:
  ImageBatchSource(std::shared_ptr<const ImageDataset> dataset, Compose transforms, Normalize normalize);
  int64_t size() const override { return dataset_->size(); }
  Batch collate(const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch,
                bool pinned) const override;

 private:
  std::shared_ptr<const ImageDataset> dataset_;
  Compose transforms_;
  Normalize normalize_;
};

// Text: tokenise each example (or pair) into input_ids / attention_mask / token_type_ids i64 [B,L]; labels
// i64 [B]. With options.pad_to_max_length, L = max_length; otherwise rows are padded to the longest in the
// batch.
class TextBatchSource : public BatchSource {
 public:
  TextBatchSource(std::shared_ptr<const TextDataset> dataset, std::shared_ptr<const Tokenizer> tokenizer,
                  EncodeOptions options);
  int64_t size() const override { return dataset_->size(); }
  Batch collate(const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch,
                bool pinned) const override;

 private:
  std::shared_ptr<const TextDataset> dataset_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  EncodeOptions options_;
};

struct LoaderOptions {
  int64_t batch_size = 32;
  bool shuffle = true;
  bool drop_last = false;    // drop the last batch when it is smaller than batch_size
  int num_workers = 2;       // 0: batches are built in the consumer's thread, on demand
  int prefetch_batches = 2;  // per worker: how many finished batches may wait for the consumer
  uint64_t seed = 0;         // the run seed: shuffling and augmentation
  bool pin_memory = false;   // see allocate_batch_tensor
};

class Loader {
 public:
  Loader(std::shared_ptr<const BatchSource> source, LoaderOptions options);
  ~Loader();  // stops the workers (finishing at most the batch each one is building) and joins them
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t num_batches() const;  // per epoch
  int64_t num_samples() const { return source_->size(); }
  const LoaderOptions& options() const { return options_; }

  // The order of dataset indices in `epoch` (a seeded permutation, or 0..N-1 without shuffle).
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  // Starts an epoch (stopping one still running) and its workers.
  void start_epoch(int64_t epoch);
  // The next batch of the running epoch, in order; false once the epoch is exhausted. Rethrows the error of a
  // batch that failed to build (the epoch is then stopped).
  bool next(Batch& batch);
  // Stops the running epoch's workers now. Safe to call at any time, and more than once.
  void stop();

  // Range-for over one epoch:  for (Batch& b : loader.epoch(3)) { ... }
  class Iterator {
   public:
    Iterator(Loader* loader, bool end);
    Batch& operator*() { return batch_; }
    Batch* operator->() { return &batch_; }
    Iterator& operator++();
    bool operator!=(const Iterator& other) const { return done_ != other.done_; }

   private:
    Loader* loader_;
    bool done_;
    Batch batch_;
  };
  class EpochRange {
   public:
    EpochRange(Loader* loader, int64_t epoch) : loader_(loader) { loader_->start_epoch(epoch); }
    Iterator begin() { return Iterator(loader_, false); }
    Iterator end() { return Iterator(loader_, true); }

   private:
    Loader* loader_;
  };
  EpochRange epoch(int64_t epoch) { return EpochRange(this, epoch); }

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };
  void worker_loop();

  std::shared_ptr<const BatchSource> source_;
  LoaderOptions options_;
  // State of the running epoch, guarded by mutex_.
  std::mutex mutex_;
  std::condition_variable produced_, consumed_;
  std::vector<std::vector<int64_t>> batches_;
  int64_t epoch_ = -1;
  int64_t next_to_claim_ = 0;
  int64_t next_to_deliver_ = 0;
  std::map<int64_t, Slot> ready_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace dgpipe::data
