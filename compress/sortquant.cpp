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
// CPU: a 16-bit histogram of the keys, then multi-select with nth_element over the members of the bins that
// hold the 2K ranks only; one counting pass for straddling values (only when there are any), one
// quantize+pack pass. CUDA (sortquant.cu): radix select of the 2K ranks (4 histogram passes of 8 bits), then
// one fused quantize+pack pass (+ one counting pass when straddling values exist).
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

// The values of rank ranks[j] (sorted, unique) of x[0..n), into value[j]. One histogram pass over the top 16
// bits of the order-preserving keys (float_to_key) finds the bin of every rank; a second pass gathers the
// members of those bins only (bins in key order, so every other element is below or above all of them), and
// multi_select runs on that much shorter array.
void select_ranks(const float* x, int64_t n, const std::vector<int64_t>& ranks, std::vector<float>& value) {
  constexpr int kBins = 1 << 16;
  std::vector<int64_t> below(kBins + 1, 0);  // below[b]: elements in bins < b (a histogram, then its prefix)
  for (int64_t i = 0; i < n; ++i) ++below[(float_to_key(x[i]) >> 16) + 1];
  for (int b = 0; b < kBins; ++b) below[b + 1] += below[b];
  std::vector<int32_t> slot(kBins, -1);  // segment of a wanted bin in the gathered array
  std::vector<int64_t> seg_start, fill;
  std::vector<int64_t> pos(ranks.size());
  int64_t gathered = 0;
  for (size_t j = 0, b = 0; j < ranks.size(); ++j) {
    while (below[b + 1] <= ranks[j]) ++b;  // the bin holding rank ranks[j]
    if (slot[b] < 0) {
      slot[b] = static_cast<int32_t>(seg_start.size());
      seg_start.push_back(gathered);
      gathered += below[b + 1] - below[b];
    }
    pos[j] = seg_start[slot[b]] + (ranks[j] - below[b]);
  }
  fill = seg_start;
  std::vector<float> work(static_cast<size_t>(gathered));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t s = slot[float_to_key(x[i]) >> 16];
    if (s >= 0) work[fill[s]++] = x[i];
  }
  multi_select(work, 0, gathered, pos.data(), pos.data() + pos.size());
  value.resize(ranks.size());
  for (size_t j = 0; j < ranks.size(); ++j) value[j] = work[pos[j]];
}

// Group of every x (no straddling value among them): #{g in [1, nonempty) : lo_g <= x}.
void assign_groups(const float* x, int64_t m, const float* lo, int nonempty, uint8_t* group) {
  if (nonempty > 16) {
    for (int64_t i = 0; i < m; ++i)
      group[i] = static_cast<uint8_t>(std::upper_bound(lo + 1, lo + nonempty, x[i]) - (lo + 1));
    return;
  }
  for (int64_t i = 0; i < m; ++i) {
    int g = 0;
    for (int j = 1; j < nonempty; ++j) g += lo[j] <= x[i] ? 1 : 0;
    group[i] = static_cast<uint8_t>(g);
  }
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
    const float* xv = v.floats();
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
    std::vector<float> value;
    select_ranks(xv, n, ranks, value);
    auto at_rank = [&](int64_t r) {
      return value[std::lower_bound(ranks.begin(), ranks.end(), r) - ranks.begin()];
    };

    std::vector<float> lo(groups, 0.0f), step(groups, 0.0f), hi(groups, 0.0f);
    for (int g = 0; g < nonempty; ++g) {
      lo[g] = at_rank(start[g]);
      hi[g] = at_rank(start[g + 1] - 1);
      step[g] = quant_step(lo[g], hi[g], (1u << q_bits_) - 1u);
    }

    // Values straddling a boundary, with count_less and the running occurrence counter.
    std::map<float, std::pair<int64_t, int64_t>> straddle;  // t -> (count_less, seen so far)
    for (int g = 1; g < nonempty; ++g)
      if (hi[g - 1] == lo[g]) straddle[lo[g] + 0.0f] = {0, 0};
    if (!straddle.empty()) {
      for (int64_t i = 0; i < n; ++i)
        for (auto& [t, c] : straddle)
          if (xv[i] < t) ++c.first;
    }

    p.body = make_body(p.header.body_bytes, engine::Device::cpu());
    uint8_t* body = p.body.data<uint8_t>();
    write_group_stats(body, lo.data(), step.data(), groups);
    encode_in_chunks(
        n, q_bits_ + s_bits_, body + group_payload_offset(groups),
        [&](int64_t first, int64_t m, uint32_t* codes) {
          uint8_t group[1024];
          assign_groups(xv + first, m, lo.data(), nonempty, group);
          // A straddling value t is in the group found above (the one whose lo is t) or an
          // earlier one: its occurrence's rank decides.
          for (int64_t i = 0; i < m && !straddle.empty(); ++i) {
            auto it = straddle.find(xv[first + i] + 0.0f);
            if (it == straddle.end()) continue;
            const int64_t rank = it->second.first + it->second.second++;
            group[i] = static_cast<uint8_t>(std::upper_bound(start.begin(), start.begin() + nonempty, rank) -
                                            start.begin() - 1);
          }
          group_codes(xv + first, group, m, lo.data(), step.data(), groups, q_bits_, codes);
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

std::unique_ptr<Codec> make_sortquant_codec(const CodecSpec& spec) {
  return std::make_unique<SortQuantCodec>(spec.q_bits, spec.s_bits);
}

}  // namespace dgpipe::compress::detail
