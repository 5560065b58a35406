// The CPU convolution backend switch, and the oneDNN backend (conv_onednn.h).
//
// Per op, as PyTorch does on the CPU: the primitive is created with format `any`, so oneDNN picks its blocked
// layout (channels in blocks of 8 or 16 innermost, for its JIT kernels); the NCHW inputs are reordered into
// that layout, the primitive runs, and the output is reordered back to NCHW. Plain NCHW formats forced on the
// primitive were slower than the im2col path (docs/perf.md). Creating a primitive costs milliseconds, so the
// primitives and their reorders are cached by pass, shape, stride, padding, dilation, groups and thread
// count.
//
// Threads: oneDNN here runs on OpenMP. Every call sets the calling thread's OpenMP team size to its
// cpu_threads() before creating or running a primitive, so a pipeline stage thread with a share of the cores
// uses that share (omp_set_num_threads sets the calling thread's own value), and the cached primitive was
// made for the team it runs on.
#include "engine/ops/conv_onednn.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "engine/error.h"

#if DGPIPE_WITH_ONEDNN
#include <omp.h>

#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <dnnl.hpp>

#include "engine/parallel.h"
#endif

namespace dgpipe::engine {

namespace {

CpuConvBackend initial_backend() {
  return onednn_chosen_by("DGPIPE_CPU_CONV", "reference") ? CpuConvBackend::onednn : CpuConvBackend::reference;
}

std::atomic<CpuConvBackend>& backend_setting() {
  static std::atomic<CpuConvBackend> b{initial_backend()};
  return b;
}

}  // namespace

bool onednn_built() {
#if DGPIPE_WITH_ONEDNN
  return true;
#else
  return false;
#endif
}

bool onednn_chosen_by(const char* var, const char* other) {
  const char* v = std::getenv(var);
  if (v == nullptr || *v == '\0') return onednn_built();
  const std::string s(v);
  if (s == other) return false;
  DGP_CHECK(s == "onednn", var << " must be '" << other << "' or 'onednn', got '" << s << "'");
  DGP_CHECK(onednn_built(), var << "=onednn, but this build has no oneDNN (install libdnnl-dev and configure "
                                   "with -DDGPIPE_WITH_ONEDNN=ON)");
  return true;
}

CpuConvBackend cpu_conv_backend() {
  return backend_setting().load();
}

void set_cpu_conv_backend(CpuConvBackend backend) {
  DGP_CHECK(backend != CpuConvBackend::onednn || onednn_built(),
            "set_cpu_conv_backend: this build has no oneDNN (configure with -DDGPIPE_WITH_ONEDNN=ON)");
  backend_setting().store(backend);
}

const char* cpu_conv_backend_name(CpuConvBackend backend) {
  return backend == CpuConvBackend::onednn ? "onednn" : "reference";
}

namespace onednn {

#if DGPIPE_WITH_ONEDNN

namespace {

using dnnl::memory;
using tag = memory::format_tag;

enum class Pass : int64_t { forward, backward_data, backward_weights };

const dnnl::engine& cpu_engine() {
  static const dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// One argument of a primitive: the engine's plain layout and the primitive's, with the reorder between them
// when they differ (into the primitive for inputs, out of it for the output).
struct Operand {
  int arg = 0;
  memory::desc plain, chosen;
  dnnl::reorder reorder;
  bool needs_reorder() const { return plain != chosen; }
};

// A cached primitive for one pass and shape; `available` is false where oneDNN has no implementation.
struct Prepared {
  bool available = false;
  dnnl::primitive primitive;
  Operand in[2], out;
  memory::desc bias;  // the forward pass's plain bias, when it has one
};

memory::dims dims_of(std::initializer_list<int64_t> v) {
  return memory::dims(v);
}

memory::desc plain_desc(const memory::dims& d, tag t) {
  return memory::desc(d, memory::data_type::f32, t);
}
memory::desc any_desc(const memory::dims& d) {
  return memory::desc(d, memory::data_type::f32, tag::any);
}

struct PlainDescs {
  memory::desc src, weights, dst;
};
PlainDescs plain_descs(const ConvGeometry& g) {
  PlainDescs d;
  d.src = plain_desc(dims_of({g.N, g.C, g.H, g.W}), tag::nchw);
  d.dst = plain_desc(dims_of({g.N, g.O, g.Ho, g.Wo}), tag::nchw);
  // [O, C/groups, kh, kw] is [groups, O/groups, C/groups, kh, kw] in memory (goihw).
  d.weights = g.p.groups == 1 ? plain_desc(dims_of({g.O, g.Cg, g.kh, g.kw}), tag::oihw)
                              : plain_desc(dims_of({g.p.groups, g.Og, g.Cg, g.kh, g.kw}), tag::goihw);
  return d;
}

Operand input_operand(int arg, const memory::desc& plain, const memory::desc& chosen) {
  Operand o{arg, plain, chosen, {}};
  if (o.needs_reorder())
    o.reorder = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), plain, cpu_engine(), chosen));
  return o;
}
Operand output_operand(int arg, const memory::desc& plain, const memory::desc& chosen) {
  Operand o{arg, plain, chosen, {}};
  if (o.needs_reorder())
    o.reorder = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), chosen, cpu_engine(), plain));
  return o;
}

// The padding on the right/bottom is the engine's symmetric padding: oneDNN checks the output size with the
// same floor division as check_conv2d, so the output sizes agree (taps past the input read zeros either way).
struct Window {
  memory::dims strides, dilates, pad_l, pad_r;
};
Window window_of(const ConvGeometry& g) {
  const Conv2dParams& p = g.p;
  return {dims_of({p.stride_h, p.stride_w}), dims_of({p.dilation_h - 1, p.dilation_w - 1}),
          dims_of({p.pad_h, p.pad_w}), dims_of({p.pad_h, p.pad_w})};
}

dnnl::convolution_forward::primitive_desc forward_desc(const ConvGeometry& g, bool bias) {
  const PlainDescs d = plain_descs(g);
  const Window win = window_of(g);
  const memory::desc src = any_desc(d.src.dims()), w = any_desc(d.weights.dims()),
                     dst = any_desc(d.dst.dims());
  if (bias) {
    const memory::desc b = plain_desc(dims_of({g.O}), tag::x);
    return {{dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, w, b, dst,
             win.strides, win.dilates, win.pad_l, win.pad_r},
            cpu_engine()};
  }
  return {{dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, w, dst, win.strides,
           win.dilates, win.pad_l, win.pad_r},
          cpu_engine()};
}

Prepared prepare(Pass pass, const ConvGeometry& g, bool bias) {
  const PlainDescs d = plain_descs(g);
  const Window win = window_of(g);
  Prepared r;
  // The backward passes are created with the forward pass as their hint, as oneDNN requires.
  const auto fwd = forward_desc(g, bias);
  if (pass == Pass::forward) {
    r.primitive = dnnl::convolution_forward(fwd);
    r.in[0] = input_operand(DNNL_ARG_SRC, d.src, fwd.src_desc());
    r.in[1] = input_operand(DNNL_ARG_WEIGHTS, d.weights, fwd.weights_desc());
    r.out = output_operand(DNNL_ARG_DST, d.dst, fwd.dst_desc());
    if (bias) r.bias = plain_desc(dims_of({g.O}), tag::x);
  } else if (pass == Pass::backward_data) {
    const dnnl::convolution_backward_data::primitive_desc pd(
        {dnnl::algorithm::convolution_direct, any_desc(d.src.dims()), any_desc(d.weights.dims()),
         any_desc(d.dst.dims()), win.strides, win.dilates, win.pad_l, win.pad_r},
        cpu_engine(), fwd);
    r.primitive = dnnl::convolution_backward_data(pd);
    r.in[0] = input_operand(DNNL_ARG_DIFF_DST, d.dst, pd.diff_dst_desc());
    r.in[1] = input_operand(DNNL_ARG_WEIGHTS, d.weights, pd.weights_desc());
    r.out = output_operand(DNNL_ARG_DIFF_SRC, d.src, pd.diff_src_desc());
  } else {
    const dnnl::convolution_backward_weights::primitive_desc pd(
        {dnnl::algorithm::convolution_direct, any_desc(d.src.dims()), any_desc(d.weights.dims()),
         any_desc(d.dst.dims()), win.strides, win.dilates, win.pad_l, win.pad_r},
        cpu_engine(), fwd);
    r.primitive = dnnl::convolution_backward_weights(pd);
    r.in[0] = input_operand(DNNL_ARG_DIFF_DST, d.dst, pd.diff_dst_desc());
    r.in[1] = input_operand(DNNL_ARG_SRC, d.src, pd.src_desc());
    r.out = output_operand(DNNL_ARG_DIFF_WEIGHTS, d.weights, pd.diff_weights_desc());
  }
  r.available = true;
  return r;
}

// The cached primitive for this pass, shape and the calling thread's team size. A shape oneDNN has no
// implementation for is cached too (`available` false), so oneDNN is asked once.
std::shared_ptr<const Prepared> cached(Pass pass, const ConvGeometry& g, bool bias, int threads) {
  static std::mutex mu;
  static std::map<std::vector<int64_t>, std::shared_ptr<const Prepared>> cache;
  const Conv2dParams& p = g.p;
  const std::vector<int64_t> key = {static_cast<int64_t>(pass),
                                    g.N,
                                    g.C,
                                    g.H,
                                    g.W,
                                    g.O,
                                    g.kh,
                                    g.kw,
                                    p.stride_h,
                                    p.stride_w,
                                    p.pad_h,
                                    p.pad_w,
                                    p.dilation_h,
                                    p.dilation_w,
                                    p.groups,
                                    bias ? 1 : 0,
                                    threads};
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto entry = std::make_shared<Prepared>();
  try {
    *entry = prepare(pass, g, bias);
  } catch (const dnnl::error& e) {
    DGP_CHECK(e.status == dnnl_unimplemented, "conv2d (oneDNN): could not create a primitive: "
                                                  << e.what() << " (status " << e.status << ")");
    entry->available = false;
  }
  return cache.emplace(key, entry).first->second;
}

// Runs a prepared primitive on plain buffers: reorders in, the primitive, the reorder out.
void run(const Prepared& pr, const float* in0, const float* in1, const float* bias, float* out) {
  thread_local dnnl::stream stream(cpu_engine());
  std::unordered_map<int, memory> args;
  const float* ins[2] = {in0, in1};
  for (int i = 0; i < 2; ++i) {
    const Operand& o = pr.in[i];
    memory plain(o.plain, cpu_engine(), const_cast<float*>(ins[i]));
    if (o.needs_reorder()) {
      memory chosen(o.chosen, cpu_engine());
      o.reorder.execute(stream, plain, chosen);
      args.emplace(o.arg, chosen);
    } else {
      args.emplace(o.arg, plain);
    }
  }
  if (bias != nullptr) args.emplace(DNNL_ARG_BIAS, memory(pr.bias, cpu_engine(), const_cast<float*>(bias)));
  memory plain_out(pr.out.plain, cpu_engine(), out);
  memory chosen_out = pr.out.needs_reorder() ? memory(pr.out.chosen, cpu_engine()) : plain_out;
  args.emplace(pr.out.arg, chosen_out);
  pr.primitive.execute(stream, args);
  if (pr.out.needs_reorder()) pr.out.reorder.execute(stream, chosen_out, plain_out);
  stream.wait();
}

bool conv(Pass pass, const float* in0, const float* in1, const float* bias, float* out,
          const ConvGeometry& g) {
  const int threads = cpu_threads();
  omp_set_num_threads(threads);
  const std::shared_ptr<const Prepared> pr = cached(pass, g, bias != nullptr, threads);
  if (!pr->available) return false;
  try {
    run(*pr, in0, in1, bias, out);
  } catch (const dnnl::error& e) {
    DGP_FAIL("conv2d (oneDNN): " << e.what() << " (status " << e.status << ")");
  }
  return true;
}

}  // namespace

bool conv_forward(const float* x, const float* w, const float* b, float* out, const ConvGeometry& g) {
  return conv(Pass::forward, x, w, b, out, g);
}
bool conv_backward_data(const float* grad_out, const float* w, float* grad_in, const ConvGeometry& g) {
  return conv(Pass::backward_data, grad_out, w, nullptr, grad_in, g);
}
bool conv_backward_weights(const float* grad_out, const float* x, float* grad_w, const ConvGeometry& g) {
  return conv(Pass::backward_weights, grad_out, x, nullptr, grad_w, g);
}

#else  // a build without oneDNN: the reference kernels run

bool conv_forward(const float*, const float*, const float*, float*, const ConvGeometry&) {
  return false;
}
bool conv_backward_data(const float*, const float*, float*, const ConvGeometry&) {
  return false;
}
bool conv_backward_weights(const float*, const float*, float*, const ConvGeometry&) {
  return false;
}

#endif

}  // namespace onednn

}  // namespace dgpipe::engine
