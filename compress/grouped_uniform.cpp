// Grouped uniform quantization (uniform:Q/channel, uniform:Q/row): uniform:Q with one (lo, step) per group
// instead of one per tensor, so a channel or a token with a small range is not quantized with the step of the
// widest one. The flattened tensor is seen as [outer, groups, inner]:
//   /channel  groups = dim 1, inner = the product of the dims after it (a tensor of < 2 dims is one group);
//   /row      groups = the product of all dims but the last, inner = the last dim (one group per token of a
//             [b,L,H] text boundary, per (n, c, h) row of a [N,C,H,W] image boundary).
// Per group g: lo_g = min, step_g = (max - min)/(2^Q - 1), code = uniform_code(x, lo_g, step_g) — the formula
// of uniform:Q, so a tensor that is one group gives uniform:Q's codes. Body: prelude | K x (lo, step) f32 |
// pad to 16 | ceil(N*Q/8) bytes of Q-bit codes (the group follows from the position, it is not in the code).
// Statistics cost 64 bits per group: negligible per channel, 64/H bits per element per row.
// Passes over memory: 2 reads (group min/max, quantize+pack) and one packed write, on the CPU and in
// grouped_uniform.cu. A half input is read in its 2-byte form (HostValues, InputValues), as by uniform:Q.
#include <algorithm>
#include <limits>
#include <vector>

#include "compress/codec_impl.h"
#include "compress/grouped_uniform_kernels.h"
#include "compress/quant_math.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace dgpipe::compress::detail {
namespace {

using engine::Tensor;

struct GroupShape {
  int64_t groups = 1;
  int64_t inner = 1;
};

GroupShape group_shape(Grouping grouping, const engine::Shape& s) {
  GroupShape g;
  if (grouping == Grouping::channel) {
    if (s.size() < 2) return {1, engine::shape_numel(s)};
    g.groups = s[1];
    for (size_t d = 2; d < s.size(); ++d) g.inner *= s[d];
  } else {
    if (s.empty()) return {1, 1};
    g.inner = s.back();
    for (size_t d = 0; d + 1 < s.size(); ++d) g.groups *= s[d];
  }
  return g;
}

class GroupedUniformCodec final : public Codec {
 public:
  GroupedUniformCodec(int q_bits, Grouping grouping) : q_bits_(q_bits), grouping_(grouping) {}
  CodecId id() const override { return CodecId::uniform; }
  std::string spec() const override {
    return "uniform:" + std::to_string(q_bits_) + (grouping_ == Grouping::channel ? "/channel" : "/row");
  }
  std::vector<int64_t> header_params(const engine::Shape& shape) const override {
    return {q_bits_, static_cast<int64_t>(grouping_), groups(shape).groups};
  }
  uint64_t body_bytes(const engine::Shape& shape) const override {
    return group_payload_offset(static_cast<int>(groups(shape).groups)) +
           packed_bytes(static_cast<uint64_t>(engine::shape_numel(shape)), q_bits_);
  }

  Packet encode(const Tensor& x) override {
    Packet p = start_packet(x);
    const GroupShape g = groups(x.shape());
    if (x.is_cuda()) {
      p.body = device_body(p, x.device());
      cuda_kernels::grouped_uniform_encode(contiguous_input(x), p.body, q_bits_, g.groups, g.inner);
      return p;
    }
    const HostValues v(x);
    const int64_t n = v.size();
    std::vector<float> lo(static_cast<size_t>(g.groups), 0.0f), hi(lo);
    if (n > 0) {
      std::fill(lo.begin(), lo.end(), std::numeric_limits<float>::infinity());
      std::fill(hi.begin(), hi.end(), -std::numeric_limits<float>::infinity());
    }
    for (int64_t seg = 0; seg * g.inner < n; ++seg) {  // a segment: `inner` consecutive elements, one group
      const size_t k = static_cast<size_t>(seg % g.groups);
      for (int64_t i = seg * g.inner; i < (seg + 1) * g.inner; ++i) {
        lo[k] = v[i] < lo[k] ? v[i] : lo[k];
        hi[k] = v[i] > hi[k] ? v[i] : hi[k];
      }
    }
    std::vector<float> step(lo.size());
    for (size_t k = 0; k < lo.size(); ++k) step[k] = quant_step(lo[k], hi[k], (1u << q_bits_) - 1u);
    p.body = make_body(p.header.body_bytes, engine::Device::cpu());
    uint8_t* body = p.body.data<uint8_t>();
    write_group_stats(body, lo.data(), step.data(), static_cast<int>(g.groups));
    std::vector<uint32_t> codes(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const size_t k = static_cast<size_t>(element_group(i, g.groups, g.inner));
      codes[i] = uniform_code(v[i], lo[k], step[k], q_bits_);
    }
    pack_codes(codes.data(), n, q_bits_, body + group_payload_offset(static_cast<int>(g.groups)));
    return p;
  }

  Tensor decode_as(const Packet& p, engine::DType dtype) override {
    check_packet(p);
    const GroupShape g = groups(p.header.shape);
    if (p.body.is_cuda()) {
      Tensor out = engine::empty(p.header.shape, engine::TensorOptions(engine::DType::f32, p.body.device()));
      cuda_kernels::grouped_uniform_decode(p.body, out, q_bits_, g.groups, g.inner);
      return finish_decode(out, dtype, p.body.device());
    }
    p.check_status();
    const std::vector<GroupStat> stats = read_group_stats(p);
    const uint64_t off = group_payload_offset(static_cast<int>(g.groups));
    const uint8_t* payload = p.body.data<uint8_t>() + off;
    const uint64_t nbytes = p.body_bytes() - off;
    Tensor out = engine::empty(p.header.shape, engine::DType::f32);
    float* o = out.data<float>();
    const int64_t n = out.numel();
    for (int64_t i = 0; i < n; ++i) {
      const GroupStat& st = stats[static_cast<size_t>(element_group(i, g.groups, g.inner))];
      o[i] = dequant(get_bits(payload, nbytes, static_cast<uint64_t>(i), q_bits_), st.lo, st.step);
    }
    return finish_decode(out, dtype, engine::Device::cpu());
  }

 private:
  GroupShape groups(const engine::Shape& shape) const {
    GroupShape g = group_shape(grouping_, shape);
    DGP_CHECK(g.groups < (int64_t(1) << 27), where() << ": " << g.groups << " groups for "
                                                     << engine::shape_str(shape)
                                                     << " (at most 2^27: 8 bytes of statistics each)");
    return g;
  }

  int q_bits_;
  Grouping grouping_;
};

}  // namespace

std::unique_ptr<Codec> make_grouped_uniform_codec(const CodecSpec& spec) {
  return std::make_unique<GroupedUniformCodec>(spec.q_bits, spec.grouping);
}

}  // namespace dgpipe::compress::detail
