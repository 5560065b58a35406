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
#include <functional>
#include <memory>
#include <string>

#include "engine/tensor.h"

namespace dgpipe::engine::cuda {

int device_count();  // same as engine::cuda_device_count()

// What the CUDA runtime answered when first asked for devices (cached for the process). Without a device
// there are two cases that must not be confused: a machine with no NVIDIA driver or no GPU (CI, a laptop:
// CUDA tests skip) and a machine whose driver is present but unusable, e.g. older than the CUDA runtime the
// binaries were built with (every CUDA test would skip too, so a GPU check must treat it as a failure).
struct DeviceStatus {
  int count = 0;            // usable devices
  bool error = false;       // true: a driver is installed but the runtime could not use it
  std::string reason;       // why count is 0 (empty otherwise): "no NVIDIA driver ...", or the CUDA error
  int driver_version = 0;   // what the driver supports (cudaDriverGetVersion, 13000 = 13.0); 0: no driver
  int runtime_version = 0;  // the CUDA runtime dgpipe was built with (cudaRuntimeGetVersion)
};
DeviceStatus device_status();
// One line for logs, e.g. "1 CUDA device(s); driver supports CUDA 13.0, runtime 13.0",
// "no CUDA device: no NVIDIA driver on this machine" or "CUDA ERROR: cudaErrorInsufficientDriver (...)".
std::string describe(const DeviceStatus& status);
// Names and versions of what the backend runs on, one line: devices (name, compute capability, memory) and
// the cuBLAS and cuDNN versions loaded (and those dgpipe was compiled against). "" without a device.
std::string runtime_report();
int current_device();
void set_device(int device);
// Waits for all work on the device (tests and benchmarks only; never in the hot path).
void device_synchronize(int device = -1);

// ---- errors reported by kernels ----
// A kernel that meets bad input it cannot validate on the host without a sync (an index out of range) must
// neither trap (that poisons the CUDA context for the rest of the process) nor touch memory it does not own.
// It skips the element and writes the first such problem into a per-device slot; the host reads the slot at
// the next natural synchronisation (a device-to-host copy such as item() or to_vector(), Stream/Event/device
// synchronize) and throws there, naming the op, the index and the valid range.
enum class DeviceErrorCode : int32_t {
  none = 0,
  embedding_index = 1,
  index_select_index = 2,
  index_add_index = 3
};
// The message of a reported problem (also used by the host side; testable without a device).
std::string describe_device_error(DeviceErrorCode code, int64_t index, int64_t bound);
// Throws (and clears the slot) when a kernel on `device` reported a problem since the last check. Called by
// the synchronising functions; call it after an explicit synchronisation of your own.
void check_device_errors(int device = -1);

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
  // Runs fn on a driver thread once the work queued on this stream so far has finished; later work on the
  // stream waits until fn returns. fn must not call CUDA. (Tests use it to hold a stream busy on purpose.)
  void launch_host_func(std::function<void()> fn) const;
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
// Returns every cached, unused segment to the driver (synchronises the device). While a communicator is
// registered on the device (CommunicatorScope) it returns nothing and does not synchronise.
void empty_cache(int device = -1);
// Marks that the storage of t is used on stream s (other than the one it was allocated on): its block is not
// reused until the work queued on s before the block is freed has finished.
void record_stream(const Tensor& t, const Stream& s);

// NCCL communicators and the allocator. cudaFree and cudaDeviceSynchronize wait for every kernel on the
// device, including a transfer kernel that waits for its peer, which may in turn wait for this process: a
// hang. While at least one CommunicatorScope is alive on a device, the allocator's out-of-memory path and
// empty_cache() therefore neither synchronise the device nor return memory to the driver (out of memory:
// cached blocks of streams that are idle are reused instead, else the error says why nothing was released),
// and allocations made under a ReceivePoolGuard (the receive buffers of a channel) come from a pool that
// serves only them and is never released, so in steady state a receive never meets the out-of-memory path.
class CommunicatorScope {
 public:
  explicit CommunicatorScope(int device);
  ~CommunicatorScope();
  CommunicatorScope(const CommunicatorScope&) = delete;
  CommunicatorScope& operator=(const CommunicatorScope&) = delete;

 private:
  int device_;
};
bool communicators_live(int device = -1);

class ReceivePoolGuard {  // on this thread, for the scope
 public:
  ReceivePoolGuard();
  ~ReceivePoolGuard();
  ReceivePoolGuard(const ReceivePoolGuard&) = delete;
  ReceivePoolGuard& operator=(const ReceivePoolGuard&) = delete;

 private:
  bool previous_;
};

// ---- pinned host memory ----
// Page-locked host memory for fast, asynchronous host<->device copies. The tensor is on the CPU.
Tensor empty_pinned(const Shape& shape, DType dtype = DType::f32);

// ---- math modes ----
// TF32 tensor-core math for fp32, as in PyTorch: on by default for convolutions (cuDNN), off by default for
// GEMM (cuBLAS). TF32 keeps 10 mantissa bits of the inputs (relative error ~1e-3 per product, accumulation
// in fp32). The environment variable DGPIPE_TF32=0 turns the convolution default off for a whole process
// (the GPU check's exact-fp32 runs); tests that compare fp32 convolutions with the CPU tightly pin it off
// with a MathModeGuard.
void set_allow_tf32_matmul(bool allow);
bool allow_tf32_matmul();
void set_allow_tf32_conv(bool allow);
bool allow_tf32_conv();
// Sets both for a scope; restores the previous modes on exit.
class MathModeGuard {
 public:
  MathModeGuard(bool tf32_matmul, bool tf32_conv);
  ~MathModeGuard();
  MathModeGuard(const MathModeGuard&) = delete;
  MathModeGuard& operator=(const MathModeGuard&) = delete;

 private:
  bool matmul_, conv_;
};

// ---- CUDA graphs ----
// Captures the work issued on the current (non-default) stream between capture_begin() and capture_end(), and
// replays it. Memory allocated on the capturing stream during capture comes from a pool private to the graph
// (so replays never clobber tensors allocated afterwards; other streams keep allocating from the general
// pool), and blocks freed during capture that the graph may touch (its pool's, and those of the capturing
// stream) are not reused until the graph is destroyed. The captured region must
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
