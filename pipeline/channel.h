// Channels move serialized packets between pipeline stages.
//
// Every message is addressed by (source stage, destination stage, kind) and is delivered in FIFO order per
// address. send() never blocks (messages are buffered); recv() blocks until the next message for that address
// arrives, the timeout expires (an error naming the peer stage, the micro-batch and the step), or the channel
// is aborted because another stage failed (an error naming that stage and its reason). So a dead or stuck
// peer never leaves the others hanging.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "engine/cuda.h"
#include "engine/tensor.h"

namespace dgpipe::pipeline {

enum class MsgKind : uint8_t { activation = 0, gradient = 1, control = 2 };
const char* msg_kind_name(MsgKind k);

struct Message {
  int src_stage = 0;
  int dst_stage = 0;
  MsgKind kind = MsgKind::activation;
  int micro_batch = 0;
  int64_t step = 0;
  // host bytes: the whole message, or (device-body channels) everything but the body (and, with a channel
  // that carries_side_tensors(), everything but the body and the side inputs)
  std::vector<uint8_t> bytes;
  // Only with a channel that carries_device_bodies(): the packet body, a 1-D contiguous u8 tensor that stays
  // on its device (undefined when the packet has no body). Host-byte channels leave it empty.
  engine::Tensor body;
  // Only with a channel that carries_side_tensors(): the side inputs of an activation as tensors on the
  // sender's device, one per field of layers::BlockContext in its order (undefined: absent). Empty otherwise.
  std::vector<engine::Tensor> side_inputs;
  // Set by a channel when `body` (or a side input) is a CUDA tensor written by work still queued on another
  // stream: recv() has already made the receiver's current stream on that device wait for it, and marked the
  // tensors used there; kept so the event outlives that wait.
  std::shared_ptr<engine::cuda::Event> body_ready;
};

// Bytes a message puts on the wire: host bytes plus the device body, if any, plus each side input carried
// as a tensor at the size of its tensor record (what it costs as host bytes).
size_t message_bytes(const Message& msg);

// Tensor records: how a side input travels as host bytes. present u8 | dtype u8 | ndim u8 | dims i64... |
// raw bytes (C order); an undefined tensor is the single byte 0.
void put_tensor_record(std::vector<uint8_t>& out, const engine::Tensor& t);
// Reads one record at p (advancing it; never past end: a short record is an error) onto `device`.
engine::Tensor get_tensor_record(const uint8_t*& p, const uint8_t* end, engine::Device device);
// The bytes put_tensor_record appends for t.
size_t tensor_record_bytes(const engine::Tensor& t);

// Emulated link: time on the wire = latency + bytes / bandwidth, messages on one directed link serialized.
struct LinkModel {
  double bandwidth_bytes_per_s = 0;  // 0 = unlimited
  double latency_s = 0;
  bool throttled() const { return bandwidth_bytes_per_s > 0 || latency_s > 0; }
};
// "1gbit", "100mbit", "10MB", "512KiB", "2.5GB" (per second; bit units are decimal, /8) -> bytes per second.
double parse_bandwidth(const std::string& text);
// "5ms", "100us", "0.2s", "0" -> seconds.
double parse_latency(const std::string& text);

class Channel {
 public:
  virtual ~Channel() = default;
  virtual void send(Message msg) = 0;
  virtual Message recv(int src_stage, int dst_stage, MsgKind kind, int micro_batch, int64_t step) = 0;
  // Marks the whole pipeline failed: every blocked or later recv throws with this reason. Called by a failing
  // stage's thread (any thread); idempotent.
  virtual void abort(const std::string& reason) = 0;
  // Called once after a failed step by the thread that ran it, when every stage of this process has stopped.
  // A channel of one process per rank ends the whole job here (MPI_Abort), from the one thread of the process
  // that still uses MPI: MPI_Abort from two stage threads at once crashed rank 0 with signal 11 (Open MPI's
  // help-text printer is not reentrant). Other channels leave it to the caller to rethrow the error.
  virtual void end_after_failure(const std::string& reason) { (void)reason; }
  // True when the channel moves a packet body as a device tensor (Message::body) next to the host bytes,
  // instead of inside them; the executor then sends only the packet header as bytes (see executor.cpp).
  virtual bool carries_device_bodies() const { return false; }
  // True when the channel also moves the side inputs as tensors (Message::side_inputs): sender and receiver
  // share a process, so nothing of an activation but its packet header becomes host bytes. Implies
  // carries_device_bodies().
  virtual bool carries_side_tensors() const { return false; }
  // How long a recv waits; `why` (e.g. how the bound was chosen) is added to the error a timeout raises.
  void set_timeout(std::chrono::milliseconds t, std::string why = "") {
    timeout_ = t;
    timeout_why_ = std::move(why);
  }
  std::chrono::milliseconds timeout() const { return timeout_; }

 protected:
  // "within 30 s (peer dead or stuck; ...)": the end of every timeout error.
  std::string timeout_text() const;
  std::chrono::milliseconds timeout_{std::chrono::seconds(120)};
  std::string timeout_why_;
};

// In-process mailbox shared by the local channel and by the same-rank part of the MPI channel.
class Mailbox {
 public:
  void put(Message msg, std::chrono::steady_clock::time_point deliver_at);
  // Blocks until a message for the address can be delivered; throws on timeout (its message ends with
  // timeout_text: "within 30 s (...)") or abort.
  Message take(int src_stage, int dst_stage, MsgKind kind, int micro_batch, int64_t step,
               std::chrono::milliseconds timeout, const std::string& timeout_text);
  void abort(const std::string& reason);
  bool aborted() const;

 private:
  using Key = std::tuple<int, int, int>;
  struct Pending {
    Message msg;
    std::chrono::steady_clock::time_point deliver_at;
  };
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<Key, std::deque<Pending>> queues_;
  std::string abort_reason_;
};

// Throttle state per directed link: when the wire is next free.
class LinkThrottle {
 public:
  explicit LinkThrottle(LinkModel model = {}) : model_(model) {}
  // Reserves the wire for `bytes` starting no earlier than now; returns when the last byte arrives.
  std::chrono::steady_clock::time_point reserve(int src_stage, int dst_stage, size_t bytes);
  const LinkModel& model() const { return model_; }

 private:
  LinkModel model_;
  std::mutex mu_;
  std::map<std::pair<int, int>, std::chrono::steady_clock::time_point> wire_free_;
};

// Stages as threads in one process. Messages are moved, not copied: a packet body and the side inputs travel
// as the tensors the sender made, on its device (no copy to the host and back, and so no host-device sync),
// and the receiving stage moves them to its own device if that differs. Bytes are charged to the link as
// if they were serialized (message_bytes), so --link-bandwidth costs what it costs over MPI.
// Payload::host_bytes serializes everything, as the MPI channel must (tests of that path in one process).
class LocalChannel : public Channel {
 public:
  enum class Payload { tensors, host_bytes };
  explicit LocalChannel(LinkModel link = {}, Payload payload = Payload::tensors)
      : throttle_(link), payload_(payload) {}
  // A CUDA tensor in the message: an event recorded on the sender's current stream (after the work that
  // wrote it) goes with it.
  void send(Message msg) override;
  // ... and the receiver's current stream on that device waits for the event before anything reads them.
  Message recv(int src_stage, int dst_stage, MsgKind kind, int micro_batch, int64_t step) override;
  void abort(const std::string& reason) override { mailbox_.abort(reason); }
  bool carries_device_bodies() const override { return payload_ == Payload::tensors; }
  bool carries_side_tensors() const override { return payload_ == Payload::tensors; }

 private:
  Mailbox mailbox_;
  LinkThrottle throttle_;
  Payload payload_;
};

#ifdef DGPIPE_WITH_MPI
// One process per rank (mpirun); stage_rank[s] says which rank runs stage s. Same-rank messages go through
// the mailbox, others through MPI point-to-point with tags per (src, dst, kind). Needs MPI_THREAD_MULTIPLE.
class MpiChannel : public Channel {
 public:
  MpiChannel(std::vector<int> stage_rank, LinkModel link = {});
  ~MpiChannel() override;
  void send(Message msg) override;
  Message recv(int src_stage, int dst_stage, MsgKind kind, int micro_batch, int64_t step) override;
  // Wakes this process's stages and stops sending; no MPI call (see end_after_failure).
  void abort(const std::string& reason) override;
  // Stops the sender thread, prints the reason and aborts the whole MPI job (every rank exits non-zero).
  void end_after_failure(const std::string& reason) override;
  int rank() const { return rank_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<int> stage_rank_;
  int rank_ = 0;
  Mailbox mailbox_;
  LinkThrottle throttle_;
};

// Initialises MPI with MPI_THREAD_MULTIPLE once per process (idempotent) and returns (rank, size).
std::pair<int, int> mpi_init(int* argc, char*** argv);
void mpi_finalize();
// Prints "dgpipe rank R: reason" and calls MPI_Abort; a second caller (another thread) waits for the first
// to end the process instead of entering MPI_Abort too.
[[noreturn]] void abort_mpi_job(int rank, const std::string& reason);
#endif

#if defined(DGPIPE_WITH_CUDA) && defined(DGPIPE_WITH_MPI) && defined(DGPIPE_WITH_NCCL)
// GPU<->GPU between processes (mpirun, one CUDA device per rank): packet bodies stay on the device and move
// with ncclSend/ncclRecv; the small host part of a message (packet header, side inputs, address) moves with
// MPI, ahead of its body, so the receiver knows the body size and allocates before posting the receive.
// Same-rank messages go through the mailbox with an event. See pipeline/channel_nccl.cpp and docs/pipeline.md
// for the ordering, stream and failure design. Untested on real hardware: it needs two GPUs (NCCL refuses two
// ranks on one GPU).
class NcclChannel : public Channel {
 public:
  // Collective: every rank of MPI_COMM_WORLD constructs it (after mpi_init) with the same stage_rank.
  // `device` is this rank's CUDA device (every stage of the rank must run there).
  NcclChannel(std::vector<int> stage_rank, int device, LinkModel link = {});
  ~NcclChannel() override;
  void send(Message msg) override;
  Message recv(int src_stage, int dst_stage, MsgKind kind, int micro_batch, int64_t step) override;
  // Wakes this process's stages and aborts every NCCL communicator (so kernels waiting for a dead peer
  // return); no MPI call.
  void abort(const std::string& reason) override;
  // Stops the progress thread, then aborts the whole MPI job (abort_mpi_job).
  void end_after_failure(const std::string& reason) override;
  bool carries_device_bodies() const override { return true; }
  int rank() const { return rank_; }

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  std::vector<int> stage_rank_;
  int rank_ = 0;
};
#endif

}  // namespace dgpipe::pipeline
