// Top-k by magnitude (sent for real): k = floor(R*N) (at least 1 when N > 0) largest |x| over the
// whole flattened tensor; ties in magnitude keep the smaller flat index, so the choice is deterministic.
// Body: prelude | k values f32 (in increasing index order) | pad to 16 | k indices bit-packed in
// index_bits(N) = ceil(log2 N) bits (the narrowest width that holds N - 1; 17 bits for a 128K-element
// tensor). Decode: zeros, then scatter. CPU: one nth_element over (|x|, index) pairs, O(N), plus a sort of
// the k kept indices. CUDA (topk.cu): radix select of the threshold magnitude + order-preserving compaction,
// the same bytes; decode is a memset and a scatter kernel.
// The original's pruning (never sent, bug B10): docs/original.md#top-k-pruning.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <sstream>
#include <vector>

#include "compress/codec_impl.h"
#include "compress/quant_math.h"
#include "compress/topk_kernels.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace dgpipe::compress::detail {
namespace {

using engine::Tensor;

int64_t kept_count(double fraction, int64_t n) {
  if (n == 0) return 0;
  int64_t k = static_cast<int64_t>(std::floor(fraction * static_cast<double>(n) * (1.0 + 1e-12)));
  return std::clamp<int64_t>(k, 1, n);
}

class TopKCodec final : public Codec {
 public:
  explicit TopKCodec(double fraction) : fraction_(fraction) {}
  CodecId id() const override { return CodecId::topk; }
  std::string spec() const override {
    std::ostringstream s;
    s << "topk:" << fraction_;
    return s.str();
  }
  std::vector<int64_t> header_params(const engine::Shape& shape) const override {
    return {kept_count(fraction_, engine::shape_numel(shape))};
  }
  uint64_t body_bytes(const engine::Shape& shape) const override {
    const int64_t n = engine::shape_numel(shape), k = kept_count(fraction_, n);
    return topk_index_offset(k) + packed_bytes(static_cast<uint64_t>(k), index_bits(n));
  }

  Packet encode(const Tensor& x) override {
    Packet p = start_packet(x);
    const int64_t n = x.numel(), k = p.header.params[0];
    DGP_CHECK(index_bits(n) <= 32 && n <= (int64_t(1) << 32),
              where() << ": tensors of more than 2^32 elements are not supported");
    if (x.is_cuda()) {
      p.body = device_body(p, x.device());
      cuda_kernels::topk_encode(contiguous_input(x), p.body, k);
      return p;
    }
    const HostValues v(x);
    std::vector<int64_t> idx(static_cast<size_t>(n));
    std::iota(idx.begin(), idx.end(), int64_t(0));
    auto larger = [&](int64_t a, int64_t b) {
      float fa = std::fabs(v[a]), fb = std::fabs(v[b]);
      return fa > fb || (fa == fb && a < b);
    };
    if (k < n) std::nth_element(idx.begin(), idx.begin() + k, idx.end(), larger);
    idx.resize(static_cast<size_t>(k));
    std::sort(idx.begin(), idx.end());
    Tensor body = make_body(p.header.body_bytes, engine::Device::cpu());
    uint8_t* b = body.data<uint8_t>();
    std::vector<uint32_t> codes(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) {
      const float value = v[idx[j]];
      std::memcpy(b + kPreludeBytes + 4 * j, &value, 4);
      codes[j] = static_cast<uint32_t>(idx[j]);
    }
    pack_codes(codes.data(), k, index_bits(n), b + topk_index_offset(k));
    p.body = body;
    return p;
  }

  Tensor decode_as(const Packet& p, engine::DType dtype) override {
    check_packet(p);
    const int64_t n = engine::shape_numel(p.header.shape), k = p.header.params[0];
    if (p.body.is_cuda()) {
      Tensor out = engine::empty(p.header.shape, engine::TensorOptions(engine::DType::f32, p.body.device()));
      cuda_kernels::topk_decode(p.body, out, k);
      return finish_decode(out, dtype, p.body.device());
    }
    p.check_status();
    Tensor hb = p.host_body();
    const uint8_t* b = hb.data<uint8_t>();
    const int bits = index_bits(n);
    Tensor out = engine::zeros(p.header.shape, engine::DType::f32);
    float* o = out.data<float>();
    const uint64_t off = topk_index_offset(k);
    for (int64_t j = 0; j < k; ++j) {
      const uint32_t i = get_bits(b + off, hb.nbytes() - off, static_cast<uint64_t>(j), bits);
      DGP_CHECK(i < static_cast<uint64_t>(n), where() << ": corrupt packet, index " << i << " >= " << n);
      std::memcpy(&o[i], b + kPreludeBytes + 4 * j, 4);
    }
    return finish_decode(out, dtype, p.body.device());
  }

 private:
  double fraction_;
};

}  // namespace

std::unique_ptr<Codec> make_topk_codec(const CodecSpec& spec) {
  return std::make_unique<TopKCodec>(spec.fraction);
}

}  // namespace dgpipe::compress::detail
