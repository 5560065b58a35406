// Uniform Q-bit min/max quantization (docs/original.md#uniform-quantization; Δ = 0 and packing fixed).
//   lo = min x, hi = max x, step = (hi - lo) / (2^Q - 1), q = round_half_even((x - lo)/step - 2^(Q-1)) +
//   2^(Q-1).
// The original sent the signed code q - 2^(Q-1) in an int8/int16 container; here q (unsigned) is bit-packed
// in Q bits. Body: prelude | lo f32 | step f32 | pad to 16 | ceil(N*Q/8) bytes of codes. Decode: lo + q*step.
// Passes over memory: CPU 2 reads (min/max, quantize+pack in chunks) + 1 packed write; CUDA the same, fused
// (uniform.cu).
#include "compress/codec_impl.h"
#include "compress/quant_math.h"
#include "compress/uniform_kernels.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace dgpipe::compress::detail {
namespace {

using engine::Tensor;

class UniformCodec final : public Codec {
 public:
  explicit UniformCodec(int q_bits) : q_bits_(q_bits) {}
  CodecId id() const override { return CodecId::uniform; }
  std::string spec() const override { return "uniform:" + std::to_string(q_bits_); }
  std::vector<int64_t> header_params(const engine::Shape&) const override { return {q_bits_}; }
  uint64_t body_bytes(const engine::Shape& shape) const override {
    return group_body_bytes(engine::shape_numel(shape), q_bits_, 0);
  }

  Packet encode(const Tensor& x) override {
    if (x.defined() && x.is_cuda()) {
      Packet p = start_packet(x);
      p.body = device_body(p, x.device());
      cuda_kernels::uniform_encode(contiguous_input(x), p.body, q_bits_);
      return p;
    }
    Packet p = start_packet_unscanned(x);  // min_max looks for NaN/Inf
    const HostValues v(x);
    const float* xv = v.floats();
    const int64_t n = v.size();
    float lo = 0.0f, hi = 0.0f;
    if (!min_max(xv, n, &lo, &hi)) check_finite(x);  // throws, naming the first non-finite value
    const float step = quant_step(lo, hi, (1u << q_bits_) - 1u);
    p.body = make_body(p.header.body_bytes, engine::Device::cpu());
    uint8_t* body = p.body.data<uint8_t>();
    write_group_stats(body, &lo, &step, 1);
    if (!(step > 0.0f)) return p;  // every code is 0: the body is zeroed already
    encode_in_parallel_chunks(
        n, q_bits_, body + group_payload_offset(1),
        [&](int64_t first, int64_t m, uint32_t* c) { uniform_codes(xv + first, m, lo, step, q_bits_, c); });
    return p;
  }

  Tensor decode_as(const Packet& p, engine::DType dtype) override {
    check_packet(p);
    return decode_group_packet(p, q_bits_, 0, dtype);
  }

 private:
  int q_bits_;
};

}  // namespace

Tensor decode_group_packet(const Packet& p, int q_bits, int s_bits, engine::DType dtype) {
  const int64_t n = engine::shape_numel(p.header.shape);
  if (p.body.is_cuda()) {
    Tensor out = engine::empty(p.header.shape, engine::TensorOptions(engine::DType::f32, p.body.device()));
    cuda_kernels::group_decode(p.body, out, q_bits, s_bits);
    return finish_decode(out, dtype, p.body.device());
  }
  p.check_status();
  Tensor out = engine::empty(p.header.shape, engine::DType::f32);
  group_decode_cpu(p.body.data<uint8_t>(), p.body_bytes(), n, q_bits, s_bits, out.data<float>());
  return finish_decode(out, dtype, engine::Device::cpu());
}

std::unique_ptr<Codec> make_uniform_codec(const CodecSpec& spec) {
  return std::make_unique<UniformCodec>(spec.q_bits);
}

}  // namespace dgpipe::compress::detail
