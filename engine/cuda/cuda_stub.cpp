// engine/cuda.h in a build without CUDA: queries answer "no device", everything else explains why it cannot
// run.
#ifndef DGPIPE_WITH_CUDA
#include "engine/cuda.h"

namespace dgpipe::engine::cuda {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  DGP_FAIL(what << ": dgpipe was built without CUDA (configure with -DDGPIPE_WITH_CUDA=ON)");
}
}  // namespace

int device_count() {
  return 0;
}
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

namespace {
bool g_tf32 = false;
}
void set_allow_tf32(bool allow) {
  g_tf32 = allow;
}
bool allow_tf32() {
  return g_tf32;
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

}  // namespace dgpipe::engine::cuda
#endif
