// A thread that lives as long as its pipeline and runs one local stage's steps, one at a time.
//
// Thread-local state belongs to the thread that built it: the BLAS thread setting, the current CUDA stream,
// the cuBLAS handle with its workspace and the cuDNN handle, the autograd and autocast modes. A stage that
// ran each step on a new thread would rebuild all of it every step (and, on a GPU, leak the per-thread
// handles); a StageWorker builds it once and keeps it from step to step.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace dgpipe::pipeline {

class StageWorker {
 public:
  StageWorker();  // starts the thread
  // Stops the thread after the task in flight, if any, has finished (the owner waits for its tasks first).
  ~StageWorker();
  StageWorker(const StageWorker&) = delete;
  StageWorker& operator=(const StageWorker&) = delete;

  // Hands `task` to the thread and returns at once. One task at a time: wait() for it before the next post().
  void post(std::function<void()> task);
  // Blocks until the posted task has finished, and rethrows what it threw.
  void wait();
  std::thread::id thread_id() const { return thread_.get_id(); }

  // Threads started by StageWorkers in this process so far.
  static uint64_t threads_started();

 private:
  void loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> task_;  // posted, not yet taken by the thread
  bool busy_ = false;           // from post() until the task has finished
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: started once the members it uses exist
};

}  // namespace dgpipe::pipeline
