// Devices, per-thread current device/stream, events, error reporting, library handles and math modes.
#include <atomic>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "engine/cuda/cuda_context.cuh"
#include "engine/device.h"

namespace dgpipe::engine {

// Without a driver or a GPU this returns 0 instead of failing: CPU-only machines run the CUDA build too.
int cuda_device_count() {
  static const int count = [] {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky "no driver" state
      return 0;
    }
    return n;
  }();
  return count;
}

namespace cuda {

void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  (void)cudaGetLastError();
  std::ostringstream os;
  os << "CUDA error " << cudaGetErrorName(err) << " (" << cudaGetErrorString(err) << ") in " << expr << " at "
     << file << ":" << line;
  throw Error(os.str());
}

void throw_cublas_error(cublasStatus_t st, const char* expr, const char* file, int line) {
  std::ostringstream os;
  os << "cuBLAS error " << cublasGetStatusName(st) << " (" << cublasGetStatusString(st) << ") in " << expr
     << " at " << file << ":" << line;
  throw Error(os.str());
}

void throw_cudnn_error(cudnnStatus_t st, const char* expr, const char* file, int line) {
  std::ostringstream os;
  os << "cuDNN error " << cudnnGetErrorString(st) << " in " << expr << " at " << file << ":" << line;
  throw Error(os.str());
}

namespace {

void check_device(int device, const char* what) {
  int n = cuda_device_count();
  DGP_CHECK(n > 0, what << ": no CUDA device is available (driver missing or no GPU)");
  DGP_CHECK(device >= 0 && device < n,
            what << ": device cuda:" << device << " does not exist (" << n << " device(s))");
}

constexpr int kMaxDevices = 64;

struct ThreadState {
  int device = -1;  // -1: ask the runtime
  cudaStream_t streams[kMaxDevices] = {};
};
thread_local ThreadState t_state;

int resolve(int device) {
  return device < 0 ? current_device() : device;
}

}  // namespace

int device_count() {
  return cuda_device_count();
}

int current_device() {
  if (t_state.device >= 0) return t_state.device;
  int d = 0;
  if (cuda_device_count() > 0) DGP_CUDA_CHECK(cudaGetDevice(&d));
  t_state.device = d;
  return d;
}

void set_device(int device) {
  check_device(device, "set_device");
  DGP_CUDA_CHECK(cudaSetDevice(device));
  t_state.device = device;
}

void device_synchronize(int device) {
  device = resolve(device);
  DeviceGuard g(device);
  DGP_CUDA_CHECK(cudaDeviceSynchronize());
}

DeviceGuard::DeviceGuard(int device) : previous_(current_device()) {
  if (device != previous_) set_device(device);
}
DeviceGuard::~DeviceGuard() {
  if (t_state.device != previous_ && previous_ >= 0) {
    cudaSetDevice(previous_);
    t_state.device = previous_;
  }
}

TensorDeviceGuard::TensorDeviceGuard(const Tensor& t) {
  int want = t.device().index;
  int cur = current_device();
  if (want != cur) {
    previous_ = cur;
    set_device(want);
  }
}
TensorDeviceGuard::~TensorDeviceGuard() {
  if (previous_ >= 0) {
    cudaSetDevice(previous_);
    t_state.device = previous_;
  }
}

// ---- streams ----

Stream Stream::create(int device, bool high_priority) {
  device = resolve(device);
  check_device(device, "Stream::create");
  DeviceGuard g(device);
  int least = 0, greatest = 0;
  DGP_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  cudaStream_t s = nullptr;
  DGP_CUDA_CHECK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, high_priority ? greatest : least));
  return Stream::from_raw(s, device);
}

Stream Stream::default_stream(int device) {
  return Stream::from_raw(nullptr, resolve(device));
}

void Stream::synchronize() const {
  DeviceGuard g(device_);
  DGP_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(handle_)));
}

bool Stream::query() const {
  DeviceGuard g(device_);
  cudaError_t err = cudaStreamQuery(static_cast<cudaStream_t>(handle_));
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  DGP_CUDA_CHECK(err);
  return true;
}

Stream current_stream(int device) {
  device = resolve(device);
  DGP_CHECK(device >= 0 && device < kMaxDevices,
            "current_stream: device index " << device << " out of range");
  return Stream::from_raw(t_state.streams[device], device);
}

void set_current_stream(const Stream& s) {
  DGP_CHECK(s.device() >= 0 && s.device() < kMaxDevices, "set_current_stream: bad device " << s.device());
  t_state.streams[s.device()] = static_cast<cudaStream_t>(s.raw());
}

StreamGuard::StreamGuard(const Stream& s)
    : previous_(current_stream(s.device())), previous_device_(current_device()) {
  if (s.device() != previous_device_) set_device(s.device());
  set_current_stream(s);
}
StreamGuard::~StreamGuard() {
  set_current_stream(previous_);
  if (current_device() != previous_device_) {
    cudaSetDevice(previous_device_);
    t_state.device = previous_device_;
  }
}

// ---- events ----

Event::Event(bool timing) : timing_(timing) {}
Event::~Event() {
  if (event_) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
}

void Event::record(const Stream& s) {
  DeviceGuard g(s.device());
  if (!event_) {
    cudaEvent_t e = nullptr;
    DGP_CUDA_CHECK(cudaEventCreateWithFlags(&e, timing_ ? cudaEventDefault : cudaEventDisableTiming));
    event_ = e;
    device_ = s.device();
  }
  DGP_CHECK(device_ == s.device(),
            "Event::record: event of cuda:" << device_ << " recorded on a stream of cuda:" << s.device());
  DGP_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), static_cast<cudaStream_t>(s.raw())));
}

void Event::wait(const Stream& s) const {
  if (!event_) return;  // never recorded: nothing to wait for
  DeviceGuard g(s.device());
  DGP_CUDA_CHECK(
      cudaStreamWaitEvent(static_cast<cudaStream_t>(s.raw()), static_cast<cudaEvent_t>(event_), 0));
}

void Event::synchronize() const {
  if (event_) DGP_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
}

bool Event::query() const {
  if (!event_) return true;
  cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(event_));
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  DGP_CUDA_CHECK(err);
  return true;
}

float Event::elapsed_ms(const Event& end) const {
  DGP_CHECK(event_ && end.event_, "Event::elapsed_ms: both events must have been recorded");
  DGP_CHECK(timing_ && end.timing_, "Event::elapsed_ms: events must be created with timing=true");
  float ms = 0;
  DGP_CUDA_CHECK(
      cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(event_), static_cast<cudaEvent_t>(end.event_)));
  return ms;
}

// ---- device properties ----

int sm_count(int device) {
  static std::mutex mu;
  static std::vector<int> counts;
  std::lock_guard<std::mutex> lock(mu);
  if (counts.empty()) counts.assign(kMaxDevices, 0);
  if (counts[device] == 0) {
    int n = 0;
    DGP_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    counts[device] = n > 0 ? n : 1;
  }
  return counts[device];
}

// ---- math modes ----

namespace {
std::atomic<bool> g_allow_tf32{false};
}
void set_allow_tf32(bool allow) {
  g_allow_tf32 = allow;
}
bool allow_tf32() {
  return g_allow_tf32.load();
}

// ---- handles ----

namespace {

// cuBLAS keeps its own workspace per stream unless given one; handing it a fixed buffer from our allocator
// keeps graph capture free of hidden cudaMalloc calls.
constexpr size_t kCublasWorkspaceBytes = 32u << 20;

struct Handles {
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
  cudnnHandle_t dnn = nullptr;
  void* blas_workspace = nullptr;
  // Handles are deliberately not destroyed at thread exit: the driver may already be shutting down then.
};

Handles& handles_for(int device) {
  thread_local std::unordered_map<int, Handles> per_device;
  return per_device[device];
}

}  // namespace

cublasHandle_t cublas_handle(int device) {
  Handles& h = handles_for(device);
  DeviceGuard g(device);
  if (!h.blas) {
    DGP_CUBLAS_CHECK(cublasCreate(&h.blas));
    h.blas_workspace = allocate(kCublasWorkspaceBytes, device);
    DGP_CUBLAS_CHECK(cublasSetWorkspace(h.blas, h.blas_workspace, kCublasWorkspaceBytes));
  }
  DGP_CUBLAS_CHECK(cublasSetStream(h.blas, stream_of(device)));
  // Re-bind the workspace after a stream change (cuBLAS resets it to its default pool on cublasSetStream).
  DGP_CUBLAS_CHECK(cublasSetWorkspace(h.blas, h.blas_workspace, kCublasWorkspaceBytes));
  DGP_CUBLAS_CHECK(
      cublasSetMathMode(h.blas, allow_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  return h.blas;
}

cublasLtHandle_t cublaslt_handle(int device) {
  Handles& h = handles_for(device);
  if (!h.lt) {
    DeviceGuard g(device);
    DGP_CUBLAS_CHECK(cublasLtCreate(&h.lt));
  }
  return h.lt;
}

cudnnHandle_t cudnn_handle(int device) {
  Handles& h = handles_for(device);
  DeviceGuard g(device);
  if (!h.dnn) DGP_CUDNN_CHECK(cudnnCreate(&h.dnn));
  DGP_CUDNN_CHECK(cudnnSetStream(h.dnn, stream_of(device)));
  return h.dnn;
}

}  // namespace cuda
}  // namespace dgpipe::engine
