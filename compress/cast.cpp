// none / fp16 / bf16: the tensor's bytes, optionally cast to a 16-bit float. Lossless (none) or
// round-to-nearest-even casts; no statistics, no prelude. Runs on any device through the engine's dtype
// conversion. On a half input (f16 or bf16) fp16 and bf16 are the identity: the tensor is sent in its own
// dtype (a bf16 tensor is never squeezed into f16's range), so the wire dtype is the input's when it is half,
// else the codec's.
#include <cstring>

#include "compress/codec_impl.h"
#include "engine/error.h"
#include "engine/parallel.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace dgpipe::compress::detail {
namespace {

using engine::DType;
using engine::Tensor;

// f32 <-> f16 of a contiguous CPU array, with the same results as the engine's float_to_half_bits and
// half_bits_to_float: the F16C instructions (round to nearest even, IEEE) where the CPU has them — checked
// at run time, the build targets plain x86-64 — else those functions element by element.
#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) void to_half_f16c(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) out[i] = engine::float_to_half_bits(x[i]);
}

// A block holding NaN/Inf bit patterns goes through half_bits_to_float (F16C would quieten a signalling NaN).
__attribute__((target("avx,f16c"))) void from_half_f16c(const uint16_t* h, int64_t n, float* out) {
  int64_t i = 0;
  const __m128i exp = _mm_set1_epi16(0x7c00);
  for (; i + 8 <= n; i += 8) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i));
    if (_mm_movemask_epi8(_mm_cmpeq_epi16(_mm_and_si128(v, exp), exp)) != 0) {
      for (int k = 0; k < 8; ++k) out[i + k] = engine::half_bits_to_float(h[i + k]);
      continue;
    }
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(v));
  }
  for (; i < n; ++i) out[i] = engine::half_bits_to_float(h[i]);
}

bool cpu_has_f16c() {
  static const bool has = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return has;
}
#endif

void to_half(const float* x, int64_t n, uint16_t* out) {
#if defined(__x86_64__)
  if (cpu_has_f16c()) return to_half_f16c(x, n, out);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = engine::float_to_half_bits(x[i]);
}

void from_half(const uint16_t* h, int64_t n, float* out) {
#if defined(__x86_64__)
  if (cpu_has_f16c()) return from_half_f16c(h, n, out);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = engine::half_bits_to_float(h[i]);
}

// f32 <-> bf16 with the engine's inline conversions (plain loops the compiler vectorises).
void to_bf16(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = engine::float_to_bf16_bits(x[i]);
}
void from_bf16(const uint16_t* h, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = engine::bf16_bits_to_float(h[i]);
}

// Runs convert(x, n, out) over disjoint slices on the op threads (engine/parallel.h): an element-wise
// conversion gives the same bytes at any thread count.
template <class From, class To>
void convert_in_parallel(void (*convert)(const From*, int64_t, To*), const From* x, int64_t n, To* out) {
  engine::parallel_for(n, int64_t(1) << 16, [&](int64_t b, int64_t e) { convert(x + b, e - b, out + b); });
}

class CastCodec final : public Codec {
 public:
  explicit CastCodec(CodecId id) : id_(id) {}
  CodecId id() const override { return id_; }
  std::string spec() const override { return codec_id_name(id_); }
  std::vector<int64_t> header_params(const engine::Shape&) const override { return {}; }
  uint64_t body_bytes(const engine::Shape& shape) const override { return body_bytes(shape, DType::f32); }
  uint64_t body_bytes(const engine::Shape& shape, DType dtype) const override {
    return static_cast<uint64_t>(engine::shape_numel(shape)) * engine::dtype_size(wire_dtype(dtype));
  }

  Packet encode(const Tensor& x) override {
    Packet p = start_packet(x);
    const DType wire_type = wire_dtype(x.dtype());
    if (x.device().is_cpu() && x.dtype() == DType::f32 && wire_type != DType::f32) {
      const Tensor xc = x.contiguous();
      p.body = engine::empty({static_cast<int64_t>(p.header.body_bytes)}, engine::DType::u8);
      auto* out = reinterpret_cast<uint16_t*>(p.body.data<uint8_t>());
      convert_in_parallel(wire_type == DType::f16 ? to_half : to_bf16, xc.data<float>(), xc.numel(), out);
      return p;
    }
    Tensor wire =
        x.dtype() == wire_dtype(x.dtype()) ? x.contiguous() : x.to(wire_dtype(x.dtype())).contiguous();
    if (wire.same(x) || wire.storage() == x.storage())
      wire = wire.clone();  // the packet must not alias the input
    p.body = byte_view(wire);
    return p;
  }

  Tensor decode_as(const Packet& p, DType dtype) override {
    DGP_CHECK(p.header.codec == id_,
              where() << ": cannot decode a " << codec_id_name(p.header.codec) << " packet");
    const DType wire = wire_dtype(p.header.dtype);
    const uint64_t expect = body_bytes(p.header.shape, p.header.dtype);
    DGP_CHECK(p.body_bytes() == expect, where()
                                            << ": packet body has " << p.body_bytes() << " bytes, expected "
                                            << expect << " for " << engine::shape_str(p.header.shape));
    if (p.body.device().is_cpu() && dtype == DType::f32 && engine::is_half(wire) &&
        reinterpret_cast<uintptr_t>(p.body.data<uint8_t>()) % 2 == 0) {
      Tensor out = engine::empty(p.header.shape, DType::f32);
      const auto* h = reinterpret_cast<const uint16_t*>(p.body.data<uint8_t>());
      convert_in_parallel(wire == DType::f16 ? from_half : from_bf16, h, out.numel(), out.data<float>());
      return out;
    }
    Tensor v = typed_view(p.body, 0, wire, p.header.shape);
    return v.dtype() == dtype ? v.clone() : v.to(dtype);
  }

 private:
  // The dtype a tensor of `dtype` travels in.
  DType wire_dtype(DType dtype) const {
    if (id_ == CodecId::none || engine::is_half(dtype)) return dtype;
    return id_ == CodecId::fp16 ? DType::f16 : DType::bf16;
  }

  CodecId id_;
};

}  // namespace

std::unique_ptr<Codec> make_cast_codec(const CodecSpec& spec) {
  return std::make_unique<CastCodec>(spec.id);
}

}  // namespace dgpipe::compress::detail
