// none / fp16 / bf16: the tensor's bytes, optionally cast to a 16-bit float. Lossless (none) or
// round-to-nearest-even casts; no statistics, no prelude. Runs on any device through the engine's dtype
// conversion. On a half input (f16 or bf16) fp16 and bf16 are the identity: the tensor is sent in its own
// dtype (a bf16 tensor is never squeezed into f16's range), so the wire dtype is the input's when it is half,
// else the codec's.
#include <atomic>
#include <cmath>
#include <cstring>

#include "compress/codec_impl.h"
#include "engine/cpu_features.h"
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
// at run time, the build targets plain x86-64 — else those functions element by element. The encoders
// return whether every input was finite: the codec's NaN/Inf check, made in the conversion's own pass (a
// separate pass would read the input twice).
#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) bool to_half_f16c(const float* x, int64_t n, uint16_t* out) {
  // An input whose exponent bits are all ones (NaN, Inf) is the one whose masked bits equal +Inf's.
  const __m256 exp = _mm256_castsi256_ps(_mm256_set1_epi32(0x7f800000));
  __m256 bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_and_ps(a, exp), exp, _CMP_EQ_OQ));
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_and_ps(b, exp), exp, _CMP_EQ_OQ));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i + 8), _mm256_cvtps_ph(b, _MM_FROUND_TO_NEAREST_INT));
  }
  bool finite = _mm256_movemask_ps(bad) == 0;
  for (; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    out[i] = engine::float_to_half_bits(x[i]);
  }
  return finite;
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

// The same 16 values at a time where the CPU has AVX-512 (one 512-bit conversion and store per 16).
__attribute__((target("avx512f"))) void from_half_avx512(const uint16_t* h, int64_t n, float* out) {
  int64_t i = 0;
  const __m256i exp = _mm256_set1_epi16(0x7c00);
  for (; i + 16 <= n; i += 16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i));
    const __m256i special = _mm256_cmpeq_epi16(_mm256_and_si256(v, exp), exp);
    if (!_mm256_testz_si256(special, special)) {
      for (int k = 0; k < 16; ++k) out[i + k] = engine::half_bits_to_float(h[i + k]);
      continue;
    }
    _mm512_storeu_ps(out + i, _mm512_maskz_cvtph_ps(0xffff, v));  // (maskz: GCC 12 warns on the plain form)
  }
  from_half_f16c(h + i, n - i, out + i);
}

#endif

// 1 when v is NaN or Inf (exponent bits all ones), else 0; without a branch, so the loops vectorise.
inline uint32_t non_finite_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
}

bool to_half(const float* x, int64_t n, uint16_t* out) {
#if defined(__x86_64__)
  if (engine::cpu_has_f16c()) return to_half_f16c(x, n, out);
#endif
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    bad |= non_finite_bits(x[i]);
    out[i] = engine::float_to_half_bits(x[i]);
  }
  return bad == 0;
}

void from_half(const uint16_t* h, int64_t n, float* out) {
#if defined(__x86_64__)
  if (engine::cpu_has_avx512()) return from_half_avx512(h, n, out);
  if (engine::cpu_has_f16c()) return from_half_f16c(h, n, out);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = engine::half_bits_to_float(h[i]);
}

// f32 <-> bf16 with the engine's inline conversions (plain loops the compiler vectorises).
bool to_bf16(const float* x, int64_t n, uint16_t* out) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    bad |= non_finite_bits(x[i]);
    out[i] = engine::float_to_bf16_bits(x[i]);
  }
  return bad == 0;
}
void from_bf16(const uint16_t* h, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = engine::bf16_bits_to_float(h[i]);
}

// Slices of an element-wise conversion on the op threads (engine/parallel.h): the same bytes at any thread
// count. Large slices: a hand-off to the other threads costs about as much as converting 64k elements.
constexpr int64_t kConvertGrain = int64_t(1) << 16;

void decode_in_parallel(void (*convert)(const uint16_t*, int64_t, float*), const uint16_t* h, int64_t n,
                        float* out) {
  engine::parallel_for(n, kConvertGrain, [&](int64_t b, int64_t e) { convert(h + b, e - b, out + b); });
}

// Returns whether every input was finite.
bool encode_in_parallel(bool (*convert)(const float*, int64_t, uint16_t*), const float* x, int64_t n,
                        uint16_t* out) {
  std::atomic<bool> finite{true};
  engine::parallel_for(n, kConvertGrain, [&](int64_t b, int64_t e) {
    if (!convert(x + b, e - b, out + b)) finite.store(false, std::memory_order_relaxed);
  });
  return finite.load();
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
    if (x.defined() && x.device().is_cpu() && x.dtype() == DType::f32 &&
        wire_dtype(x.dtype()) != DType::f32) {
      Packet p = start_packet_unscanned(x);  // the conversion looks for NaN/Inf
      const Tensor xc = x.contiguous();
      p.body = engine::empty({static_cast<int64_t>(p.header.body_bytes)}, engine::DType::u8);
      auto* out = reinterpret_cast<uint16_t*>(p.body.data<uint8_t>());
      if (!encode_in_parallel(wire_dtype(x.dtype()) == DType::f16 ? to_half : to_bf16, xc.data<float>(),
                              xc.numel(), out))
        check_finite(xc);  // throws, naming the first non-finite value
      return p;
    }
    Packet p = start_packet(x);
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
      decode_in_parallel(wire == DType::f16 ? from_half : from_bf16, h, out.numel(), out.data<float>());
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
