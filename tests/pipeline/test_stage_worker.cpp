// A stage worker runs every task on its one thread, keeps that thread's thread-local state between tasks,
// carries a task's exception back to wait(), and stops cleanly.
#include "pipeline/stage_worker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "engine/error.h"

using namespace dgpipe;
using dgpipe::pipeline::StageWorker;

TEST(StageWorker, RunsEveryTaskOnItsOneThread) {
  const uint64_t started = StageWorker::threads_started();
  StageWorker worker;
  EXPECT_EQ(StageWorker::threads_started(), started + 1);
  std::vector<std::thread::id> seen;
  for (int i = 0; i < 5; ++i) {
    worker.post([&] { seen.push_back(std::this_thread::get_id()); });
    worker.wait();
  }
  ASSERT_EQ(seen.size(), 5u);
  for (auto id : seen) EXPECT_EQ(id, worker.thread_id());
  EXPECT_NE(worker.thread_id(), std::this_thread::get_id());
  EXPECT_EQ(StageWorker::threads_started(), started + 1) << "tasks must not start threads";
}

TEST(StageWorker, ThreadLocalStateSurvivesBetweenTasks) {
  StageWorker worker;
  std::vector<int> counts;
  for (int i = 0; i < 5; ++i) {
    worker.post([&] {
      thread_local int calls = 0;
      counts.push_back(++calls);
    });
    worker.wait();
  }
  EXPECT_EQ(counts, (std::vector<int>{1, 2, 3, 4, 5}));
}

TEST(StageWorker, CarriesATasksExceptionBackToWait) {
  StageWorker worker;
  worker.post([] { DGP_FAIL("stage 1 broke"); });
  try {
    worker.wait();
    FAIL() << "expected the task's error";
  } catch (const engine::Error& e) {
    EXPECT_NE(std::string(e.what()).find("stage 1 broke"), std::string::npos) << e.what();
  }
  // The error is reported once; the worker runs the next task as usual.
  bool ran = false;
  worker.post([&] { ran = true; });
  EXPECT_NO_THROW(worker.wait());
  EXPECT_TRUE(ran);
}

TEST(StageWorker, OneTaskAtATime) {
  StageWorker worker;
  std::atomic<bool> release{false};
  worker.post([&] {
    while (!release) std::this_thread::yield();
  });
  EXPECT_THROW(worker.post([] {}), engine::Error);
  release = true;
  EXPECT_NO_THROW(worker.wait());
}

TEST(StageWorker, StopsCleanly) {
  { StageWorker idle; }  // never given a task
  {
    StageWorker failed;
    failed.post([] { throw std::runtime_error("not an engine error"); });
    EXPECT_THROW(failed.wait(), std::runtime_error);
  }
  // Destroyed with a task posted but not waited for: the task still runs to its end first.
  std::atomic<bool> finished{false};
  {
    StageWorker busy;
    busy.post([&] { finished = true; });
  }
  EXPECT_TRUE(finished);
}
