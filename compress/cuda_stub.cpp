// The CUDA codec launchers in a build without CUDA (compiled instead of the .cu files, see dgpipe_library in
// CMakeLists.txt): every launcher declared in a compress/*_kernels.h header throws, naming itself. The codecs
// call them unconditionally for a tensor on CUDA, which no tensor is in this build (the engine refuses to
// allocate one first). A launcher added to a header without a stub here leaves this build with an undefined
// symbol.
#include "compress/fastquant_kernels.h"
#include "compress/grouped_uniform_kernels.h"
#include "compress/kmeans_kernels.h"
#include "compress/lowrank_kernels.h"
#include "compress/sortquant_kernels.h"
#include "compress/topk_kernels.h"
#include "compress/uniform_kernels.h"
#include "engine/cuda.h"

namespace dgpipe::compress::cuda_kernels {

using engine::Tensor;

namespace {
[[noreturn]] void no_cuda(const char* launcher) {
  engine::cuda::fail_without_cuda(launcher);
}
}  // namespace

// ---- uniform_kernels.h ----
void uniform_encode(const Tensor&, const Tensor&, int) {
  no_cuda("uniform_encode");
}
void group_decode(const Tensor&, const Tensor&, int, int) {
  no_cuda("group_decode");
}

// ---- grouped_uniform_kernels.h ----
void grouped_uniform_encode(const Tensor&, const Tensor&, int, int64_t, int64_t) {
  no_cuda("grouped_uniform_encode");
}
void grouped_uniform_decode(const Tensor&, const Tensor&, int, int64_t, int64_t) {
  no_cuda("grouped_uniform_decode");
}

// ---- sortquant_kernels.h ----
void sortquant_encode(const Tensor&, const Tensor&, int, int) {
  no_cuda("sortquant_encode");
}

// ---- fastquant_kernels.h ----
void fastquant_encode(const Tensor&, const Tensor&, int, int) {
  no_cuda("fastquant_encode");
}

// ---- topk_kernels.h ----
void topk_encode(const Tensor&, const Tensor&, int64_t) {
  no_cuda("topk_encode");
}
void topk_decode(const Tensor&, const Tensor&, int64_t) {
  no_cuda("topk_decode");
}

// ---- kmeans_kernels.h ----
void kmeans_encode(const Tensor&, const Tensor&, int, int) {
  no_cuda("kmeans_encode");
}
void kmeans_decode(const Tensor&, const Tensor&, int) {
  no_cuda("kmeans_decode");
}

// ---- lowrank_kernels.h ----
void power_encode(const Tensor&, const Tensor&, const Tensor&, int64_t, int, uint64_t) {
  no_cuda("power_encode");
}
void svd_encode(const Tensor&, const Tensor&, int64_t, int, uint64_t) {
  no_cuda("svd_encode");
}
void lowrank_decode(const Tensor&, const Tensor&, int64_t) {
  no_cuda("lowrank_decode");
}
void power_init_state(const Tensor&, int64_t) {
  no_cuda("power_init_state");
}

}  // namespace dgpipe::compress::cuda_kernels
