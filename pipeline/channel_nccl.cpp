// NCCL channel: packet bodies move GPU->GPU between processes with ncclSend/ncclRecv and never touch the
// host; the small host part of each message (address, packet header, side inputs) moves with MPI, ahead of
// its body.
//
// Bootstrap (collective, in the constructor): rank 0 calls ncclGetUniqueId, MPI_Bcast hands the id to every
// rank, every rank calls ncclCommInitRank on its CUDA device: one communicator for the job. From it,
// ncclCommSplit cuts a two-rank communicator per DIRECTED link between neighbouring stages on different ranks
// (a->b and b->a are two communicators). Why not send everything through the job communicator: NCCL executes
// the operations of one communicator in the order they were issued, and a send blocks the GPU until its peer
// posts the matching receive. If two ranks each issue a large send to the other before the receive of the
// other's message (activations going forward while gradients come back, which 1F1B does all the time), both
// sends wait for receives queued behind them: a deadlock. On a one-way link communicator the sender only
// sends and the receiver only receives, both in the same order, so every send has its receive posted as soon
// as the header arrives. Each link has its own non-blocking stream on each side (the "communication stream");
// ordering with the stage's compute stream uses events only: the link stream waits for an event recorded on
// the sender's current stream after the body was written; the receiver's current stream waits for an event
// recorded after ncclRecv. No device-wide syncs.
//
// Ordering: per link, the header (MPI_Isend on a duplicate of MPI_COMM_WORLD, so it never meets other MPI
// traffic) and the body (ncclSend) are issued under one lock, so headers and bodies leave in the same order.
// One progress thread per process receives headers from any rank in their arrival order (MPI keeps the order
// per source), allocates the body on the device (the size is in the header) and posts ncclRecv in that same
// order, then files the message in the mailbox, from which recv() takes it by address like the MPI channel.
//
// Thread safety: NCCL calls are not safe in parallel on one communicator, nor on several communicators of one
// device, so every NCCL call of the process holds one mutex. Connections are set up once, by a grouped
// warm-up exchange of one byte per link in the constructor, so later sends and receives only enqueue work and
// never block the host waiting for a peer (lazy connection set-up inside a send could otherwise wait for a
// peer whose progress thread is waiting for our lock).
//
// Failures: a receive posted on the GPU cannot time out by itself. The stage's recv() waits for the header
// with the channel timeout (a dead or stuck peer is reported by name, as with MPI); the progress thread
// doubles as a watchdog over every posted transfer (deadline = channel timeout from when a stage starts
// depending on it) and polls ncclCommGetAsyncError. Either failure, or a stage error, calls abort():
// ncclCommAbort on every communicator (kernels stuck waiting for a dead peer return, so no thread stays
// blocked in a CUDA call). When the failed step's stages have stopped, end_after_failure stops the progress
// thread and calls MPI_Abort for the whole job, as the MPI channel does.
//
// Limits: one CUDA device per rank and two ranks never on one GPU (NCCL refuses that); the emulated link
// (--link-bandwidth/--link-latency) delays delivery at the receiver, the NCCL transfer itself runs at full
// speed. UNTESTED on hardware: no machine with two GPUs was available (tests/pipeline/test_channel_nccl.cpp
// runs it there).
#if defined(DGPIPE_WITH_CUDA) && defined(DGPIPE_WITH_MPI) && defined(DGPIPE_WITH_NCCL)
#include <mpi.h>
#include <nccl.h>

#include <atomic>
#include <cstring>
#include <iostream>
#include <list>
#include <map>
#include <set>
#include <thread>

#include "engine/cuda.h"
#include "engine/error.h"
#include "pipeline/channel.h"

namespace dgpipe::pipeline {

using Clock = std::chrono::steady_clock;
namespace cuda = engine::cuda;

namespace {

constexpr int kHeaderTag = 7;

#define DGP_NCCL_CHECK(expr, comm, what)                                                                 \
  do {                                                                                                   \
    ncclResult_t dgp_nccl_ = (expr);                                                                     \
    if (dgp_nccl_ != ncclSuccess)                                                                        \
      DGP_FAIL("nccl channel: " << what << ": " << #expr << " failed: " << ncclGetErrorString(dgp_nccl_) \
                                << " (" << ncclGetLastError(comm) << ") at " << __FILE__ << ":"          \
                                << __LINE__);                                                            \
  } while (0)

// Precedes the host bytes of every cross-rank message.
struct WireHeader {
  int32_t src_stage;
  int32_t dst_stage;
  int32_t kind;
  int32_t micro_batch;
  int64_t step;
  uint64_t body_bytes;  // 0: no body follows on NCCL
};

std::string describe(const char* verb, MsgKind kind, int micro_batch, int64_t step, int src, int dst,
                     int peer_rank) {
  std::ostringstream s;
  s << verb << " " << msg_kind_name(kind) << " of micro-batch " << micro_batch << " (step " << step
    << ") from stage " << src << " to stage " << dst << " (peer rank " << peer_rank << ")";
  return s.str();
}

void check_body(const Message& msg) {
  const engine::Tensor& b = msg.body;
  DGP_CHECK(b.dtype() == engine::DType::u8 && b.dim() == 1 && b.is_contiguous(),
            "nccl channel: stage " << msg.src_stage << " sent a body that is not a 1-D contiguous u8 tensor ("
                                   << engine::dtype_name(b.dtype()) << " " << engine::shape_str(b.shape())
                                   << ")");
}

}  // namespace

struct NcclChannel::Impl {
  explicit Impl(LinkModel link) : throttle(link) {}
  NcclChannel* owner = nullptr;
  int device = 0;
  int rank = 0;
  int world_size = 1;
  LinkThrottle throttle;
  Mailbox mailbox;
  MPI_Comm header_comm = MPI_COMM_NULL;
  ncclComm_t world = nullptr;
  // While the communicators live the allocator must never synchronise the device (a transfer kernel waiting
  // for its peer would never let it return); see cuda::CommunicatorScope.
  std::unique_ptr<cuda::CommunicatorScope> communicators;

  // One direction of one link: its two-rank communicator and the stream its transfers run on.
  struct Link {
    int peer_rank = -1;
    int peer_in_comm = -1;  // the peer's rank inside `comm` (0 or 1)
    ncclComm_t comm = nullptr;
    cuda::Stream stream;
  };
  std::map<int, Link> out_links, in_links;  // by peer rank

  std::timed_mutex nccl_mu;  // held by every NCCL call of this process

  struct PendingHeader {
    std::vector<uint8_t> buffer;
    MPI_Request request = MPI_REQUEST_NULL;
  };
  std::mutex pending_mu;
  std::list<PendingHeader> pending_headers;  // MPI_Isend buffers kept alive until the send completes

  struct Watched {
    std::shared_ptr<cuda::Event> done;
    Clock::time_point deadline;
    std::string what;
  };
  std::mutex watch_mu;
  std::list<Watched> watched;  // posted transfers somebody depends on

  std::atomic<bool> stop{false};
  std::atomic<bool> aborting{false};
  std::thread progress;

  void watch(std::shared_ptr<cuda::Event> done, std::chrono::milliseconds timeout, std::string what) {
    std::lock_guard<std::mutex> lock(watch_mu);
    watched.push_back(Watched{std::move(done), Clock::now() + timeout, std::move(what)});
  }

  std::vector<ncclComm_t> all_comms() const {
    std::vector<ncclComm_t> comms;
    for (auto& [peer, l] : out_links) comms.push_back(l.comm);
    for (auto& [peer, l] : in_links) comms.push_back(l.comm);
    if (world) comms.push_back(world);
    return comms;
  }

  // Receives one header (already probed), posts the body's receive, files the message.
  void receive_one(const MPI_Status& status) {
    int count = 0;
    MPI_Get_count(&status, MPI_BYTE, &count);
    std::vector<uint8_t> buffer(static_cast<size_t>(count));
    MPI_Recv(buffer.data(), count, MPI_BYTE, status.MPI_SOURCE, kHeaderTag, header_comm, MPI_STATUS_IGNORE);
    DGP_CHECK(count >= static_cast<int>(sizeof(WireHeader)),
              "nccl channel: truncated header of " << count << " bytes from rank " << status.MPI_SOURCE);
    WireHeader h;
    std::memcpy(&h, buffer.data(), sizeof(h));
    Message m;
    m.src_stage = h.src_stage;
    m.dst_stage = h.dst_stage;
    m.kind = static_cast<MsgKind>(h.kind);
    m.micro_batch = h.micro_batch;
    m.step = h.step;
    m.bytes.assign(buffer.begin() + sizeof(WireHeader), buffer.end());
    if (h.body_bytes > 0) {
      auto it = in_links.find(status.MPI_SOURCE);
      DGP_CHECK(it != in_links.end(), "nccl channel: rank " << rank << " got a body from rank "
                                                            << status.MPI_SOURCE
                                                            << ", which runs no neighbouring stage");
      Link& l = it->second;
      cuda::StreamGuard on_link(l.stream);  // the body's memory belongs to the link stream until delivery
      cuda::ReceivePoolGuard from_receive_pool;  // never the allocator's out-of-memory path in steady state
      m.body = engine::empty({static_cast<int64_t>(h.body_bytes)},
                             engine::TensorOptions(engine::DType::u8, engine::Device::cuda(device)));
      {
        std::lock_guard<std::timed_mutex> lock(nccl_mu);
        DGP_NCCL_CHECK(
            ncclRecv(m.body.raw_data(), h.body_bytes, ncclUint8, l.peer_in_comm, l.comm,
                     static_cast<cudaStream_t>(l.stream.raw())),
            l.comm,
            describe("receiving", m.kind, m.micro_batch, m.step, m.src_stage, m.dst_stage, l.peer_rank));
      }
      m.body_ready = std::make_shared<cuda::Event>();
      m.body_ready->record(l.stream);
    }
    auto at = throttle.reserve(m.src_stage, m.dst_stage, message_bytes(m));
    mailbox.put(std::move(m), at);
  }

  // Returns a reason when a watched transfer is overdue or a communicator reported an asynchronous error.
  std::string check_health(bool poll_comms) {
    {
      std::lock_guard<std::mutex> lock(watch_mu);
      auto now = Clock::now();
      for (auto it = watched.begin(); it != watched.end();) {
        if (it->done->query()) {
          it = watched.erase(it);
          continue;
        }
        if (now > it->deadline)
          return "rank " + std::to_string(rank) + ": NCCL transfer not finished in time: " + it->what +
                 " (peer dead or stuck; the receive cannot time out on the GPU, so the watchdog aborts)";
        ++it;
      }
    }
    if (poll_comms)
      for (ncclComm_t c : all_comms()) {
        ncclResult_t async = ncclSuccess;
        if (ncclCommGetAsyncError(c, &async) == ncclSuccess && async != ncclSuccess &&
            async != ncclInProgress)
          return "rank " + std::to_string(rank) +
                 ": NCCL reported an asynchronous error: " + ncclGetErrorString(async) + " (" +
                 ncclGetLastError(c) + ")";
      }
    return "";
  }

  void retire_headers() {
    std::lock_guard<std::mutex> lock(pending_mu);
    for (auto it = pending_headers.begin(); it != pending_headers.end();) {
      int done = 0;
      MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
      it = done ? pending_headers.erase(it) : std::next(it);
    }
  }

  void run() {
    try {
      cuda::set_device(device);
      auto last_poll = Clock::now();
      while (true) {
        bool busy = false;
        int flag = 0;
        MPI_Status status;
        MPI_Iprobe(MPI_ANY_SOURCE, kHeaderTag, header_comm, &flag, &status);
        if (flag) {
          receive_one(status);
          busy = true;
        }
        retire_headers();
        bool poll = Clock::now() - last_poll > std::chrono::seconds(1);
        if (poll) last_poll = Clock::now();
        std::string problem = check_health(poll);
        if (!problem.empty()) {
          owner->abort(problem);
          return;
        }
        if (stop.load()) {
          std::lock_guard<std::mutex> lock(pending_mu);
          if (pending_headers.empty() || aborting.load()) return;
        }
        if (!busy) std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    } catch (const std::exception& e) {
      owner->abort(std::string("nccl channel progress thread on rank ") + std::to_string(rank) + ": " +
                   e.what());
    }
  }
};

NcclChannel::NcclChannel(std::vector<int> stage_rank, int device, LinkModel link)
    : impl_(std::make_unique<Impl>(link)), stage_rank_(std::move(stage_rank)) {
  Impl& im = *impl_;
  im.owner = this;
  im.device = device;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &im.world_size);
  im.rank = rank_;
  for (size_t s = 0; s < stage_rank_.size(); ++s)
    DGP_CHECK(stage_rank_[s] >= 0 && stage_rank_[s] < im.world_size,
              "nccl channel: stage " << s << " placed on rank " << stage_rank_[s] << " but mpirun started "
                                     << im.world_size << " ranks");
  DGP_CHECK(device >= 0 && device < cuda::device_count(),
            "nccl channel: rank " << rank_ << " asked for cuda:" << device << " but sees "
                                  << cuda::device_count() << " CUDA devices");
  cuda::set_device(device);
  MPI_Comm_dup(MPI_COMM_WORLD, &im.header_comm);

  // Job communicator.
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (rank_ == 0) DGP_NCCL_CHECK(ncclGetUniqueId(&id), nullptr, "rank 0 creating the NCCL id");
  MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, im.header_comm);
  im.communicators = std::make_unique<cuda::CommunicatorScope>(device);
  ncclResult_t init = ncclCommInitRank(&im.world, im.world_size, id, rank_);
  // Every rank learns whether every rank succeeded, so none is left waiting in a later collective.
  int ok = init == ncclSuccess ? 1 : 0, all_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, im.header_comm);
  DGP_CHECK(init == ncclSuccess,
            "nccl channel: ncclCommInitRank failed on rank "
                << rank_ << " (cuda:" << device << "): " << ncclGetErrorString(init) << " ("
                << ncclGetLastError(nullptr)
                << "); each rank needs its own GPU (NCCL refuses two ranks on one device)");
  DGP_CHECK(all_ok, "nccl channel: another rank failed to join the NCCL communicator (see its error)");

  // One-way link communicators, split in the same order on every rank (ncclCommSplit is collective).
  std::set<std::pair<int, int>> links;
  for (size_t s = 0; s + 1 < stage_rank_.size(); ++s) {
    int a = stage_rank_[s], b = stage_rank_[s + 1];
    if (a == b) continue;
    links.insert({a, b});
    links.insert({b, a});
  }
  int color = 0;
  for (auto [from, to] : links) {
    const bool member = rank_ == from || rank_ == to;
    ncclComm_t child = nullptr;
    DGP_NCCL_CHECK(
        ncclCommSplit(im.world, member ? color : NCCL_SPLIT_NOCOLOR, rank_ == from ? 0 : 1, &child, nullptr),
        im.world, "splitting the link communicator rank " << from << " -> rank " << to);
    ++color;
    if (!member) continue;
    Impl::Link l;
    l.comm = child;
    l.stream = cuda::Stream::create(device);
    if (rank_ == from) {
      l.peer_rank = to;
      l.peer_in_comm = 1;
      im.out_links[to] = l;
    } else {
      l.peer_rank = from;
      l.peer_in_comm = 0;
      im.in_links[from] = l;
    }
  }

  // Warm-up: one byte over every link, all in one group, so connections exist before the first real transfer
  // and a broken link fails here, at start-up, with a clear message.
  engine::TensorOptions u8_on_device(engine::DType::u8, engine::Device::cuda(device));
  std::map<int, engine::Tensor> sent, received;
  for (auto& [peer, l] : im.out_links) {
    engine::Tensor host = engine::empty({1}, engine::TensorOptions(engine::DType::u8, engine::Device::cpu()));
    host.data<uint8_t>()[0] = static_cast<uint8_t>(rank_ * 16 + peer + 1);
    sent[peer] = host.to(engine::Device::cuda(device));
  }
  for (auto& [peer, l] : im.in_links) received[peer] = engine::empty({1}, u8_on_device);
  cuda::current_stream(device).synchronize();  // the copies above ran on the current stream
  {
    std::lock_guard<std::timed_mutex> lock(im.nccl_mu);
    DGP_NCCL_CHECK(ncclGroupStart(), im.world, "warm-up");
    for (auto& [peer, l] : im.out_links)
      DGP_NCCL_CHECK(ncclSend(sent[peer].raw_data(), 1, ncclUint8, l.peer_in_comm, l.comm,
                              static_cast<cudaStream_t>(l.stream.raw())),
                     l.comm, "warm-up send to rank " << peer);
    for (auto& [peer, l] : im.in_links)
      DGP_NCCL_CHECK(ncclRecv(received[peer].raw_data(), 1, ncclUint8, l.peer_in_comm, l.comm,
                              static_cast<cudaStream_t>(l.stream.raw())),
                     l.comm, "warm-up receive from rank " << peer);
    DGP_NCCL_CHECK(ncclGroupEnd(), im.world, "warm-up");
  }
  for (auto& [peer, l] : im.out_links) l.stream.synchronize();
  for (auto& [peer, l] : im.in_links) {
    l.stream.synchronize();
    int got = static_cast<int>(received[peer].item());
    DGP_CHECK(got == ((peer * 16 + rank_ + 1) & 255), "nccl channel: warm-up byte from rank "
                                                          << peer << " arrived as " << got << " instead of "
                                                          << ((peer * 16 + rank_ + 1) & 255));
  }
  im.progress = std::thread([this] { impl_->run(); });
}

NcclChannel::~NcclChannel() {
  Impl& im = *impl_;
  im.stop = true;
  if (im.progress.joinable()) im.progress.join();
  if (im.aborting) return;  // communicators already aborted; the job is going down
  try {
    // Every message was consumed by its stage, so the transfers are done or about to be; give them the
    // timeout.
    auto deadline = Clock::now() + timeout_;
    bool drained = true;
    for (auto* links : {&im.out_links, &im.in_links})
      for (auto& [peer, l] : *links) {
        while (!l.stream.query() && Clock::now() < deadline)
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        drained = drained && l.stream.query();
      }
    for (ncclComm_t c : im.all_comms()) {
      if (drained)
        ncclCommDestroy(c);
      else
        ncclCommAbort(c);
    }
    im.communicators.reset();
    if (!drained)
      std::cerr << "dgpipe rank " << rank_ << ": nccl channel closed with transfers still pending\n";
    MPI_Comm_free(&im.header_comm);
  } catch (const std::exception& e) {
    std::cerr << "dgpipe rank " << rank_ << ": closing the nccl channel: " << e.what() << "\n";
  }
}

void NcclChannel::send(Message msg) {
  Impl& im = *impl_;
  int dest = stage_rank_.at(msg.dst_stage);
  const bool has_body = msg.body.defined() && msg.body.numel() > 0;
  if (has_body) check_body(msg);
  DGP_CHECK(msg.side_inputs.empty(), "nccl channel: stage " << msg.src_stage
                                                            << " sent side-input tensors; this channel "
                                                            << "carries them as host bytes");
  if (dest == rank_) {
    // Same process: the body stays where it is; the receiver's stream waits for the producer's work.
    if (has_body && msg.body.is_cuda()) {
      msg.body_ready = std::make_shared<cuda::Event>();
      msg.body_ready->record(cuda::current_stream(msg.body.device().index));
    }
    auto at = im.throttle.reserve(msg.src_stage, msg.dst_stage, message_bytes(msg));
    im.mailbox.put(std::move(msg), at);
    return;
  }
  auto it = im.out_links.find(dest);
  DGP_CHECK(it != im.out_links.end(), "nccl channel: stage " << msg.src_stage << " (rank " << rank_
                                                             << ") sends to stage " << msg.dst_stage
                                                             << " on rank " << dest
                                                             << ", which is not its neighbour's rank");
  Impl::Link& l = it->second;
  if (has_body)
    DGP_CHECK(msg.body.is_cuda() && msg.body.device().index == im.device,
              "nccl channel: stage " << msg.src_stage << " sent a body on " << msg.body.device().str()
                                     << " but this rank's channel runs on cuda:" << im.device);
  Impl::PendingHeader ph;
  WireHeader h{msg.src_stage,   msg.dst_stage, static_cast<int32_t>(msg.kind),
               msg.micro_batch, msg.step,      has_body ? static_cast<uint64_t>(msg.body.numel()) : 0};
  ph.buffer.resize(sizeof(h) + msg.bytes.size());
  std::memcpy(ph.buffer.data(), &h, sizeof(h));
  if (!msg.bytes.empty()) std::memcpy(ph.buffer.data() + sizeof(h), msg.bytes.data(), msg.bytes.size());
  std::shared_ptr<cuda::Event> done;
  if (has_body) {
    // The link stream starts the send only after the producer's stream has written the body.
    cuda::Event written;
    written.record(cuda::current_stream(im.device));
    written.wait(l.stream);
    // The body's block is not reused before the send has read it, even after this message is dropped.
    cuda::record_stream(msg.body, l.stream);
    done = std::make_shared<cuda::Event>();
  }
  {
    // Header and body leave in the same order on this link (the receiver posts receives in header order).
    std::lock_guard<std::timed_mutex> lock(im.nccl_mu);
    std::lock_guard<std::mutex> pending(im.pending_mu);
    im.pending_headers.push_back(std::move(ph));
    Impl::PendingHeader& p = im.pending_headers.back();
    MPI_Isend(p.buffer.data(), static_cast<int>(p.buffer.size()), MPI_BYTE, dest, kHeaderTag, im.header_comm,
              &p.request);
    if (has_body) {
      DGP_NCCL_CHECK(
          ncclSend(msg.body.raw_data(), static_cast<size_t>(msg.body.numel()), ncclUint8, l.peer_in_comm,
                   l.comm, static_cast<cudaStream_t>(l.stream.raw())),
          l.comm,
          describe("sending", msg.kind, msg.micro_batch, msg.step, msg.src_stage, msg.dst_stage, dest));
      done->record(l.stream);
    }
  }
  if (done)
    im.watch(done, timeout_,
             describe("sending", msg.kind, msg.micro_batch, msg.step, msg.src_stage, msg.dst_stage, dest));
}

Message NcclChannel::recv(int src, int dst, MsgKind kind, int micro_batch, int64_t step) {
  Impl& im = *impl_;
  // The header (and thus the address check) arrives through the mailbox with the channel timeout.
  Message m = im.mailbox.take(src, dst, kind, micro_batch, step, timeout_, timeout_text());
  if (m.body.defined() && m.body.is_cuda() && m.body_ready) {
    cuda::Stream consumer = cuda::current_stream(m.body.device().index);
    m.body_ready->wait(consumer);
    cuda::record_stream(m.body, consumer);
    if (stage_rank_.at(src) != rank_)
      im.watch(m.body_ready, timeout_,
               describe("receiving", kind, micro_batch, step, src, dst, stage_rank_.at(src)));
  }
  return m;
}

void NcclChannel::abort(const std::string& reason) {
  Impl& im = *impl_;
  im.mailbox.abort(reason);
  if (!im.aborting.exchange(true)) {
    // Abort even if another thread holds the NCCL lock: that is what ncclCommAbort is for.
    bool locked = im.nccl_mu.try_lock_for(std::chrono::seconds(2));
    for (ncclComm_t c : im.all_comms()) ncclCommAbort(c);
    if (locked) im.nccl_mu.unlock();
  }
}

void NcclChannel::end_after_failure(const std::string& reason) {
  abort(reason);
  Impl& im = *impl_;
  im.stop = true;  // the progress thread leaves at once when aborting: no other thread stays inside MPI
  if (im.progress.joinable() && im.progress.get_id() != std::this_thread::get_id()) im.progress.join();
  abort_mpi_job(rank_, reason);
}

}  // namespace dgpipe::pipeline
#endif
