#include "pipeline/stage_worker.h"

#include <atomic>
#include <utility>

#include "engine/error.h"

namespace dgpipe::pipeline {

namespace {
std::atomic<uint64_t> g_threads_started{0};
}  // namespace

StageWorker::StageWorker() : thread_([this] { loop(); }) {
  g_threads_started++;
}

StageWorker::~StageWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

uint64_t StageWorker::threads_started() {
  return g_threads_started.load();
}

void StageWorker::post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    DGP_CHECK(!busy_, "stage worker: a task was posted before the previous one was waited for");
    task_ = std::move(task);
    busy_ = true;
  }
  cv_.notify_all();
}

void StageWorker::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !busy_; });
  if (std::exception_ptr error = std::exchange(error_, nullptr)) std::rethrow_exception(error);
}

void StageWorker::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || task_; });
    if (!task_) return;  // stopping, nothing left to run
    std::function<void()> task = std::move(task_);
    task_ = nullptr;
    lock.unlock();
    std::exception_ptr error;
    try {
      task();
    } catch (...) {
      error = std::current_exception();
    }
    task = nullptr;  // whatever the task holds is released on this thread, before the owner hears it is done
    lock.lock();
    error_ = error;
    busy_ = false;
    cv_.notify_all();
  }
}

}  // namespace dgpipe::pipeline
