// The caching, stream-ordered device allocator (one per device), pinned host buffers and byte copies.
//
// Memory comes from the driver in segments (2 MiB for small requests, requests rounded to 2 MiB otherwise)
// and is handed out as blocks. A freed block goes back to a free list keyed by (pool, small/large, stream,
// size) and is reused by the next request of the same stream that fits (splitting off the rest), so a
// steady-state training step never calls cudaMalloc/cudaFree. Reuse within one stream is safe without
// synchronisation because the stream orders the old user's kernels before the new user's. A block used on
// another stream (record_stream) is held back until events recorded on those streams at free time have
// completed. Adjacent free blocks of one segment merge. While a stream is being captured into a CUDA graph,
// its blocks come from a pool private to that graph, and blocks the graph may use that are freed during the
// capture are held until the graph is released, so the addresses baked into the graph are never handed to
// tensors outside it. Other streams allocate as usual meanwhile. While NCCL communicators are live
// (CommunicatorScope) nothing here synchronises the device or calls cudaFree; receive buffers
// (ReceivePoolGuard) come from a pool of their own.
#include <algorithm>
#include <mutex>
#include <set>
#include <sstream>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/cuda/cuda_context.cuh"

namespace dgpipe::engine::cuda {

namespace {

constexpr size_t kRound = 512;              // every block is a multiple of this
constexpr size_t kSmallRequest = 1u << 20;  // requests up to 1 MiB come from small segments
constexpr size_t kSmallSegment = 2u << 20;  // 2 MiB
constexpr size_t kLargeRound = 2u << 20;    // large segments are rounded to 2 MiB
constexpr size_t kMinLargeSplitRemainder = 1u << 20;

struct Block {
  void* ptr = nullptr;
  size_t size = 0;
  cudaStream_t stream = nullptr;  // the stream of the segment
  uint64_t pool = 0;              // 0: general; otherwise a graph's private pool
  bool small = false;
  bool allocated = false;
  int pending_events = 0;  // > 0: freed, waiting for other streams
  Block* prev = nullptr;   // neighbours in the same segment
  Block* next = nullptr;
  std::vector<cudaStream_t> used_on;  // streams recorded with record_stream
};

struct BlockLess {
  bool operator()(const Block* a, const Block* b) const {
    if (a->pool != b->pool) return a->pool < b->pool;
    if (a->small != b->small) return a->small < b->small;
    if (a->stream != b->stream)
      return reinterpret_cast<uintptr_t>(a->stream) < reinterpret_cast<uintptr_t>(b->stream);
    if (a->size != b->size) return a->size < b->size;
    return reinterpret_cast<uintptr_t>(a->ptr) < reinterpret_cast<uintptr_t>(b->ptr);
  }
};

struct PendingFree {
  Block* block;
  std::vector<cudaEvent_t> events;
};

// The pool of receive buffers (ReceivePoolGuard); graph pools count up from 1.
constexpr uint64_t kReceivePool = ~uint64_t(0);

thread_local bool t_receive_pool = false;

class DeviceAllocator {
 public:
  explicit DeviceAllocator(int device) : device_(device) { live_pools_.insert(kReceivePool); }

  void* allocate(size_t nbytes, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t size = round_size(nbytes);
    bool small = size <= kSmallRequest;
    auto capture = capturing_.find(stream);
    const bool captured = capture != capturing_.end();
    uint64_t pool = captured ? capture->second : (t_receive_pool ? kReceivePool : 0);
    if (!captured) process_pending();
    Block* b = take_free(pool, small, stream, size);
    if (!b && pool != 0) {
      b = take_free(0, small, stream, size);
      if (b) b->pool = pool;  // the graph's (or the receive) pool adopts the block for good
    }
    if (!b) b = new_segment(pool, small, stream, size, nbytes, captured);
    if (b->size - size >= (small ? kRound : kMinLargeSplitRemainder)) split(b, size);
    b->allocated = true;
    live_[b->ptr] = b;
    stats_.allocated += b->size;
    stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
    stats_.num_allocs++;
    return b->ptr;
  }

  void deallocate(void* ptr) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(ptr);
    DGP_CHECK(it != live_.end(), "cuda allocator: free of a pointer it did not allocate on cuda:" << device_);
    Block* b = it->second;
    live_.erase(it);
    b->allocated = false;
    stats_.allocated -= b->size;
    if (b->pool != 0 && !live_pools_.count(b->pool)) b->pool = 0;  // its graph is gone
    // A block freed while a graph that may use it is being captured (one of the graph's own, or any block of
    // the capturing stream) is kept out of circulation until the graph is released: the graph's replays
    // still read and write it, whatever the eager code does with the memory meanwhile.
    if (uint64_t graph = capture_holding(b)) {
      deferred_[graph].push_back(b);
      return;
    }
    if (!b->used_on.empty()) {
      hold_until_streams_pass(b);
      return;
    }
    release_block(b);
  }

  void record_stream(void* ptr, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(ptr);
    if (it == live_.end()) return;  // not from this allocator (e.g. a view into foreign memory)
    Block* b = it->second;
    if (stream == b->stream) return;
    if (std::find(b->used_on.begin(), b->used_on.end(), stream) == b->used_on.end())
      b->used_on.push_back(stream);
  }

  MemoryStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_allocated = stats_.allocated;
    stats_.peak_reserved = stats_.reserved;
  }

  void empty_cache() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (communicators_ > 0) return;  // see CommunicatorScope: no device-wide wait while transfers may hang
    }
    DeviceGuard g(device_);
    DGP_CUDA_CHECK(cudaDeviceSynchronize());
    std::lock_guard<std::mutex> lock(mu_);
    process_pending();
    release_cached_segments();
  }

  void add_communicator(int delta) {
    std::lock_guard<std::mutex> lock(mu_);
    communicators_ += delta;
  }
  bool has_communicators() {
    std::lock_guard<std::mutex> lock(mu_);
    return communicators_ > 0;
  }

  uint64_t begin_capture(cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mu_);
    DGP_CHECK(!capturing_.count(stream),
              "cuda graph: this stream is already being captured on cuda:" << device_);
    uint64_t pool = next_pool_++;
    capturing_[stream] = pool;
    live_pools_.insert(pool);
    return pool;
  }
  void end_capture(cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mu_);
    capturing_.erase(stream);
  }
  void release_pool(uint64_t pool) {
    std::lock_guard<std::mutex> lock(mu_);
    live_pools_.erase(pool);
    auto deferred = deferred_.find(pool);
    if (deferred != deferred_.end()) {
      for (Block* b : deferred->second) {
        b->pool = 0;
        if (!b->used_on.empty())
          hold_until_streams_pass(b);
        else
          release_block(b);
      }
      deferred_.erase(deferred);
    }
    std::vector<Block*> mine;
    for (Block* b : free_)
      if (b->pool == pool) mine.push_back(b);
    for (Block* b : mine) {
      free_.erase(b);
      b->pool = 0;
      release_block(b);
    }
  }

 private:
  static size_t round_size(size_t n) {
    if (n == 0) return kRound;
    return (n + kRound - 1) / kRound * kRound;
  }

  // The graph under capture that must keep a freed block (0: none).
  uint64_t capture_holding(const Block* b) const {
    if (capturing_.empty()) return 0;
    for (const auto& [stream, pool] : capturing_)
      if (b->pool == pool) return pool;
    auto it = capturing_.find(b->stream);
    return it != capturing_.end() ? it->second : 0;
  }

  // Other streams may still read or write the block: hold it until they reach this point.
  void hold_until_streams_pass(Block* b) {
    PendingFree pf{b, {}};
    for (cudaStream_t s : b->used_on) {
      cudaEvent_t e = nullptr;
      DGP_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      DGP_CUDA_CHECK(cudaEventRecord(e, s));
      pf.events.push_back(e);
    }
    b->used_on.clear();
    b->pending_events = static_cast<int>(pf.events.size());
    pending_.push_back(std::move(pf));
  }

  Block* take_free(uint64_t pool, bool small, cudaStream_t stream, size_t size) {
    Block key;
    key.pool = pool;
    key.small = small;
    key.stream = stream;
    key.size = size;
    key.ptr = nullptr;
    auto it = free_.lower_bound(&key);
    if (it == free_.end()) return nullptr;
    Block* b = *it;
    if (b->pool != pool || b->small != small || b->stream != stream) return nullptr;
    free_.erase(it);
    return b;
  }

  // Out of memory while communicators are live: a whole free segment of the general pool that belongs to a
  // stream with no work left (a non-blocking query) can change hands without any synchronisation.
  Block* take_idle_segment(uint64_t pool, bool small, cudaStream_t stream, size_t size) {
    for (Block* b : free_) {
      if (b->prev || b->next || b->pool != 0 || b->small != small || b->size < size || b->stream == stream)
        continue;
      cudaError_t idle = cudaStreamQuery(b->stream);
      if (idle != cudaSuccess) {
        (void)cudaGetLastError();
        continue;
      }
      free_.erase(b);
      b->stream = stream;
      b->pool = pool;
      return b;
    }
    return nullptr;
  }

  Block* new_segment(uint64_t pool, bool small, cudaStream_t stream, size_t size, size_t requested,
                     bool captured) {
    size_t seg = small ? kSmallSegment : (size + kLargeRound - 1) / kLargeRound * kLargeRound;
    void* p = nullptr;
    DeviceGuard g(device_);
    cudaError_t err = cudaMalloc(&p, seg);
    if (err == cudaErrorMemoryAllocation && !captured) {
      (void)cudaGetLastError();
      if (communicators_ > 0) {
        // cudaDeviceSynchronize and cudaFree would wait for transfers that may wait for this process.
        if (Block* b = take_idle_segment(pool, small, stream, size)) return b;
      } else {
        // Give cached memory back to the driver and try once more.
        DGP_CUDA_CHECK(cudaDeviceSynchronize());
        process_pending();
        release_cached_segments();
        err = cudaMalloc(&p, seg);
      }
    }
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      std::ostringstream os;
      os << "CUDA out of memory allocating " << requested << " bytes on cuda:" << device_ << " ("
         << cudaGetErrorString(err) << "); allocator: " << stats_.allocated << " bytes allocated, "
         << stats_.reserved << " reserved; driver: " << free_b << " free of " << total_b;
      if (communicators_ > 0)
        os << "; cached memory was not returned to the driver because NCCL communicators are live on cuda:"
           << device_ << " (cudaFree would wait for their transfers)";
      throw Error(os.str());
    }
    stats_.reserved += seg;
    stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
    stats_.num_device_mallocs++;
    Block* b = new Block;
    b->ptr = p;
    b->size = seg;
    b->stream = stream;
    b->pool = pool;
    b->small = small;
    return b;
  }

  void split(Block* b, size_t size) {
    Block* rest = new Block;
    rest->ptr = static_cast<char*>(b->ptr) + size;
    rest->size = b->size - size;
    rest->stream = b->stream;
    rest->pool = b->pool;
    rest->small = b->small;
    rest->prev = b;
    rest->next = b->next;
    if (b->next) b->next->prev = rest;
    b->next = rest;
    b->size = size;
    free_.insert(rest);
  }

  static bool mergeable(const Block* a, const Block* b) {
    return b && !b->allocated && b->pending_events == 0 && b->pool == a->pool;
  }

  // Returns a block to the free list, merging it with free neighbours of its segment.
  void release_block(Block* b) {
    if (mergeable(b, b->prev)) {
      Block* p = b->prev;
      free_.erase(p);
      p->size += b->size;
      p->next = b->next;
      if (b->next) b->next->prev = p;
      delete b;
      b = p;
    }
    if (mergeable(b, b->next)) {
      Block* n = b->next;
      free_.erase(n);
      b->size += n->size;
      b->next = n->next;
      if (n->next) n->next->prev = b;
      delete n;
    }
    free_.insert(b);
  }

  void process_pending() {
    for (size_t i = 0; i < pending_.size();) {
      PendingFree& pf = pending_[i];
      bool done = true;
      for (cudaEvent_t e : pf.events) {
        cudaError_t err = cudaEventQuery(e);
        if (err == cudaErrorNotReady) {
          (void)cudaGetLastError();
          done = false;
          break;
        }
        DGP_CUDA_CHECK(err);
      }
      if (!done) {
        ++i;
        continue;
      }
      for (cudaEvent_t e : pf.events) cudaEventDestroy(e);
      Block* b = pf.block;
      b->pending_events = 0;
      pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
      release_block(b);
    }
  }

  // Frees whole segments that are entirely free (a block with no neighbours) and belong to no graph.
  void release_cached_segments() {
    std::vector<Block*> whole;
    for (Block* b : free_)
      if (!b->prev && !b->next && b->pool == 0) whole.push_back(b);
    for (Block* b : whole) {
      free_.erase(b);
      DGP_CUDA_CHECK(cudaFree(b->ptr));
      stats_.reserved -= b->size;
      stats_.num_device_frees++;
      delete b;
    }
  }

  int device_;
  std::mutex mu_;
  std::set<Block*, BlockLess> free_;
  std::unordered_map<void*, Block*> live_;
  std::vector<PendingFree> pending_;
  MemoryStats stats_;
  std::unordered_map<cudaStream_t, uint64_t> capturing_;        // stream -> its graph's pool, during capture
  std::unordered_map<uint64_t, std::vector<Block*>> deferred_;  // graph pool -> blocks freed during capture
  uint64_t next_pool_ = 1;
  std::unordered_set<uint64_t> live_pools_;
  int communicators_ = 0;
};

DeviceAllocator& allocator_for(int device) {
  static std::mutex mu;
  static std::vector<DeviceAllocator*> all(64, nullptr);
  DGP_CHECK(device >= 0 && device < cuda_device_count(),
            "cuda allocator: device cuda:" << device << " does not exist (" << cuda_device_count()
                                           << " device(s))");
  std::lock_guard<std::mutex> lock(mu);
  if (!all[device]) all[device] = new DeviceAllocator(device);  // lives until exit: storages may outlive main
  return *all[device];
}

int resolve(int device) {
  return device < 0 ? current_device() : device;
}

}  // namespace

// ---- hooks used by Storage (engine/storage.h) ----

void* allocate(size_t nbytes, int device) {
  return allocator_for(device).allocate(nbytes, stream_of(device));
}

void deallocate(void* ptr, int device) {
  allocator_for(device).deallocate(ptr);
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cuda() && src_device.is_cuda()) {
    cudaStream_t s = stream_of(dst_device.index);
    if (dst_device.index == src_device.index) {
      DGP_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, s));
    } else {
      // The source's producers ran on its device's current stream: make the copy wait for them.
      Event ready;
      ready.record(current_stream(src_device.index));
      ready.wait(current_stream(dst_device.index));
      DGP_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, nbytes, s));
    }
    return;
  }
  if (dst_device.is_cuda()) {
    // Host to device. From pageable memory the call returns once the source has been staged, so the caller
    // may free its buffer right away; the copy is ordered on the current stream.
    DGP_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, stream_of(dst_device.index)));
    return;
  }
  // Device to host: the host reads right after, so wait for the stream. The natural place to learn about bad
  // input a kernel met (check_device_errors).
  cudaStream_t s = stream_of(src_device.index);
  DGP_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, s));
  DGP_CUDA_CHECK(cudaStreamSynchronize(s));
  check_device_errors(src_device.index);
}

// ---- public API (engine/cuda.h) ----

MemoryStats memory_stats(int device) {
  if (cuda_device_count() == 0) return MemoryStats{};
  return allocator_for(resolve(device)).stats();
}
void reset_peak_stats(int device) {
  allocator_for(resolve(device)).reset_peak();
}
void empty_cache(int device) {
  allocator_for(resolve(device)).empty_cache();
}

void record_stream(const Tensor& t, const Stream& s) {
  DGP_CHECK(t.defined() && t.is_cuda(), "record_stream: expected a CUDA tensor");
  DGP_CHECK(t.device().index == s.device(),
            "record_stream: tensor on " << t.device().str() << ", stream on cuda:" << s.device());
  allocator_for(s.device()).record_stream(t.storage()->data(), static_cast<cudaStream_t>(s.raw()));
}

Tensor empty_pinned(const Shape& shape, DType dtype) {
  DGP_CHECK(cuda_device_count() > 0, "empty_pinned: no CUDA device is available");
  size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  void* p = nullptr;
  DGP_CUDA_CHECK(cudaHostAlloc(&p, std::max<size_t>(nbytes, 64), cudaHostAllocPortable));
  auto storage = std::make_shared<Storage>(p, nbytes, Device::cpu(), [](void* q) { cudaFreeHost(q); });
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = storage;
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

void ScratchDeleter::operator()(void* p) const {
  if (p) deallocate(p, device);
}
Scratch scratch(size_t nbytes, int device) {
  return Scratch(allocate(nbytes, device), ScratchDeleter{device});
}

uint64_t allocator_begin_graph_pool(int device, cudaStream_t stream) {
  return allocator_for(device).begin_capture(stream);
}
void allocator_end_graph_capture(int device, cudaStream_t stream) {
  allocator_for(device).end_capture(stream);
}

CommunicatorScope::CommunicatorScope(int device) : device_(resolve(device)) {
  allocator_for(device_).add_communicator(+1);
}
CommunicatorScope::~CommunicatorScope() {
  allocator_for(device_).add_communicator(-1);
}
bool communicators_live(int device) {
  if (cuda_device_count() == 0) return false;
  return allocator_for(resolve(device)).has_communicators();
}

ReceivePoolGuard::ReceivePoolGuard() : previous_(t_receive_pool) {
  t_receive_pool = true;
}
ReceivePoolGuard::~ReceivePoolGuard() {
  t_receive_pool = previous_;
}
void allocator_release_graph_pool(int device, uint64_t pool) {
  allocator_for(device).release_pool(pool);
}

}  // namespace dgpipe::engine::cuda
