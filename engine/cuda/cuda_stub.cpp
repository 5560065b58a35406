// The CUDA backend of the engine in a build without CUDA (compiled instead of the .cu files, see
// dgpipe_library in CMakeLists.txt): the runtime of engine/cuda.h and storage.h, and every launcher declared
// in an engine/**/*_kernels.h header. Queries answer "no device"; everything else throws, naming what could
// not run. CPU code therefore calls the launchers unconditionally when a tensor is on CUDA (which, in this
// build, no tensor can be: Storage::allocate refuses first). A launcher added to a header without a stub here
// leaves this build with an undefined symbol, and tests/engine/test_cuda_ops.cpp names it.
#include <string>

#include "engine/cuda.h"
#include "engine/ops/batch_norm_kernels.h"
#include "engine/ops/conv_kernels.h"
#include "engine/ops/copy_kernels.h"
#include "engine/ops/dropout_kernels.h"
#include "engine/ops/elementwise_kernels.h"
#include "engine/ops/embedding_kernels.h"
#include "engine/ops/layer_norm_kernels.h"
#include "engine/ops/matmul_kernels.h"
#include "engine/ops/pool_kernels.h"
#include "engine/ops/reduce_kernels.h"
#include "engine/ops/shape_kernels.h"
#include "engine/ops/softmax_kernels.h"
#include "engine/optim/optim_kernels.h"

namespace dgpipe::engine {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  cuda::fail_without_cuda(what);
}
}  // namespace

int cuda_device_count() {
  return 0;
}

namespace cuda {

void* allocate(size_t nbytes, int device) {
  const std::string what =
      "cannot allocate " + std::to_string(nbytes) + " bytes on cuda:" + std::to_string(device);
  no_cuda(what.c_str());
}
void deallocate(void*, int) {}
void copy_bytes(void*, Device, const void*, Device, size_t) {
  no_cuda("copy_bytes");
}

int device_count() {
  return 0;
}
DeviceStatus device_status() {
  DeviceStatus st;
  st.reason = "dgpipe was built without CUDA";
  return st;
}
std::string runtime_report() {
  return "";
}
void check_device_errors(int) {}
int current_device() {
  return 0;
}
void set_device(int) {
  no_cuda("set_device");
}
void device_synchronize(int) {
  no_cuda("device_synchronize");
}

Stream Stream::create(int, bool) {
  no_cuda("Stream::create");
}
Stream Stream::default_stream(int device) {
  return Stream::from_raw(nullptr, device < 0 ? 0 : device);
}
void Stream::synchronize() const {
  no_cuda("Stream::synchronize");
}
bool Stream::query() const {
  return true;
}
void Stream::launch_host_func(std::function<void()>) const {
  no_cuda("Stream::launch_host_func");
}
Stream current_stream(int device) {
  return Stream::default_stream(device);
}
void set_current_stream(const Stream&) {
  no_cuda("set_current_stream");
}
StreamGuard::StreamGuard(const Stream&) : previous_(), previous_device_(0) {
  no_cuda("StreamGuard");
}
StreamGuard::~StreamGuard() = default;
DeviceGuard::DeviceGuard(int) : previous_(0) {
  no_cuda("DeviceGuard");
}
DeviceGuard::~DeviceGuard() = default;

Event::Event(bool timing) : timing_(timing) {}
Event::~Event() = default;
void Event::record(const Stream&) {
  no_cuda("Event::record");
}
void Event::wait(const Stream&) const {
  no_cuda("Event::wait");
}
void Event::synchronize() const {}
bool Event::query() const {
  return true;
}
float Event::elapsed_ms(const Event&) const {
  no_cuda("Event::elapsed_ms");
}

MemoryStats memory_stats(int) {
  return MemoryStats{};
}
void reset_peak_stats(int) {}
void empty_cache(int) {}
void record_stream(const Tensor&, const Stream&) {
  no_cuda("record_stream");
}
Tensor empty_pinned(const Shape&, DType) {
  no_cuda("empty_pinned");
}

CommunicatorScope::CommunicatorScope(int device) : device_(device) {}
CommunicatorScope::~CommunicatorScope() = default;
bool communicators_live(int) {
  return false;
}
ReceivePoolGuard::ReceivePoolGuard() : previous_(false) {}
ReceivePoolGuard::~ReceivePoolGuard() = default;

// The math modes are plain flags here (with the CUDA build's defaults), so CPU code may set and read them.
namespace {
bool g_tf32_matmul = false;
bool g_tf32_conv = true;
}  // namespace
void set_allow_tf32_matmul(bool allow) {
  g_tf32_matmul = allow;
}
bool allow_tf32_matmul() {
  return g_tf32_matmul;
}
void set_allow_tf32_conv(bool allow) {
  g_tf32_conv = allow;
}
bool allow_tf32_conv() {
  return g_tf32_conv;
}

Graph::Graph() = default;
Graph::~Graph() = default;
void Graph::capture_begin() {
  no_cuda("Graph::capture_begin");
}
void Graph::capture_end() {
  no_cuda("Graph::capture_end");
}
void Graph::replay() {
  no_cuda("Graph::replay");
}
bool is_capturing() {
  return false;
}

}  // namespace cuda

namespace cuda_kernels {

// ---- batch_norm_kernels.h ----
void batch_norm_forward_training(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                 const Tensor&, const Tensor&, const Tensor&, double, double) {
  no_cuda("batch_norm_forward_training");
}
void batch_norm_forward_inference(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                  const Tensor&, double) {
  no_cuda("batch_norm_forward_inference");
}
void batch_norm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                         const Tensor&, const Tensor&, const Tensor&, bool) {
  no_cuda("batch_norm_backward");
}

// ---- conv_kernels.h ----
void conv2d_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Conv2dParams&) {
  no_cuda("conv2d_forward");
}
void conv2d_backward_data(const Tensor&, const Tensor&, const Tensor&, const Conv2dParams&) {
  no_cuda("conv2d_backward_data");
}
void conv2d_backward_filter(const Tensor&, const Tensor&, const Tensor&, const Conv2dParams&) {
  no_cuda("conv2d_backward_filter");
}
void conv2d_backward_bias(const Tensor&, const Tensor&) {
  no_cuda("conv2d_backward_bias");
}

// ---- copy_kernels.h ----
void copy_strided(const Tensor&, const Tensor&) {
  no_cuda("copy_strided");
}
void fill(const Tensor&, double) {
  no_cuda("fill");
}
void philox_fill(const Tensor&, PhiloxState, bool) {
  no_cuda("philox_fill");
}

// ---- dropout_kernels.h ----
void dropout_apply(const Tensor&, const Tensor&, PhiloxState, float, double) {
  no_cuda("dropout_apply");
}

// ---- elementwise_kernels.h ----
void unary(const Tensor&, const Tensor&, UnaryOp, double, double) {
  no_cuda("unary");
}
void binary(const Tensor&, const Tensor&, const Tensor&, BinaryOp) {
  no_cuda("binary");
}
void compare(const Tensor&, const Tensor&, const Tensor&, CompareOp) {
  no_cuda("compare");
}
void where(const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  no_cuda("where");
}
bool isfinite_all(const Tensor&) {
  no_cuda("isfinite_all");
}

// ---- embedding_kernels.h ----
void embedding_forward(const Tensor&, const Tensor&, const Tensor&) {
  no_cuda("embedding_forward");
}
void embedding_backward(const Tensor&, const Tensor&, const Tensor&, int64_t) {
  no_cuda("embedding_backward");
}

// ---- layer_norm_kernels.h ----
void layer_norm_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                        const Tensor&, int64_t, int64_t, double) {
  no_cuda("layer_norm_forward");
}
void layer_norm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                         const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t) {
  no_cuda("layer_norm_backward");
}

// ---- matmul_kernels.h ----
void bmm(const Tensor&, const Tensor&, const Tensor&) {
  no_cuda("bmm");
}

// ---- pool_kernels.h ----
void max_pool2d_forward(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, int64_t) {
  no_cuda("max_pool2d_forward");
}
void max_pool2d_backward(const Tensor&, const Tensor&, const Tensor&) {
  no_cuda("max_pool2d_backward");
}
void avg_pool2d_forward(const Tensor&, const Tensor&, int64_t, int64_t, int64_t) {
  no_cuda("avg_pool2d_forward");
}
void avg_pool2d_backward(const Tensor&, const Tensor&, int64_t, int64_t, int64_t) {
  no_cuda("avg_pool2d_backward");
}
void adaptive_avg_pool2d_forward(const Tensor&, const Tensor&) {
  no_cuda("adaptive_avg_pool2d_forward");
}
void adaptive_avg_pool2d_backward(const Tensor&, const Tensor&) {
  no_cuda("adaptive_avg_pool2d_backward");
}

// ---- reduce_kernels.h ----
void sum_lastdim(const Tensor&, const Tensor&) {
  no_cuda("sum_lastdim");
}
void sum_middle(const Tensor&, const Tensor&, int64_t, int64_t, int64_t) {
  no_cuda("sum_middle");
}
void maxmin_lastdim(const Tensor&, const Tensor&, const Tensor&, bool) {
  no_cuda("maxmin_lastdim");
}

// ---- shape_kernels.h ----
void index_select(const Tensor&, const Tensor&, int64_t, const Tensor&) {
  no_cuda("index_select");
}
void index_add(const Tensor&, int64_t, const Tensor&, const Tensor&) {
  no_cuda("index_add");
}

// ---- softmax_kernels.h ----
void softmax_forward(const Tensor&, const Tensor&, int64_t, int64_t, int64_t, bool) {
  no_cuda("softmax_forward");
}
void softmax_backward(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, int64_t, bool) {
  no_cuda("softmax_backward");
}
void cross_entropy_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double, int64_t) {
  no_cuda("cross_entropy_forward");
}
void cross_entropy_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, double,
                            int64_t) {
  no_cuda("cross_entropy_backward");
}

// ---- optim_kernels.h ----
void sgd_step(const Tensor&, const Tensor&, const Tensor&, const SGDStepArgs&) {
  no_cuda("sgd_step");
}
void adamw_step(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const AdamWStepArgs&) {
  no_cuda("adamw_step");
}

}  // namespace cuda_kernels
}  // namespace dgpipe::engine
