// Devices, per-thread current device/stream, events, error reporting, library handles and math modes.
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "engine/cuda/cuda_context.cuh"
#include "engine/device.h"

namespace dgpipe::engine {

namespace {

// Asks the runtime once. "No driver" (cudaDriverGetVersion gives 0; the runtime then says
// cudaErrorInsufficientDriver) and "no GPU" (cudaErrorNoDevice) are the normal state of a CPU-only machine;
// any other failure means a driver is there and cannot be used, which a GPU check must see.
cuda::DeviceStatus query_devices() {
  cuda::DeviceStatus st;
  cudaDriverGetVersion(&st.driver_version);
  cudaRuntimeGetVersion(&st.runtime_version);
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  (void)cudaGetLastError();  // clear the sticky state of a failed query
  if (err == cudaSuccess) {
    st.count = n;
    if (n == 0) st.reason = "the NVIDIA driver reports no GPU";
  } else if (st.driver_version == 0) {
    st.reason = "no NVIDIA driver on this machine";
  } else if (err == cudaErrorNoDevice) {
    st.reason = "the NVIDIA driver reports no GPU (cudaErrorNoDevice)";
  } else {
    st.error = true;
    std::ostringstream os;
    os << cudaGetErrorName(err) << " (" << cudaGetErrorString(err) << ") from cudaGetDeviceCount";
    st.reason = os.str();
  }
  return st;
}

}  // namespace

int cuda_device_count() {
  return cuda::device_status().count;
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

DeviceStatus device_status() {
  static const DeviceStatus status = query_devices();
  return status;
}

std::string runtime_report() {
  const int n = cuda_device_count();
  if (n == 0) return "";
  std::ostringstream os;
  for (int d = 0; d < n; ++d) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    os << "cuda:" << d << " " << p.name << " (sm_" << p.major << p.minor << ", " << (p.totalGlobalMem >> 20)
       << " MiB, " << p.multiProcessorCount << " SMs); ";
  }
  int blas_major = 0, blas_minor = 0, blas_patch = 0;
  cublasGetProperty(MAJOR_VERSION, &blas_major);
  cublasGetProperty(MINOR_VERSION, &blas_minor);
  cublasGetProperty(PATCH_LEVEL, &blas_patch);
  const size_t dnn = cudnnGetVersion();
  os << "cuBLAS " << blas_major << "." << blas_minor << "." << blas_patch << " (built against "
     << CUBLAS_VER_MAJOR << "." << CUBLAS_VER_MINOR << "." << CUBLAS_VER_PATCH << "), cuDNN " << dnn / 10000
     << "." << (dnn % 10000) / 100 << "." << dnn % 100 << " (built against " << CUDNN_MAJOR << "."
     << CUDNN_MINOR << "." << CUDNN_PATCHLEVEL << ")";
  return os.str();
}

// ---- errors reported by kernels ----

namespace {

struct ErrorSlots {
  std::mutex mu;
  DeviceErrorSlot* host[kMaxDevices] = {};  // mapped pinned memory; the device sees the same address (UVA)
};
ErrorSlots& error_slots() {
  static ErrorSlots* slots = new ErrorSlots;  // lives until exit: kernels may still hold the address
  return *slots;
}

}  // namespace

DeviceErrorSlot* device_error_slot(int device) {
  ErrorSlots& slots = error_slots();
  std::lock_guard<std::mutex> lock(slots.mu);
  if (!slots.host[device]) {
    DeviceGuard g(device);
    void* p = nullptr;
    DGP_CUDA_CHECK(cudaHostAlloc(&p, sizeof(DeviceErrorSlot), cudaHostAllocMapped | cudaHostAllocPortable));
    *static_cast<DeviceErrorSlot*>(p) = DeviceErrorSlot{};
    void* on_device = nullptr;
    DGP_CUDA_CHECK(cudaHostGetDevicePointer(&on_device, p, 0));
    DGP_CHECK(on_device == p, "device error slot: mapped memory has a different device address");
    slots.host[device] = static_cast<DeviceErrorSlot*>(p);
  }
  return slots.host[device];
}

void check_device_errors(int device) {
  if (cuda_device_count() == 0) return;
  device = resolve(device);
  DeviceErrorSlot* slot = nullptr;
  {
    ErrorSlots& slots = error_slots();
    std::lock_guard<std::mutex> lock(slots.mu);
    slot = slots.host[device];
  }
  if (!slot) return;  // no kernel that reports has run on this device
  volatile DeviceErrorSlot* v = slot;
  const int code = v->code;
  if (code == 0) return;
  const int64_t index = v->index, bound = v->bound;
  v->code = 0;
  DGP_FAIL(describe_device_error(static_cast<DeviceErrorCode>(code), index, bound)
           << " (reported by a kernel on cuda:" << device << ", seen at the next synchronisation)");
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
  check_device_errors(device);
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
  check_device_errors(device_);
}

namespace {
void CUDART_CB run_host_func(void* arg) {
  std::unique_ptr<std::function<void()>> fn(static_cast<std::function<void()>*>(arg));
  (*fn)();
}
}  // namespace

void Stream::launch_host_func(std::function<void()> fn) const {
  DeviceGuard g(device_);
  auto* arg = new std::function<void()>(std::move(fn));
  cudaError_t err = cudaLaunchHostFunc(static_cast<cudaStream_t>(handle_), run_host_func, arg);
  if (err != cudaSuccess) delete arg;
  DGP_CUDA_CHECK(err);
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
  if (!event_) return;
  DGP_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
  check_device_errors(device_);
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
// DGPIPE_TF32=0 turns the convolution default off (see engine/cuda.h).
bool tf32_conv_default() {
  const char* v = std::getenv("DGPIPE_TF32");
  return !(v && std::string(v) == "0");
}
std::atomic<bool> g_tf32_matmul{false};
std::atomic<bool> g_tf32_conv{tf32_conv_default()};
}  // namespace

void set_allow_tf32_matmul(bool allow) {
  g_tf32_matmul = allow;
}
bool allow_tf32_matmul() {
  return g_tf32_matmul.load();
}
void set_allow_tf32_conv(bool allow) {
  g_tf32_conv = allow;
}
bool allow_tf32_conv() {
  return g_tf32_conv.load();
}

// ---- handles ----

namespace {

// cuBLAS would otherwise take workspace from its own per-stream pool with cudaMalloc; a buffer from our
// allocator keeps graph capture free of hidden driver calls. One buffer per (handle, stream): the handle's
// kernels on two streams may run at the same time, so they must not share scratch memory. A buffer is taken
// on its stream (the allocator's blocks are stream-ordered) and lives as long as the thread's handle.
constexpr size_t kCublasWorkspaceBytes = 32u << 20;

struct Handles {
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
  cudnnHandle_t dnn = nullptr;
  cudaStream_t blas_stream = nullptr;  // the stream the cuBLAS handle is bound to (with its workspace)
  bool blas_bound = false;
  std::unordered_map<cudaStream_t, void*> blas_workspaces;
  // Handles and workspaces are deliberately not destroyed at thread exit: the driver may already be shutting
  // down then.
};

Handles& handles_for(int device) {
  thread_local std::unordered_map<int, Handles> per_device;
  return per_device[device];
}

}  // namespace

cublasHandle_t cublas_handle(int device) {
  Handles& h = handles_for(device);
  DeviceGuard g(device);
  if (!h.blas) DGP_CUBLAS_CHECK(cublasCreate(&h.blas));
  const cudaStream_t stream = stream_of(device);
  if (!h.blas_bound || h.blas_stream != stream) {
    void*& ws = h.blas_workspaces[stream];
    if (!ws) ws = allocate(kCublasWorkspaceBytes, device);  // on `stream`, the current one
    DGP_CUBLAS_CHECK(cublasSetStream(h.blas, stream));
    // After cublasSetStream, cuBLAS falls back to its default pool until a workspace is set again.
    DGP_CUBLAS_CHECK(cublasSetWorkspace(h.blas, ws, kCublasWorkspaceBytes));
    h.blas_stream = stream;
    h.blas_bound = true;
  }
  DGP_CUBLAS_CHECK(
      cublasSetMathMode(h.blas, allow_tf32_matmul() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
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
