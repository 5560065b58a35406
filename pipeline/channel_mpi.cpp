// MPI channel: one process per rank, launched by mpirun. Payloads travel as host bytes with MPI
// point-to-point.
#ifdef DGPIPE_WITH_MPI
#include <mpi.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <list>
#include <sstream>
#include <thread>

#include "engine/error.h"
#include "pipeline/channel.h"

namespace dgpipe::pipeline {

namespace {
constexpr int kMaxStages = 64;
int message_tag(int src, int dst, MsgKind kind) {
  return ((src * kMaxStages) + dst) * 4 + static_cast<int>(kind);
}

struct WireHeader {
  int32_t micro_batch;
  int32_t kind;
  int64_t step;
};
}  // namespace

std::pair<int, int> mpi_init(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
    DGP_CHECK(provided >= MPI_THREAD_MULTIPLE, "mpi: the MPI library does not provide MPI_THREAD_MULTIPLE");
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return {rank, size};
}

void mpi_finalize() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

[[noreturn]] void abort_mpi_job(int rank, const std::string& reason) {
  static std::atomic<bool> aborting{false};
  if (aborting.exchange(true))
    while (true) std::this_thread::sleep_for(std::chrono::seconds(1));  // the first caller ends the process
  std::cerr << "dgpipe rank " << rank << ": " << reason << "\n" << std::flush;
  // MPI_Abort reports to mpirun before it ends the job; when the network to mpirun is down too (a cut link
  // that also carries mpirun's own connections) it waits for that report forever. This process at least ends;
  // mpirun sees it exit non-zero and ends the others, or they reach their own bound.
  std::thread([rank] {
    std::this_thread::sleep_for(std::chrono::seconds(10));
    std::cerr << "dgpipe rank " << rank
              << ": MPI_Abort did not end the job within 10 s (mpirun unreachable?); "
              << "exiting\n"
              << std::flush;
    std::_Exit(3);
  }).detach();
  MPI_Abort(MPI_COMM_WORLD, 3);
  std::_Exit(3);  // not reached: MPI_Abort does not return
}

// Outgoing messages wait in a queue for their (emulated) wire time; one sender thread posts MPI_Isend and
// retires completed requests, so send() never blocks the stage that calls it. After an abort the thread stops
// at once, leaving what is queued or in flight (the job is ending).
struct MpiChannel::Impl {
  struct Outgoing {
    std::vector<uint8_t> buffer;
    int dest_rank;
    int tag;
    std::chrono::steady_clock::time_point at;
    MPI_Request request = MPI_REQUEST_NULL;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Outgoing> queue;
  std::list<Outgoing> in_flight;
  bool stop = false;
  bool abandon = false;  // set by abort: quit without waiting for the queue and the sends in flight
  std::thread sender;
  // Receives given up half-way on abort: MPI may still write into their buffers until the job ends.
  std::mutex abandoned_mu;
  std::list<std::vector<uint8_t>> abandoned_receives;

  void run() {
    std::unique_lock<std::mutex> lock(mu);
    while (!abandon) {
      // retire completed sends
      for (auto it = in_flight.begin(); it != in_flight.end();) {
        int done = 0;
        MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
        it = done ? in_flight.erase(it) : std::next(it);
      }
      if (stop && queue.empty() && in_flight.empty()) return;
      if (!queue.empty() && queue.front().at <= std::chrono::steady_clock::now()) {
        in_flight.push_back(std::move(queue.front()));
        queue.pop_front();
        Outgoing& o = in_flight.back();
        MPI_Isend(o.buffer.data(), static_cast<int>(o.buffer.size()), MPI_BYTE, o.dest_rank, o.tag,
                  MPI_COMM_WORLD, &o.request);
        continue;
      }
      auto wake = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
      if (!queue.empty()) wake = std::min(wake, queue.front().at);
      cv.wait_until(lock, wake);
    }
  }

  void stop_sender(bool abandon_pending) {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
      abandon = abandon || abandon_pending;
    }
    cv.notify_all();
    if (sender.joinable()) sender.join();
  }
};

MpiChannel::MpiChannel(std::vector<int> stage_rank, LinkModel link)
    : impl_(std::make_unique<Impl>()), stage_rank_(std::move(stage_rank)), throttle_(link) {
  DGP_CHECK(static_cast<int>(stage_rank_.size()) <= kMaxStages,
            "mpi channel: at most " << kMaxStages << " stages");
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  for (size_t s = 0; s < stage_rank_.size(); ++s)
    DGP_CHECK(stage_rank_[s] >= 0 && stage_rank_[s] < size,
              "mpi channel: stage " << s << " placed on rank " << stage_rank_[s] << " but mpirun started "
                                    << size << " ranks");
  impl_->sender = std::thread([this] { impl_->run(); });
}

MpiChannel::~MpiChannel() {
  impl_->stop_sender(/*abandon_pending=*/mailbox_.aborted());
}

void MpiChannel::send(Message msg) {
  DGP_CHECK(msg.side_inputs.empty(), "mpi channel: stage "
                                         << msg.src_stage << " sent side-input tensors to stage "
                                         << msg.dst_stage << "; this channel carries them as host bytes");
  auto at = throttle_.reserve(msg.src_stage, msg.dst_stage, message_bytes(msg));
  int dest = stage_rank_.at(msg.dst_stage);
  if (dest == rank_) {
    mailbox_.put(std::move(msg), at);
    return;
  }
  DGP_CHECK(!msg.body.defined(), "mpi channel: stage " << msg.src_stage << " sent a device body to stage "
                                                       << msg.dst_stage
                                                       << "; this channel carries host bytes only");
  Impl::Outgoing o;
  o.buffer.resize(sizeof(WireHeader) + msg.bytes.size());
  WireHeader h{msg.micro_batch, static_cast<int32_t>(msg.kind), msg.step};
  std::memcpy(o.buffer.data(), &h, sizeof(h));
  if (!msg.bytes.empty()) std::memcpy(o.buffer.data() + sizeof(h), msg.bytes.data(), msg.bytes.size());
  o.dest_rank = dest;
  o.tag = message_tag(msg.src_stage, msg.dst_stage, msg.kind);
  o.at = at;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->queue.push_back(std::move(o));
  }
  impl_->cv.notify_all();
}

Message MpiChannel::recv(int src, int dst, MsgKind kind, int micro_batch, int64_t step) {
  int src_rank = stage_rank_.at(src);
  if (src_rank == rank_) return mailbox_.take(src, dst, kind, micro_batch, step, timeout_, timeout_text());
  int tag = message_tag(src, dst, kind);
  auto deadline = std::chrono::steady_clock::now() + timeout_;
  // Every wait polls, never blocks inside MPI: a dead link ends at the deadline, an abort at once.
  auto check = [&](const char* what, const char* state) {
    DGP_CHECK(!mailbox_.aborted(), "stage " << dst << ": pipeline aborted while waiting for "
                                            << msg_kind_name(kind) << " from stage " << src);
    DGP_CHECK(std::chrono::steady_clock::now() < deadline,
              "stage " << dst << " (rank " << rank_ << "): " << what << " " << msg_kind_name(kind)
                       << " from stage " << src << " (rank " << src_rank << ") for micro-batch "
                       << micro_batch << " of step " << step << " " << state << timeout_text());
  };
  MPI_Status status;
  int flag = 0;
  while (true) {
    MPI_Iprobe(src_rank, tag, MPI_COMM_WORLD, &flag, &status);
    if (flag) break;
    check("no", "");
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  std::vector<uint8_t> buffer(static_cast<size_t>(count));
  MPI_Request request = MPI_REQUEST_NULL;
  MPI_Irecv(buffer.data(), count, MPI_BYTE, src_rank, tag, MPI_COMM_WORLD, &request);
  // Spins like a blocking MPI_Recv would (MPI_Test drives the transfer), checking the deadline and the abort.
  for (int done = 0; !done;) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) break;
    try {
      check("the", "began to arrive but did not finish ");
    } catch (...) {
      std::lock_guard<std::mutex> lock(impl_->abandoned_mu);  // MPI owns the buffer until the job ends
      impl_->abandoned_receives.push_back(std::move(buffer));
      throw;
    }
  }
  DGP_CHECK(count >= static_cast<int>(sizeof(WireHeader)),
            "stage " << dst << ": truncated message of " << count << " bytes from stage " << src);
  WireHeader h;
  std::memcpy(&h, buffer.data(), sizeof(h));
  DGP_CHECK(h.micro_batch == micro_batch && h.step == step,
            "stage " << dst << ": expected " << msg_kind_name(kind) << " of micro-batch " << micro_batch
                     << " step " << step << " from stage " << src << " but received micro-batch "
                     << h.micro_batch << " step " << h.step);
  Message m;
  m.src_stage = src;
  m.dst_stage = dst;
  m.kind = kind;
  m.micro_batch = h.micro_batch;
  m.step = h.step;
  m.bytes.assign(buffer.begin() + sizeof(WireHeader), buffer.end());
  return m;
}

void MpiChannel::abort(const std::string& reason) {
  mailbox_.abort(reason);
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->abandon = true;
  }
  impl_->cv.notify_all();
}

void MpiChannel::end_after_failure(const std::string& reason) {
  abort(reason);
  impl_->stop_sender(/*abandon_pending=*/true);  // now no other thread of this process is inside MPI
  abort_mpi_job(rank_, reason);
}

}  // namespace dgpipe::pipeline
#endif
