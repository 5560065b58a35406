// CUDA runtime services for CPU code: devices, streams, events, the caching allocator's statistics, pinned
// host buffers and CUDA graphs. This header has no CUDA types, so any translation unit may include it; in a
// build without CUDA (-DDGPIPE_WITH_CUDA=OFF, engine/cuda/cuda_stub.cpp) every function here throws a clear
// error except the queries (device_count() returns 0, memory_stats() returns zeros).
//
// Model: each thread has a current device and, per device, a current stream (the legacy default stream unless
// set). Every op runs on the current stream of its tensors' device. Ordering across streams uses events.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "engine/tensor.h"

namespace dgpipe::engine::cuda {

int device_count();  // same as engine::cuda_device_count()
int current_device();
void set_device(int device);
// Waits for all work on the device (tests and benchmarks only; never in the hot path).
void device_synchronize(int device = -1);

// A CUDA stream. Copies are cheap handles; streams created with create() live until the process ends (a pool,
// as streams are few and long-lived). The default-constructed Stream is the legacy default stream of device
// 0.
class Stream {
 public:
  Stream() = default;
  static Stream create(int device = -1, bool high_priority = false);
  static Stream default_stream(int device = -1);
  // Wraps an existing cudaStream_t (not owned).
  static Stream from_raw(void* handle, int device) { return Stream(handle, device); }
  void* raw() const { return handle_; }  // cudaStream_t
  int device() const { return device_; }
  void synchronize() const;
  bool query() const;  // true when all work on the stream has completed
  bool operator==(const Stream& o) const { return handle_ == o.handle_ && device_ == o.device_; }
  bool operator!=(const Stream& o) const { return !(*this == o); }

 private:
  Stream(void* h, int d) : handle_(h), device_(d) {}
  void* handle_ = nullptr;
  int device_ = 0;
};

Stream current_stream(int device = -1);
void set_current_stream(const Stream& s);  // for s.device(), on this thread

// Sets the current stream (and device) for a scope; restores both on exit.
class StreamGuard {
 public:
  explicit StreamGuard(const Stream& s);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream previous_;
  int previous_device_;
};

class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_;
};

// A CUDA event (created lazily on the first record()). timing=true enables elapsed_ms().
class Event {
 public:
  explicit Event(bool timing = false);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(const Stream& s);
  void record() { record(current_stream()); }
  void wait(const Stream& s) const;  // s waits for this event (no host sync)
  void synchronize() const;
  bool query() const;
  float elapsed_ms(const Event& end) const;  // this = start

 private:
  void* event_ = nullptr;
  int device_ = -1;
  bool timing_;
};

// ---- caching allocator ----
struct MemoryStats {
  size_t allocated = 0;       // bytes in blocks handed out (rounded block sizes)
  size_t reserved = 0;        // bytes obtained from cudaMalloc and still held
  size_t peak_allocated = 0;  // max of `allocated` since start or reset_peak_stats
  size_t peak_reserved = 0;
  uint64_t num_allocs = 0;          // allocate() calls served
  uint64_t num_device_mallocs = 0;  // cudaMalloc calls (steady state: no new ones)
  uint64_t num_device_frees = 0;
};
MemoryStats memory_stats(int device = -1);
void reset_peak_stats(int device = -1);
// Returns every cached, unused segment to the driver (synchronises the device).
void empty_cache(int device = -1);
// Marks that the storage of t is used on stream s (other than the one it was allocated on): its block is not
// reused until the work queued on s before the block is freed has finished.
void record_stream(const Tensor& t, const Stream& s);

// ---- pinned host memory ----
// Page-locked host memory for fast, asynchronous host<->device copies. The tensor is on the CPU.
Tensor empty_pinned(const Shape& shape, DType dtype = DType::f32);

// ---- math modes ----
// TF32 tensor-core math for fp32 GEMM and convolution is off unless asked for (it changes fp32 results).
void set_allow_tf32(bool allow);
bool allow_tf32();

// ---- CUDA graphs ----
// Captures the work issued on the current (non-default) stream between capture_begin() and capture_end(), and
// replays it. Memory allocated during capture comes from a pool private to the graph (so replays never
// clobber tensors allocated afterwards) and is kept until the graph is destroyed. The captured region must
// not allocate new device memory from the driver, synchronise, or copy from pageable host memory: run the
// step a few times before capturing so the caching allocator is warm.
class Graph {
 public:
  Graph();
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  void capture_begin();
  void capture_end();
  void replay();  // on the stream capture ran on
  bool captured() const { return exec_ != nullptr; }

 private:
  void* graph_ = nullptr;  // cudaGraph_t
  void* exec_ = nullptr;   // cudaGraphExec_t
  Stream stream_;
  uint64_t pool_id_ = 0;
  int device_ = 0;
};

// True while the current stream of the current device is being captured.
bool is_capturing();

// Throws "<what>: dgpipe was built without CUDA (...)". What the stubs of a build without CUDA
// (engine/cuda/cuda_stub.cpp, compress/cuda_stub.cpp) call in place of the runtime and the CUDA launchers.
[[noreturn]] void fail_without_cuda(const char* what);

}  // namespace dgpipe::engine::cuda
