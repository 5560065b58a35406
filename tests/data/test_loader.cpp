#include "data/loader.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "data/wordpiece_tokenizer.h"
#include "data_test_paths.h"
#include "engine/error.h"

using namespace dgpipe::data;
using dgpipe::engine::Error;
using dgpipe::engine::Tensor;
using dgpipe::testing::ScratchDir;

namespace {

// 12x10 images whose pixels encode their index; label = index % 3.
class SyntheticImages : public ImageDataset {
 public:
  explicit SyntheticImages(int64_t n) : n_(n), classes_{"a", "b", "c"} {}
  int64_t size() const override { return n_; }
  Image image(int64_t index) const override {
    Image img(12, 10, 3);
    for (size_t k = 0; k < img.pixels.size(); ++k)
      img.pixels[k] = static_cast<uint8_t>((index * 7 + k) % 251);
    return img;
  }
  int64_t label(int64_t index) const override { return index % 3; }
  const std::vector<std::string>& classes() const override { return classes_; }
  std::string describe(int64_t index) const override { return "synthetic #" + std::to_string(index); }

 private:
  int64_t n_;
  std::vector<std::string> classes_;
};

// A source that records what it built: how many batches, which storages (to prove none outlives the loader),
// and optionally sleeps or fails on one index.
class RecordingSource : public BatchSource {
 public:
  RecordingSource(int64_t n, int sleep_ms = 0, int64_t fail_on = -1)
      : n_(n), sleep_ms_(sleep_ms), fail_on_(fail_on) {}
  int64_t size() const override { return n_; }
  Batch collate(const std::vector<int64_t>& indices, uint64_t, int64_t, bool pinned) const override {
    if (sleep_ms_) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms_));
    for (int64_t i : indices) DGP_CHECK(i != fail_on_, "recording source: sample " << i << " is broken");
    Batch b;
    b.indices = indices;
    std::vector<int64_t> values(indices.begin(), indices.end());
    b.labels =
        allocate_batch_tensor({static_cast<int64_t>(indices.size())}, dgpipe::engine::DType::i64, pinned);
    std::copy(values.begin(), values.end(), b.labels.data<int64_t>());
    std::lock_guard<std::mutex> lock(mu_);
    storages_.push_back(b.labels.storage());
    ++built_;
    return b;
  }
  int64_t built() const {
    std::lock_guard<std::mutex> lock(mu_);
    return built_;
  }
  int64_t alive() const {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t n = 0;
    for (const auto& w : storages_) n += !w.expired();
    return n;
  }

 private:
  int64_t n_;
  int sleep_ms_;
  int64_t fail_on_;
  mutable std::mutex mu_;
  mutable int64_t built_ = 0;
  mutable std::vector<std::weak_ptr<dgpipe::engine::Storage>> storages_;
};

int thread_count() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

std::vector<std::vector<int64_t>> epoch_indices(Loader& loader, int64_t epoch) {
  std::vector<std::vector<int64_t>> out;
  for (Batch& b : loader.epoch(epoch)) out.push_back(b.indices);
  return out;
}

}  // namespace

TEST(Loader, EveryIndexExactlyOncePerEpoch) {
  for (bool drop_last : {false, true}) {
    for (int workers : {0, 3}) {
      LoaderOptions opt;
      opt.batch_size = 8;
      opt.drop_last = drop_last;
      opt.num_workers = workers;
      opt.seed = 11;
      Loader loader(std::make_shared<RecordingSource>(53), opt);
      EXPECT_EQ(loader.num_batches(), drop_last ? 6 : 7);
      for (int64_t epoch = 0; epoch < 3; ++epoch) {
        const auto batches = epoch_indices(loader, epoch);
        ASSERT_EQ(static_cast<int64_t>(batches.size()), loader.num_batches());
        std::multiset<int64_t> seen;
        for (size_t k = 0; k < batches.size(); ++k) {
          const size_t want = (!drop_last && k + 1 == batches.size()) ? 53 % 8 : 8;
          EXPECT_EQ(batches[k].size(), want);
          seen.insert(batches[k].begin(), batches[k].end());
        }
        EXPECT_EQ(seen.size(), drop_last ? 48u : 53u);
        EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), seen.size()) << "an index came twice";
        for (int64_t i : seen) EXPECT_TRUE(i >= 0 && i < 53);
      }
    }
  }
}

TEST(Loader, DeterministicForASeedWhateverTheWorkers) {
  auto dataset = std::make_shared<SyntheticImages>(40);
  auto source = std::make_shared<ImageBatchSource>(
      dataset, Compose({random_crop(8, 2), random_horizontal_flip(0.5)}), cifar10_normalize());
  auto run = [&](int workers, uint64_t seed, int64_t epoch) {
    LoaderOptions opt;
    opt.batch_size = 6;
    opt.num_workers = workers;
    opt.seed = seed;
    Loader loader(source, opt);
    std::vector<double> values;
    std::vector<int64_t> order;
    for (Batch& b : loader.epoch(epoch)) {
      EXPECT_EQ(b.images.shape(), (dgpipe::engine::Shape{b.size(), 3, 8, 8}));
      EXPECT_EQ(b.labels.shape(), (dgpipe::engine::Shape{b.size()}));
      for (int64_t r = 0; r < b.size(); ++r) EXPECT_EQ(b.labels.to_vector()[r], b.indices[r] % 3);
      const auto v = b.images.to_vector();
      values.insert(values.end(), v.begin(), v.end());
      order.insert(order.end(), b.indices.begin(), b.indices.end());
    }
    return std::make_pair(order, values);
  };
  const auto reference = run(0, 42, 1);
  EXPECT_EQ(run(1, 42, 1), reference);
  EXPECT_EQ(run(4, 42, 1), reference);
  EXPECT_NE(run(2, 42, 2).first, reference.first);  // another epoch: another order
  EXPECT_NE(run(2, 43, 1).first, reference.first);  // another seed: another order
  // Same order but different augmentation across epochs: compare sample 0's pixels in epochs 1 and 2.
  LoaderOptions no_shuffle;
  no_shuffle.shuffle = false;
  no_shuffle.batch_size = 40;
  Loader plain(source, no_shuffle);
  EXPECT_EQ(plain.epoch_order(5), plain.epoch_order(6));
  Batch e1, e2;
  plain.start_epoch(1);
  ASSERT_TRUE(plain.next(e1));
  plain.start_epoch(2);
  ASSERT_TRUE(plain.next(e2));
  EXPECT_NE(e1.images.to_vector(), e2.images.to_vector());
}

TEST(Loader, PrefetchIsBoundedAndShutdownMidEpochJoinsCleanly) {
  const int baseline_threads = thread_count();
  auto source = std::make_shared<RecordingSource>(400, /*sleep_ms=*/5);
  {
    LoaderOptions opt;
    opt.batch_size = 4;
    opt.num_workers = 4;
    opt.prefetch_batches = 2;
    Loader loader(source, opt);
    loader.start_epoch(0);
    EXPECT_EQ(thread_count(), baseline_threads + 4);
    Batch b;
    for (int k = 0; k < 5; ++k) {
      ASSERT_TRUE(loader.next(b));
      std::this_thread::sleep_for(std::chrono::milliseconds(30));  // a slow consumer: workers must wait
      EXPECT_LE(source->built(), (k + 1) + 4 * 2) << "built more than the prefetch allows";
    }
  }  // destroyed mid-epoch with workers blocked on a full queue
  EXPECT_EQ(thread_count(), baseline_threads) << "worker threads left behind";
  EXPECT_EQ(source->alive(), 0) << "batches still alive after the loader is gone";
  EXPECT_LT(source->built(), 100);

  // Destruction while workers are busy building returns as soon as their current batch is done.
  auto slow = std::make_shared<RecordingSource>(400, /*sleep_ms=*/50);
  const auto t0 = std::chrono::steady_clock::now();
  {
    LoaderOptions opt;
    opt.batch_size = 2;
    opt.num_workers = 3;
    Loader loader(slow, opt);
    loader.start_epoch(0);
    Batch b;
    ASSERT_TRUE(loader.next(b));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 1.0);
  EXPECT_EQ(thread_count(), baseline_threads);
  EXPECT_EQ(slow->alive(), 0);
}

TEST(Loader, RestartingAndStoppingAreSafe) {
  auto source = std::make_shared<RecordingSource>(30, 1);
  LoaderOptions opt;
  opt.batch_size = 4;
  opt.num_workers = 2;
  Loader loader(source, opt);
  Batch b;
  EXPECT_THROW(loader.next(b), Error);  // no epoch started
  loader.start_epoch(0);
  ASSERT_TRUE(loader.next(b));
  loader.start_epoch(1);  // abandons epoch 0 midway
  int64_t count = 0;
  while (loader.next(b)) ++count;
  EXPECT_EQ(count, loader.num_batches());
  EXPECT_FALSE(loader.next(b));  // stays exhausted
  loader.stop();
  loader.stop();
  EXPECT_THROW(Loader(source, LoaderOptions{0}), Error);
}

TEST(Loader, WorkerErrorsReachTheConsumer) {
  LoaderOptions opt;
  opt.batch_size = 5;
  opt.num_workers = 2;
  opt.shuffle = false;
  Loader loader(std::make_shared<RecordingSource>(20, 0, /*fail_on=*/12), opt);
  loader.start_epoch(0);
  Batch b;
  ASSERT_TRUE(loader.next(b));
  ASSERT_TRUE(loader.next(b));
  try {
    loader.next(b);
    FAIL() << "expected the worker's error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sample 12 is broken"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(loader.next(b));  // the epoch is stopped after an error
  loader.start_epoch(1);         // and the loader can start again
  ASSERT_TRUE(loader.next(b));
}

TEST(Loader, ImageSizeMismatchIsNamed) {
  class Mixed : public SyntheticImages {
   public:
    Mixed() : SyntheticImages(4) {}
    Image image(int64_t index) const override {
      return index == 2 ? Image(5, 5, 3) : SyntheticImages::image(index);
    }
  };
  ImageBatchSource source(std::make_shared<Mixed>(), Compose(), Normalize());
  try {
    source.collate({0, 1, 2}, 0, 0, false);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("synthetic #2 is 5x5x3"), std::string::npos) << e.what();
  }
}

TEST(Loader, TextBatchesHoldIdsMaskAndTypes) {
  ScratchDir dir;
  {
    std::ofstream out(dir / "vocab.txt");
    for (const char* t : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "c"}) out << t << "\n";
  }
  class Pairs : public TextDataset {
   public:
    Pairs() {
      examples_.push_back({"a b c", std::string("a"), 1});
      examples_.push_back({"a", std::string("b"), 0});
      examples_.push_back({"a \xff", std::string("b"), 0});  // invalid UTF-8
    }
    int64_t size() const override { return static_cast<int64_t>(examples_.size()); }
    const TextExample& example(int64_t i) const override { return examples_[i]; }
    const std::vector<std::string>& classes() const override { return classes_; }
    std::string describe(int64_t i) const override { return "pairs.tsv:" + std::to_string(i + 2); }

   private:
    std::vector<TextExample> examples_;
    std::vector<std::string> classes_{"0", "1"};
  };
  auto tokenizer = std::make_shared<WordPieceTokenizer>(dir / "vocab.txt");
  EncodeOptions dynamic;
  dynamic.max_length = 16;
  dynamic.pad_to_max_length = false;
  TextBatchSource source(std::make_shared<Pairs>(), tokenizer, dynamic);
  Batch b = source.collate({0, 1}, 0, 0, false);
  EXPECT_EQ(b.input_ids.shape(), (dgpipe::engine::Shape{2, 7}));  // padded to the longest row
  EXPECT_EQ(b.input_ids.to_vector(), (std::vector<double>{2, 4, 5, 6, 3, 4, 3, 2, 4, 3, 5, 3, 0, 0}));
  EXPECT_EQ(b.attention_mask.to_vector(), (std::vector<double>{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0}));
  EXPECT_EQ(b.token_type_ids.to_vector(), (std::vector<double>{0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0}));
  EXPECT_EQ(b.labels.to_vector(), (std::vector<double>{1, 0}));
  EncodeOptions fixed;
  fixed.max_length = 10;
  TextBatchSource fixed_source(std::make_shared<Pairs>(), tokenizer, fixed);
  EXPECT_EQ(fixed_source.collate({1}, 0, 0, false).input_ids.shape(), (dgpipe::engine::Shape{1, 10}));
  try {
    source.collate({2}, 0, 0, false);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pairs.tsv:4"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("invalid UTF-8"), std::string::npos) << e.what();
  }
}
