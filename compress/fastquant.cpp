// Fast quantization (docs/original.md#fast-quantization, bugs B3-B5 there fixed): group boundaries are
// quantiles estimated on a sample instead of exact order statistics; the code layout and decoding are
// sortquant's.
//
// Estimator: a strided sample of n_s = min(N, 8192) elements, s_j = x[floor(j*N/n_s)] (it spans every sample
// of the micro-batch, unlike the original's first sample), sorted; boundary t_g = s_(ceil(g*n_s/K) - 1) for
// g = 1..K-1 (0-based order statistic: the lower g/K quantile). Element x goes to group #{g : t_g < x} (a
// value equal to a boundary stays in the lower group, as in the original); duplicated quantiles give empty
// groups instead of the original's overwrites. Group statistics are then exact (min and max of its members).
// Cost: n_s gathered reads + an O(n_s log n_s) sort (one CUDA block, shared memory), then 2 passes over x:
// group min/max (fused with the non-finite check), and quantize+pack. Equal population holds only up to
// sampling error (standard deviation ~ sqrt(p(1-p)/n_s) of N per boundary, i.e. ~0.5% of N for n_s = 8192).
#include <algorithm>
#include <limits>
#include <vector>

#include "compress/codec_impl.h"
#include "compress/fastquant_kernels.h"
#include "compress/quant_math.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace dgpipe::compress::detail {

int64_t fastquant_sample_size(int64_t n) {
  return std::min<int64_t>(n, kFastQuantSample);
}

namespace {

using engine::Tensor;

// Group of every x: #{g : t_g < x} over the sorted boundaries t (a count, branch-free, for few groups).
void assign_groups(const float* x, int64_t m, const std::vector<float>& bounds, uint8_t* group) {
  const int nb = static_cast<int>(bounds.size());
  if (nb > 15) {
    for (int64_t i = 0; i < m; ++i)
      group[i] = static_cast<uint8_t>(std::lower_bound(bounds.begin(), bounds.end(), x[i]) - bounds.begin());
    return;
  }
  for (int64_t i = 0; i < m; ++i) {
    int g = 0;
    for (int j = 0; j < nb; ++j) g += bounds[j] < x[i] ? 1 : 0;
    group[i] = static_cast<uint8_t>(g);
  }
}

class FastQuantCodec final : public Codec {
 public:
  FastQuantCodec(int q, int s) : q_bits_(q), s_bits_(s) {}
  CodecId id() const override { return CodecId::fastquant; }
  std::string spec() const override {
    return "fastquant:" + std::to_string(q_bits_) + "+" + std::to_string(s_bits_);
  }
  std::vector<int64_t> header_params(const engine::Shape&) const override { return {q_bits_, s_bits_}; }
  uint64_t body_bytes(const engine::Shape& shape) const override {
    return group_body_bytes(engine::shape_numel(shape), q_bits_, s_bits_);
  }

  Packet encode(const Tensor& x) override {
    Packet p = start_packet(x);
    if (x.is_cuda()) {
      p.body = device_body(p, x.device());
      cuda_kernels::fastquant_encode(contiguous_input(x), p.body, q_bits_, s_bits_);
      return p;
    }
    const HostValues v(x);
    const float* xv = v.floats();
    const int64_t n = v.size();
    const int groups = 1 << s_bits_;
    const int64_t ns = fastquant_sample_size(n);
    std::vector<float> sample(static_cast<size_t>(ns));
    for (int64_t j = 0; j < ns; ++j) sample[j] = xv[fastquant_sample_index(j, n, ns)];
    std::sort(sample.begin(), sample.end());
    std::vector<float> bounds(groups > 1 ? groups - 1 : 0);
    for (int g = 1; g < groups && ns > 0; ++g) bounds[g - 1] = sample[fastquant_boundary_rank(g, groups, ns)];

    // Group statistics: min and max of the members (+inf / -inf for a group without any, then 0 and 0).
    std::vector<float> lo(groups, std::numeric_limits<float>::infinity()), step(groups, 0.0f);
    std::vector<float> hi(groups, -std::numeric_limits<float>::infinity());
    constexpr int64_t kChunk = 1024;
    uint8_t group[kChunk];
    for (int64_t first = 0; first < n; first += kChunk) {
      const int64_t m = std::min(kChunk, n - first);
      assign_groups(xv + first, m, bounds, group);
      for (int64_t i = 0; i < m; ++i) {
        const float xi = xv[first + i];
        const int g = group[i];
        lo[g] = xi < lo[g] ? xi : lo[g];
        hi[g] = xi > hi[g] ? xi : hi[g];
      }
    }
    for (int g = 0; g < groups; ++g) {
      if (lo[g] > hi[g])
        lo[g] = hi[g] = 0.0f;
      else
        step[g] = quant_step(lo[g], hi[g], (1u << q_bits_) - 1u);
    }

    p.body = make_body(p.header.body_bytes, engine::Device::cpu());
    uint8_t* body = p.body.data<uint8_t>();
    write_group_stats(body, lo.data(), step.data(), groups);
    encode_in_parallel_chunks(n, q_bits_ + s_bits_, body + group_payload_offset(groups),
                              [&](int64_t first, int64_t m, uint32_t* codes) {
                                uint8_t chunk_group[kEncodeChunk];  // per call: chunks run concurrently
                                assign_groups(xv + first, m, bounds, chunk_group);
                                group_codes(xv + first, chunk_group, m, lo.data(), step.data(), groups,
                                            q_bits_, codes);
                              });
    return p;
  }

  Tensor decode_as(const Packet& p, engine::DType dtype) override {
    check_packet(p);
    return decode_group_packet(p, q_bits_, s_bits_, dtype);
  }

 private:
  int q_bits_, s_bits_;
};

}  // namespace

std::unique_ptr<Codec> make_fastquant_codec(const CodecSpec& spec) {
  return std::make_unique<FastQuantCodec>(spec.q_bits, spec.s_bits);
}

}  // namespace dgpipe::compress::detail
