// 1-D k-means with K = 2^B centroids (docs/original.md#k-means, with its bugs B8 and B9 fixed).
// Init: quantiles of a strided sample (n_s = min(N, 65536), sorted): c_j = s_((2j+1) n_s / 2K),
// deterministic. Lloyd iterations, at most I: in one dimension the nearest centroid is found by a binary
// search over the K - 1 midpoints of the sorted centroids, so an iteration costs one pass over x and O(N + K)
// memory (never N x K); an empty cluster keeps its previous centroid (the original set it to 0). Stops when
// no centroid moves by more than 1e-6 of the data range. Labels map to centroids by gather (no sequential
// in-place substitution). Body: prelude | K centroids f32 | pad to 16 | N codes of B bits. Decode:
// centroid[code]. CUDA (kmeans.cu): the same steps on the device (sample sorted by CUB, per-block partial
// sums + atomics, a convergence flag read by the kernels instead of the host); results agree with this
// reference up to the order of the double sums (see kmeans.cu).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "compress/codec_impl.h"
#include "compress/kmeans_kernels.h"
#include "compress/quant_math.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace dgpipe::compress::detail {
namespace {

using engine::Tensor;

class KMeansCodec final : public Codec {
 public:
  KMeansCodec(int bits, int iters) : bits_(bits), iters_(iters) {}
  CodecId id() const override { return CodecId::kmeans; }
  std::string spec() const override {
    return "kmeans:" + std::to_string(bits_) + "/" + std::to_string(iters_);
  }
  std::vector<int64_t> header_params(const engine::Shape&) const override { return {bits_, iters_}; }
  uint64_t payload_offset() const { return kmeans_payload_offset(1 << bits_); }
  uint64_t body_bytes(const engine::Shape& s) const override {
    return payload_offset() + packed_bytes(static_cast<uint64_t>(engine::shape_numel(s)), bits_);
  }

  Packet encode(const Tensor& x) override {
    Packet p = start_packet(x);
    if (x.is_cuda()) {
      p.body = device_body(p, x.device());
      cuda_kernels::kmeans_encode(contiguous_input(x), p.body, bits_, iters_);
      return p;
    }
    const HostValues v(x);
    const int64_t n = v.size();
    const int k = 1 << bits_;
    std::vector<double> c(k, 0.0);
    if (n > 0) {
      const int64_t ns = std::min<int64_t>(n, 65536);
      std::vector<float> sample(ns);
      for (int64_t j = 0; j < ns; ++j) sample[j] = v[(j * n) / ns];
      std::sort(sample.begin(), sample.end());
      for (int j = 0; j < k; ++j) c[j] = sample[std::min<int64_t>(ns - 1, ((2 * j + 1) * ns) / (2 * k))];
      const double range = double(sample.back()) - double(sample.front());
      std::vector<double> mids(k - 1), sum(k);
      std::vector<int64_t> count(k);
      for (int it = 0; it < iters_; ++it) {
        for (int j = 0; j + 1 < k; ++j) mids[j] = 0.5 * (c[j] + c[j + 1]);
        std::fill(sum.begin(), sum.end(), 0.0);
        std::fill(count.begin(), count.end(), 0);
        for (int64_t i = 0; i < n; ++i) {
          int j = static_cast<int>(std::upper_bound(mids.begin(), mids.end(), double(v[i])) - mids.begin());
          sum[j] += v[i];
          ++count[j];
        }
        double moved = 0;
        for (int j = 0; j < k; ++j) {
          if (count[j] == 0) continue;
          double nc = sum[j] / double(count[j]);
          moved = std::max(moved, std::fabs(nc - c[j]));
          c[j] = nc;
        }
        std::sort(c.begin(), c.end());  // Lloyd keeps 1-D centroids ordered; this guards rounding
        if (moved <= 1e-6 * range) break;
      }
    }
    std::vector<float> cf(k);
    for (int j = 0; j < k; ++j) cf[j] = static_cast<float>(c[j]);
    // Final assignment: the nearest stored (f32) centroid.
    std::vector<float> mids(k - 1);
    for (int j = 0; j + 1 < k; ++j) mids[j] = 0.5f * (cf[j] + cf[j + 1]);
    Tensor body = make_body(p.header.body_bytes, engine::Device::cpu());
    uint8_t* b = body.data<uint8_t>();
    std::memcpy(b + kPreludeBytes, cf.data(), 4ull * k);
    std::vector<uint32_t> codes(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      uint32_t j = static_cast<uint32_t>(std::upper_bound(mids.begin(), mids.end(), v[i]) - mids.begin());
      // Midpoints are rounded; settle the boundary case by the actual distances.
      if (j > 0 && std::fabs(v[i] - cf[j - 1]) < std::fabs(v[i] - cf[j])) --j;
      if (j + 1 < static_cast<uint32_t>(k) && std::fabs(v[i] - cf[j + 1]) < std::fabs(v[i] - cf[j])) ++j;
      codes[i] = j;
    }
    pack_codes(codes.data(), n, bits_, b + payload_offset());
    p.body = body;
    return p;
  }

  Tensor decode_as(const Packet& p, engine::DType dtype) override {
    check_packet(p);
    if (p.body.is_cuda()) {
      Tensor out = engine::empty(p.header.shape, engine::TensorOptions(engine::DType::f32, p.body.device()));
      cuda_kernels::kmeans_decode(p.body, out, bits_);
      return finish_decode(out, dtype, p.body.device());
    }
    p.check_status();
    Tensor hb = p.host_body();
    const uint8_t* b = hb.data<uint8_t>();
    const int k = 1 << bits_;
    std::vector<float> cf(k);
    std::memcpy(cf.data(), b + kPreludeBytes, 4ull * k);
    Tensor out = engine::empty(p.header.shape, engine::DType::f32);
    float* o = out.data<float>();
    const int64_t n = out.numel();
    const uint64_t off = payload_offset();
    for (int64_t i = 0; i < n; ++i)
      o[i] = cf[get_bits(b + off, hb.nbytes() - off, static_cast<uint64_t>(i), bits_)];
    return finish_decode(out, dtype, p.body.device());
  }

 private:
  int bits_, iters_;
};

}  // namespace

std::unique_ptr<Codec> make_kmeans_codec(const CodecSpec& spec) {
  return std::make_unique<KMeansCodec>(spec.bits, spec.iterations);
}

}  // namespace dgpipe::compress::detail
