// Top-k by magnitude (sent for real): k = floor(R*N) (at least 1 when N > 0) largest |x| over the
// whole flattened tensor; ties in magnitude keep the smaller flat index, so the choice is deterministic.
// Body: prelude | k values f32 (in increasing index order) | pad to 16 | k indices bit-packed in
// index_bits(N) = ceil(log2 N) bits (the narrowest width that holds N - 1; 17 bits for a 128K-element
// tensor). Decode: zeros, then scatter (CPU: both in one pass per chunk of kept values, on the op threads).
// CPU: a radix select of the k-th largest magnitude (two 16-bit histogram passes over the bits of |x|), then
// one pass that keeps, in index order, what is above it and the first ties. CUDA (topk.cu): radix select of
// the threshold magnitude + order-preserving compaction, the same bytes; decode is a memset and a scatter
// kernel. The original's pruning (never sent, bug B10): docs/original.md#top-k-pruning.
#include <algorithm>
#include <cmath>
#include <cstring>
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

// |x| as an integer with the same order (the bits without the sign; both zeros are 0). Finite inputs only.
uint32_t magnitude_key(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u & 0x7fffffffu;
}

// The k-th largest magnitude key, and how many elements holding it are kept (the rest of the k are larger).
struct MagnitudeCut {
  uint32_t key = 0;
  int64_t ties = 0;
};

// Radix select in two histogram passes of 16 bits: the bin of the high half that holds the k-th largest key,
// then the low half within that bin.
MagnitudeCut magnitude_cut(const float* x, int64_t n, int64_t k) {
  std::vector<int64_t> count(1 << 16, 0);
  for (int64_t i = 0; i < n; ++i) ++count[magnitude_key(x[i]) >> 16];
  int64_t above = 0;  // elements in bins above the current one
  uint32_t high = 0xffff;
  while (above + count[high] < k) above += count[high--];
  std::fill(count.begin(), count.end(), 0);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t key = magnitude_key(x[i]);
    if ((key >> 16) == high) ++count[key & 0xffffu];
  }
  uint32_t low = 0xffff;
  while (above + count[low] < k) above += count[low--];
  return {(high << 16) | low, k - above};
}

// Throws for the first index of a chunk (m indices from position `first`) that is not below n or does not
// increase, or that reaches the next chunk's first index.
[[noreturn]] void refuse_corrupt_chunk(const uint32_t* index, int64_t m, int64_t first, int64_t n, uint64_t next,
                                       const std::string& where) {
  for (int64_t j = 0; j < m; ++j) {
    DGP_CHECK(index[j] < static_cast<uint64_t>(n),
              where << ": corrupt packet, index " << index[j] << " >= " << n);
    DGP_CHECK((j == 0 || index[j] > index[j - 1]) && index[j] < next,
              where << ": corrupt packet, indices do not increase (" << index[j] << " at position " << first + j
                    << ")");
  }
  DGP_CHECK(false, where << ": corrupt packet");  // not reached: the caller saw a bad index
}

// Decodes a top-k body into out[0..n): zeros but at the kept indices. The kept values come in chunks of
// kChunk; chunk c owns the stretch of the output from its first index (0 for the first chunk) to the next
// chunk's first index (n for the last), and zeroes it and scatters its values into it in one pass, on the op
// threads. Valid indices increase strictly (the encoder writes them in index order), so the stretches are
// disjoint and every output element is written by one chunk: the same result at any thread count. A packet
// whose indices do not increase or reach n is refused as corrupt.
void scatter_kept(const uint8_t* body, uint64_t body_bytes, int64_t n, int64_t k, float* out,
                  const std::string& where) {
  constexpr int64_t kChunk = 1024;  // a multiple of 8: chunks start on whole packing blocks
  const int bits = index_bits(n);
  const uint8_t* indices = body + topk_index_offset(k);
  const uint64_t index_bytes = body_bytes - topk_index_offset(k);
  const int64_t chunks = (k + kChunk - 1) / kChunk;
  if (chunks == 0) std::memset(out, 0, sizeof(float) * static_cast<size_t>(n));
  // Large parts: a hand-off to another thread costs about as much as zeroing 64k elements.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) * k / std::max<int64_t>(1, n * kChunk));
  engine::parallel_for(chunks, grain, [&](int64_t c0, int64_t c1) {
    uint32_t index[kChunk];
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t first = c * kChunk, m = std::min(kChunk, k - first);
      uint64_t next = static_cast<uint64_t>(n);  // the next chunk's first index
      if (c + 1 < chunks) {
        uint32_t i;
        unpack_codes(indices, index_bytes, first + kChunk, 1, bits, &i);
        // At most n: this chunk zeroes up to it before the next chunk has checked its own indices.
        next = std::min<uint64_t>(i, static_cast<uint64_t>(n));
      }
      unpack_codes(indices, index_bytes, first, m, bits, index);
      const uint64_t begin = c == 0 ? 0 : index[0];
      // Checked without a branch per index (a corrupt packet is the rare case: then found again, by position)
      bool increasing = index[0] < next;
      for (int64_t j = 1; j < m; ++j) increasing &= (index[j] > index[j - 1]) & (index[j] < next);
      if (!increasing) refuse_corrupt_chunk(index, m, first, n, next, where);
      // Local copies: stores through `out` could otherwise alias the captured pointers, reloaded per element.
      float* const o = out;
      const uint8_t* const values = body + kPreludeBytes + 4 * first;
      std::memset(o + begin, 0, sizeof(float) * static_cast<size_t>(next - begin));
      for (int64_t j = 0; j < m; ++j) std::memcpy(&o[index[j]], values + 4 * j, 4);
    }
  });
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
    const float* xv = v.floats();
    const MagnitudeCut cut = magnitude_cut(xv, n, k);
    Tensor body = make_body(p.header.body_bytes, engine::Device::cpu());
    uint8_t* b = body.data<uint8_t>();
    // The kept elements in index order: every magnitude above the cut, and the first `ties` at it.
    int64_t ties = cut.ties, j = 0;
    uint32_t codes[1024];
    const int bits = index_bits(n);
    for (int64_t i = 0; i < n && j < k; ++i) {
      const uint32_t key = magnitude_key(xv[i]);
      if (key < cut.key || (key == cut.key && ties-- <= 0)) continue;
      std::memcpy(b + kPreludeBytes + 4 * j, &xv[i], 4);
      codes[j % 1024] = static_cast<uint32_t>(i);
      if (++j % 1024 == 0) pack_codes_at(codes, j - 1024, 1024, bits, b + topk_index_offset(k));
    }
    pack_codes_at(codes, j - j % 1024, j % 1024, bits, b + topk_index_offset(k));
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
    Tensor out = engine::empty(p.header.shape, engine::DType::f32);
    scatter_kept(b, hb.nbytes(), n, k, out.data<float>(), where());
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
