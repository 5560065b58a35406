// CUDA graph capture and replay of work issued on the current stream (see engine/cuda.h).
#include "engine/cuda/cuda_context.cuh"

namespace dgpipe::engine::cuda {

Graph::Graph() = default;

Graph::~Graph() {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  if (graph_) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
  if (pool_id_ != 0) {
    try {
      if (!graph_) {
        // Destroyed between capture_begin and capture_end (an exception in the captured code): abandon the
        // capture so the stream allocates from the general pool again.
        cudaGraph_t partial = nullptr;
        if (cudaStreamEndCapture(static_cast<cudaStream_t>(stream_.raw()), &partial) == cudaSuccess &&
            partial)
          cudaGraphDestroy(partial);
        (void)cudaGetLastError();
        allocator_end_graph_capture(device_, static_cast<cudaStream_t>(stream_.raw()));
      }
      // Replays may still be running: the pool's blocks (and the frees deferred during capture) go back to
      // general use only after they finish.
      cudaStreamSynchronize(static_cast<cudaStream_t>(stream_.raw()));
      allocator_release_graph_pool(device_, pool_id_);
    } catch (...) {
    }
  }
}

void Graph::capture_begin() {
  DGP_CHECK(!graph_ && !exec_ && pool_id_ == 0, "Graph::capture_begin: this graph was already captured");
  device_ = current_device();
  stream_ = current_stream(device_);
  DGP_CHECK(
      stream_.raw() != nullptr,
      "Graph::capture_begin: the current stream is the legacy default stream, which cannot be captured; "
      "set a stream made with Stream::create() (StreamGuard) first");
  pool_id_ = allocator_begin_graph_pool(device_, static_cast<cudaStream_t>(stream_.raw()));
  // Relaxed mode: the allocator may query events of other streams while the capture runs.
  cudaError_t err =
      cudaStreamBeginCapture(static_cast<cudaStream_t>(stream_.raw()), cudaStreamCaptureModeRelaxed);
  if (err != cudaSuccess) {
    allocator_end_graph_capture(device_, static_cast<cudaStream_t>(stream_.raw()));
    DGP_CUDA_CHECK(err);
  }
}

void Graph::capture_end() {
  DGP_CHECK(pool_id_ != 0 && !graph_, "Graph::capture_end without capture_begin");
  DGP_CHECK(current_stream(device_) == stream_,
            "Graph::capture_end: the current stream changed during capture");
  cudaGraph_t g = nullptr;
  cudaError_t err = cudaStreamEndCapture(static_cast<cudaStream_t>(stream_.raw()), &g);
  allocator_end_graph_capture(device_, static_cast<cudaStream_t>(stream_.raw()));
  DGP_CUDA_CHECK(err);
  graph_ = g;
  cudaGraphExec_t exec = nullptr;
  DGP_CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
  exec_ = exec;
}

void Graph::replay() {
  DGP_CHECK(exec_ != nullptr, "Graph::replay: nothing was captured");
  DeviceGuard dg(device_);
  DGP_CUDA_CHECK(
      cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), static_cast<cudaStream_t>(stream_.raw())));
}

bool is_capturing() {
  if (cuda_device_count() == 0) return false;
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  DGP_CUDA_CHECK(cudaStreamIsCapturing(stream_of(current_device()), &st));
  return st == cudaStreamCaptureStatusActive;
}

}  // namespace dgpipe::engine::cuda
