#include "engine/parallel.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/error.h"

namespace dgpipe::engine {

int available_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

namespace {

int initial_threads() {
  if (const char* v = std::getenv("DGPIPE_THREADS")) {
    const int n = std::atoi(v);
    DGP_CHECK(n >= 1, "DGPIPE_THREADS must be an integer >= 1, got '" << v << "'");
    return n;
  }
  return available_cores();
}

std::atomic<int>& process_threads() {
  static std::atomic<int> n{initial_threads()};
  return n;
}
thread_local int this_thread_threads = 0;  // 0: the process-wide value
thread_local bool inside_parallel_for = false;

// Workers that sleep on a condition variable between jobs, after watching for the next job for a short window
// (kSpinWindow): consecutive ops follow each other within microseconds, and a worker that has gone to sleep
// takes a scheduler wake-up (tens of microseconds on a VM) to start, as long as a small op itself. Past the
// window an idle pool costs no CPU next to pipeline stages and other processes. One job at a time: the owning
// thread is the only one that submits.
class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_.store(true);  // under the lock, so a worker about to wait sees it
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int workers() const { return static_cast<int>(threads_.size()); }

  // Runs chunk(i) for i in [0, chunks): the caller and the workers take chunks in turn.
  void run(int64_t chunks, const std::function<void(int64_t)>& chunk) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      chunk_ = &chunk;
      chunks_ = chunks;
      next_.store(0);
      pending_ = chunks;
      error_ = nullptr;
      ++generation_;
      published_.store(generation_, std::memory_order_release);
    }
    wake_.notify_all();
    work(false);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return pending_ == 0 && active_ == 0; });
    chunk_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void loop() {
    inside_parallel_for = true;
    uint64_t seen = 0;
    while (true) {
      watch_for_next_job(seen);
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stopping_.load() || generation_ != seen; });
        if (stopping_.load()) return;
        seen = generation_;
        ++active_;  // under the lock: the caller does not return (and start another job) while this runs
      }
      work(true);
    }
  }
  // Returns when a job newer than `seen` is published, the pool stops, or the window has passed.
  void watch_for_next_job(uint64_t seen) const {
    const auto until = std::chrono::steady_clock::now() + kSpinWindow;
    while (published_.load(std::memory_order_acquire) == seen && !stopping_.load(std::memory_order_relaxed)) {
      for (int i = 0; i < 64; ++i) spin_pause();
      if (std::chrono::steady_clock::now() >= until) return;
    }
  }
  static void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  // Takes chunks until none is left; the last thread to finish wakes the caller.
  void work(bool is_worker) {
    int64_t finished = 0;
    for (int64_t i = next_.fetch_add(1); i < chunks_; i = next_.fetch_add(1)) {
      try {
        (*chunk_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!error_) error_ = std::current_exception();
      }
      ++finished;
    }
    std::lock_guard<std::mutex> lock(mu_);
    pending_ -= finished;
    if (is_worker) --active_;
    if (pending_ == 0 && active_ == 0) done_.notify_one();
  }

  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* chunk_ = nullptr;
  int64_t chunks_ = 0;
  std::atomic<int64_t> next_{0};
  int64_t pending_ = 0;  // chunks not finished
  int active_ = 0;       // workers inside work()
  uint64_t generation_ = 0;
  std::atomic<uint64_t> published_{0};  // generation_, readable without the lock
  std::atomic<bool> stopping_{false};  // read without the lock while watching for a job
  static constexpr std::chrono::microseconds kSpinWindow{50};
  std::exception_ptr error_;
  std::vector<std::thread> threads_;  // last: started once the members they use exist
};

Pool& pool_with(int workers) {
  thread_local std::unique_ptr<Pool> pool;
  if (!pool || pool->workers() != workers) {
    pool.reset();
    pool = std::make_unique<Pool>(workers);
  }
  return *pool;
}

}  // namespace

int cpu_threads() {
  return this_thread_threads > 0 ? this_thread_threads : process_threads().load();
}

void restart_with_passive_openmp_wait(char** argv) {
#if DGPIPE_WITH_ONEDNN
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: the program then runs with libgomp's default
#else
  (void)argv;
#endif
}

void set_cpu_threads(int n) {
  DGP_CHECK(n >= 1, "set_cpu_threads: need at least 1 thread, got " << n);
  process_threads().store(n);
}

void set_thread_cpu_threads(int n) {
  DGP_CHECK(n >= 0, "set_thread_cpu_threads: need 0 (the process-wide value) or more, got " << n);
  this_thread_threads = n;
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t threads = std::min<int64_t>(cpu_threads(), n / grain);
  if (threads <= 1 || inside_parallel_for) {
    f(0, n);
    return;
  }
  // One chunk per thread: equal shares of uniform work, and the fewest wake-ups.
  const int64_t chunks = threads, size = (n + chunks - 1) / chunks;
  inside_parallel_for = true;
  try {
    pool_with(cpu_threads() - 1).run(chunks, [&](int64_t i) {
      const int64_t begin = i * size, end = std::min(n, begin + size);
      if (begin < end) f(begin, end);
    });
  } catch (...) {
    inside_parallel_for = false;
    throw;
  }
  inside_parallel_for = false;
}

}  // namespace dgpipe::engine
