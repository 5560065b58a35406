// Sort quantization (docs/original.md#sort-quantization), exact and without a full sort.
//
// The flattened tensor's stable sort order is cut into K = 2^S groups with torch.tensor_split sizes (the
// first N mod K groups hold ceil(N/K) elements, the rest floor(N/K)). Group g has lo_g = its smallest and
// hi_g = its largest value, step_g = (hi_g - lo_g)/(2^Q - 1); an element's code is (g << Q) | round((x -
// lo_g)/step_g), Q + S bits, bit-packed. Decoding is arithmetic (g = code >> Q), so every code decodes and a
// constant group is exact.
//
// Only 2K order statistics are needed (the first and last rank of every group), never the permutation:
//  * A value x that does not straddle a group boundary belongs to group #{g >= 1 : lo_g <= x}.
//  * A value t that straddles a boundary (hi_{g-1} == lo_g == t, e.g. the zeros of a post-ReLU tensor) is
//  split
//    by stable order: its i-th occurrence in flat index order has rank count_less(t) + i and goes to the
//    group holding that rank. Groups are therefore exactly the tensor_split sizes, ties included.
// CPU: multi-select with nth_element (O(N log K)), one counting pass for straddling values (only when there
// are any), one quantize+pack pass. CUDA (sortquant.cu): radix select of the 2K ranks (4 histogram passes of
// 8 bits), then one fused quantize+pack pass (+ one counting pass when straddling values exist).
#include <algorithm>
#include <map>
#include <vector>

#include "compress/codec_impl.h"
#include "compress/quant_math.h"
#include "compress/sortquant_kernels.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace dgpipe::compress::detail {
namespace {

using engine::Tensor;

// Puts the order statistics at every position of `ranks` (sorted, within [lo, hi)) into place.
void multi_select(std::vector<float>& v, int64_t lo, int64_t hi, const int64_t* rb, const int64_t* re) {
  if (rb >= re || hi - lo <= 1) return;
  const int64_t* mid = rb + (re - rb) / 2;
  std::nth_element(v.begin() + lo, v.begin() + *mid, v.begin() + hi);
  multi_select(v, lo, *mid, rb, mid);
  multi_select(v, *mid + 1, hi, mid + 1, re);
}

class SortQuantCodec final : public Codec {
 public:
  SortQuantCodec(int q, int s) : q_bits_(q), s_bits_(s) {}
  CodecId id() const override { return CodecId::sortquant; }
  std::string spec() const override {
    return "sortquant:" + std::to_string(q_bits_) + "+" + std::to_string(s_bits_);
  }
  std::vector<int64_t> header_params(const engine::Shape&) const override { return {q_bits_, s_bits_}; }
  uint64_t body_bytes(const engine::Shape& shape) const override {
    return group_body_bytes(engine::shape_numel(shape), q_bits_, s_bits_);
  }

  Packet encode(const Tensor& x) override {
    Packet p = start_packet(x);
    if (x.is_cuda()) {
      p.body = device_body(p, x.device());
      cuda_kernels::sortquant_encode(contiguous_input(x), p.body, q_bits_, s_bits_);
      return p;
    }
    const HostValues v(x);
    const int64_t n = v.size();
    const int groups = 1 << s_bits_;
    // tensor_split group starts; groups past `nonempty` are empty (only when n < K).
    std::vector<int64_t> start(groups + 1);
    for (int g = 0; g <= groups; ++g) start[g] = g * (n / groups) + std::min<int64_t>(g, n % groups);
    int nonempty = 0;
    while (nonempty < groups && start[nonempty + 1] > start[nonempty]) ++nonempty;

    std::vector<int64_t> ranks;
    for (int g = 0; g < nonempty; ++g) {
      ranks.push_back(start[g]);
      ranks.push_back(start[g + 1] - 1);
    }
    std::sort(ranks.begin(), ranks.end());
    ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
    std::vector<float> work(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) work[i] = v[i];
    multi_select(work, 0, n, ranks.data(), ranks.data() + ranks.size());

    std::vector<float> lo(groups, 0.0f), step(groups, 0.0f), hi(groups, 0.0f);
    for (int g = 0; g < nonempty; ++g) {
      lo[g] = work[start[g]];
      hi[g] = work[start[g + 1] - 1];
      step[g] = quant_step(lo[g], hi[g], (1u << q_bits_) - 1u);
    }
    work.clear();
    work.shrink_to_fit();

    // Values straddling a boundary, with count_less and the running occurrence counter.
    std::map<float, std::pair<int64_t, int64_t>> straddle;  // t -> (count_less, seen so far)
    for (int g = 1; g < nonempty; ++g)
      if (hi[g - 1] == lo[g]) straddle[lo[g] + 0.0f] = {0, 0};
    if (!straddle.empty()) {
      for (int64_t i = 0; i < n; ++i)
        for (auto& [t, c] : straddle)
          if (v[i] < t) ++c.first;
    }

    p.body = make_body(p.header.body_bytes, engine::Device::cpu());
    uint8_t* body = p.body.data<uint8_t>();
    write_group_stats(body, lo.data(), step.data(), groups);
    std::vector<uint32_t> codes(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const float xv = v[i];
      int g;
      auto it = straddle.empty() ? straddle.end() : straddle.find(xv + 0.0f);
      if (it != straddle.end()) {
        const int64_t rank = it->second.first + it->second.second++;
        g = static_cast<int>(std::upper_bound(start.begin(), start.begin() + nonempty, rank) -
                             start.begin()) -
            1;
      } else {
        g = 0;  // #{g >= 1 : lo_g <= x}; lo is non-decreasing, so a binary search over lo[1..nonempty)
        g = static_cast<int>(std::upper_bound(lo.begin() + 1, lo.begin() + std::max(nonempty, 1), xv) -
                             (lo.begin() + 1));
      }
      codes[i] = (static_cast<uint32_t>(g) << q_bits_) | group_value_code(xv, lo[g], step[g], q_bits_);
    }
    pack_codes(codes.data(), n, q_bits_ + s_bits_, body + group_payload_offset(groups));
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

std::unique_ptr<Codec> make_sortquant_codec(const CodecSpec& spec) {
  return std::make_unique<SortQuantCodec>(spec.q_bits, spec.s_bits);
}

}  // namespace dgpipe::compress::detail
