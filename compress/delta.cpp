// delta[:F]>C — compress the change of each sample's activation since the last time it crossed the boundary
// (the idea of AC-SGD, Wang et al., NeurIPS 2022): when the model changes slowly, a sample's boundary tensor
// in epoch e+1 is close to the one in epoch e, so the change needs far fewer bits than the value.
//
// Both ends keep, per training sample (dim 0 of the tensor is the sample; the caller passes each row's
// dataset index), a reference r: what the receiver reconstructed the last time. A row whose sample has a
// reference (of the same size) is sent as c = x - r, encoded with C; the receiver sets r <- r + D(C(c)), and
// so does the sender, from its own packet — both compute the same floats from the same bytes, so the two
// references never drift apart, and the error of one send is carried into the next change (which is why
// "+ef" is refused). A row seen for the first time (or whose size changed, e.g. a text batch padded to a
// different length) is sent with F (default none: exact) and r <- D(F(x)).
// Without sample ids (evaluation) every row is sent with F and nothing is remembered: evaluation batches are
// other samples (their ids would collide with the training set's), and a store for them would double the
// memory for traffic that is not what the run is about.
//
// Body: prelude (status: sum of the parts') | bitmap, bit i set = row i sent with F | pad to 16
//       | F's body for the f fresh rows [f, ...] | pad to 16 | C's body for the n - f other rows [n-f, ...].
// Header params: {f}. So the size depends on f, which the sender knows from its store before any kernel runs;
// Codec::wire_bytes(shape) is the all-fresh packet (what encode() without ids sends).
//
// Memory: the references live in host memory, f32, one row per sample ever sent: state_bytes() = samples x
// row elements x 4 on each end of the boundary. Device work (CUDA): gather and subtract/add with engine ops,
// C's and F's own kernels; the references cross PCIe once each way per row and step.
#include <unordered_map>
#include <vector>

#include "compress/codec_impl.h"
#include "compress/quant_math.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace dgpipe::compress::detail {
namespace {

using engine::DType;
using engine::Tensor;

// One f32 row per sample: the reference both ends agree on.
class ReferenceStore {
 public:
  // The reference of `id` if it has `elems` elements, else nullptr.
  const float* find(int64_t id, int64_t elems) const {
    auto it = rows_.find(id);
    return it != rows_.end() && static_cast<int64_t>(it->second.size()) == elems ? it->second.data()
                                                                                 : nullptr;
  }
  void put(int64_t id, const float* row, int64_t elems) {
    std::vector<float>& r = rows_[id];
    bytes_ -= 4 * r.size();
    r.assign(row, row + elems);
    bytes_ += 4 * r.size();
  }
  uint64_t bytes() const { return bytes_; }

 private:
  std::unordered_map<int64_t, std::vector<float>> rows_;
  uint64_t bytes_ = 0;
};

// Where the parts of a delta body lie, for n rows of which f are fresh.
struct DeltaLayout {
  uint64_t fresh_offset = 0, change_offset = 0, total = 0;
};

engine::Shape rows_shape(const engine::Shape& shape, int64_t rows) {
  engine::Shape s = shape;
  s[0] = rows;
  return s;
}

Tensor index_tensor(const std::vector<int64_t>& idx, engine::Device device) {
  return engine::from_vector(idx, {static_cast<int64_t>(idx.size())}).to(device);
}

class DeltaCodec final : public Codec {
 public:
  explicit DeltaCodec(const CodecSpec& spec)
      : fresh_(make_codec(*spec.fresh)), change_(make_codec(*spec.next)) {
    spec_ = spec.str();
  }
  CodecId id() const override { return CodecId::delta; }
  std::string spec() const override { return spec_; }
  bool needs_sample_ids() const override { return true; }
  uint64_t state_bytes() const override { return store_.bytes(); }
  std::vector<int64_t> header_params(const engine::Shape& shape) const override {
    return {shape.empty() ? 0 : shape[0]};
  }
  uint64_t body_bytes(const engine::Shape& shape) const override {
    return shape.empty() ? 0 : layout(shape, shape[0]).total;
  }

  Packet encode(const Tensor& x) override { return encode_samples(x, Tensor()); }
  Tensor decode_as(const Packet& p, DType dtype) override { return decode_samples_as(p, Tensor(), dtype); }

  Packet encode_samples(const Tensor& x, const Tensor& sample_ids) override {
    check_input(x);
    DGP_CHECK(x.dim() >= 1, where() << ": needs a tensor whose dim 0 is the sample, got a scalar");
    name_inner();
    const int64_t n = x.size(0), elems = n > 0 ? x.numel() / n : 0;
    const std::vector<int64_t> ids = sample_list(sample_ids, n);
    std::vector<int64_t> fresh_rows, seen_rows;
    for (int64_t i = 0; i < n; ++i)
      (ids.empty() || !store_.find(ids[i], elems) ? fresh_rows : seen_rows).push_back(i);
    const int64_t f = static_cast<int64_t>(fresh_rows.size()), d = n - f;
    const DeltaLayout at = layout(x.shape(), f);

    Packet p;
    p.boundary = boundary_;
    p.header = {CodecId::delta, x.dtype(), x.shape(), {f}, at.total};
    p.body = make_body(at.total, x.device());
    write_bitmap(p.body, fresh_rows, n);
    const Tensor xf = contiguous_f32(x);
    Tensor rec_fresh, rec_seen;
    if (f > 0) {
      // In f32 whatever the input's dtype, as every quantizing codec: a half input gives its f32 values'
      // packet.
      const Packet part = fresh_->encode(engine::index_select(xf, 0, index_tensor(fresh_rows, x.device())));
      place_inner_body(p.body, at.fresh_offset, part);
      if (!ids.empty()) rec_fresh = fresh_->decode_as(part, DType::f32);
    }
    if (d > 0) {
      const Tensor ref = references(ids, seen_rows, x.shape(), x.device());
      const Tensor rows = engine::index_select(xf, 0, index_tensor(seen_rows, x.device()));
      const Packet part = change_->encode(engine::sub(rows, ref));
      place_inner_body(p.body, at.change_offset, part);
      rec_seen = engine::add(ref, change_->decode_as(part, DType::f32));
    }
    if (x.is_cuda()) sum_status(p.body, f, d, at);
    remember(ids, fresh_rows, rec_fresh);
    remember(ids, seen_rows, rec_seen);
    return p;
  }

  Tensor decode_samples_as(const Packet& p, const Tensor& sample_ids, DType dtype) override {
    const int64_t n = check_delta_packet(p);
    if (!p.body.is_cuda()) p.check_status();
    name_inner();
    const engine::Shape& shape = p.header.shape;
    const engine::Device device = p.body.device();
    const int64_t f = p.header.params[0], d = n - f, elems = n > 0 ? engine::shape_numel(shape) / n : 0;
    const std::vector<int64_t> ids = sample_list(sample_ids, n);
    DGP_CHECK(!ids.empty() || d == 0,
              where() << ": a packet with " << d << " changed rows needs the sample ids of its rows");
    std::vector<int64_t> fresh_rows, seen_rows;
    read_bitmap(p.body, n, fresh_rows, seen_rows);
    DGP_CHECK(static_cast<int64_t>(fresh_rows.size()) == f, where() << ": corrupt packet: the bitmap marks "
                                                                    << fresh_rows.size()
                                                                    << " fresh rows, the header " << f);
    for (int64_t i : seen_rows)
      DGP_CHECK(store_.find(ids[i], elems),
                where() << ": sample " << ids[i]
                        << " arrived as a change, but this side holds no reference for it"
                        << " (the two ends' stores are out of step: was one of them restarted?)");
    const DeltaLayout at = layout(shape, f);
    std::vector<Tensor> parts;
    Tensor rec_fresh, rec_seen;
    if (f > 0) {
      rec_fresh = fresh_->decode_as(
          inner_packet(*fresh_, rows_shape(shape, f), DType::f32, p.body, at.fresh_offset, boundary_),
          DType::f32);
      parts.push_back(rec_fresh);
    }
    if (d > 0) {
      const Tensor ref = references(ids, seen_rows, shape, device);
      rec_seen = engine::add(ref, change_->decode_as(inner_packet(*change_, rows_shape(shape, d), DType::f32,
                                                                  p.body, at.change_offset, boundary_),
                                                     DType::f32));
      parts.push_back(rec_seen);
    }
    remember(ids, fresh_rows, rec_fresh);
    remember(ids, seen_rows, rec_seen);
    if (parts.empty())
      return finish_decode(engine::zeros(shape, engine::TensorOptions(DType::f32, device)), dtype, device);
    // Rows come fresh first, then the others; put each back in its place.
    std::vector<int64_t> place(static_cast<size_t>(n));
    for (size_t j = 0; j < fresh_rows.size(); ++j) place[fresh_rows[j]] = static_cast<int64_t>(j);
    for (size_t j = 0; j < seen_rows.size(); ++j) place[seen_rows[j]] = f + static_cast<int64_t>(j);
    const Tensor joined = parts.size() == 1 ? parts[0] : engine::concat(parts, 0);
    return finish_decode(engine::index_select(joined, 0, index_tensor(place, device)), dtype, device);
  }

 private:
  DeltaLayout layout(const engine::Shape& shape, int64_t f) const {
    const int64_t n = shape[0];
    DeltaLayout at;
    at.fresh_offset = align16(kPreludeBytes + static_cast<uint64_t>((n + 7) / 8));
    const uint64_t fresh_bytes = f > 0 ? fresh_->body_bytes(rows_shape(shape, f)) : 0;
    at.change_offset = align16(at.fresh_offset + fresh_bytes);
    at.total = at.change_offset + (n - f > 0 ? change_->body_bytes(rows_shape(shape, n - f)) : 0);
    return at;
  }

  // The header of a delta packet against this codec; returns the row count.
  int64_t check_delta_packet(const Packet& p) const {
    DGP_CHECK(p.header.codec == CodecId::delta,
              where() << ": cannot decode a " << codec_id_name(p.header.codec) << " packet");
    DGP_CHECK(!p.header.shape.empty(), where() << ": a delta packet of a scalar");
    const int64_t n = p.header.shape[0];
    DGP_CHECK(p.header.params.size() == 1 && p.header.params[0] >= 0 && p.header.params[0] <= n,
              where() << ": packet parameters do not match this codec (packet of shape "
                      << engine::shape_str(p.header.shape) << ")");
    const uint64_t expect = layout(p.header.shape, p.header.params[0]).total;
    DGP_CHECK(p.body_bytes() == expect && p.header.body_bytes == expect,
              where() << ": packet body has " << p.body_bytes() << " bytes, expected " << expect
                      << " for shape " << engine::shape_str(p.header.shape) << " with " << p.header.params[0]
                      << " fresh rows");
    return n;
  }

  // The sample ids as a host list (empty when undefined).
  std::vector<int64_t> sample_list(const Tensor& sample_ids, int64_t rows) const {
    if (!sample_ids.defined()) return {};
    DGP_CHECK(!engine::is_floating(sample_ids.dtype()) && sample_ids.numel() == rows,
              where() << ": expected " << rows << " integer sample ids (one per row), got "
                      << engine::dtype_name(sample_ids.dtype()) << " "
                      << engine::shape_str(sample_ids.shape()));
    const Tensor h = sample_ids.to(engine::Device::cpu()).to(DType::i64).contiguous();
    return std::vector<int64_t>(h.data<int64_t>(), h.data<int64_t>() + rows);
  }

  // The references of `rows` as one f32 tensor of shape [rows.size(), ...] on `device`.
  Tensor references(const std::vector<int64_t>& ids, const std::vector<int64_t>& rows,
                    const engine::Shape& shape, engine::Device device) const {
    const engine::Shape s = rows_shape(shape, static_cast<int64_t>(rows.size()));
    const int64_t elems = shape[0] > 0 ? engine::shape_numel(shape) / shape[0] : 0;
    Tensor host = engine::empty(s, DType::f32);
    float* out = host.data<float>();
    for (size_t j = 0; j < rows.size(); ++j) {
      const float* r = store_.find(ids[rows[j]], elems);
      std::copy(r, r + elems, out + j * elems);
    }
    return host.to(device);
  }

  // Stores the reconstructed rows `rec` [rows.size(), ...] as the references of their samples.
  void remember(const std::vector<int64_t>& ids, const std::vector<int64_t>& rows, const Tensor& rec) {
    if (ids.empty() || rows.empty()) return;
    const Tensor h = rec.to(engine::Device::cpu()).contiguous();
    const int64_t elems = h.numel() / static_cast<int64_t>(rows.size());
    for (size_t j = 0; j < rows.size(); ++j) store_.put(ids[rows[j]], h.data<float>() + j * elems, elems);
  }

  static void write_bitmap(const Tensor& body, const std::vector<int64_t>& fresh_rows, int64_t n) {
    if (n == 0) return;
    Tensor bits = engine::zeros({(n + 7) / 8}, DType::u8);
    for (int64_t i : fresh_rows) bits.data<uint8_t>()[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
    body.slice(0, kPreludeBytes, kPreludeBytes + bits.numel()).copy_(bits);
  }
  static void read_bitmap(const Tensor& body, int64_t n, std::vector<int64_t>& fresh_rows,
                          std::vector<int64_t>& seen_rows) {
    if (n == 0) return;
    const Tensor bits =
        body.slice(0, kPreludeBytes, kPreludeBytes + (n + 7) / 8).to(engine::Device::cpu()).contiguous();
    for (int64_t i = 0; i < n; ++i)
      ((bits.data<uint8_t>()[i / 8] >> (i % 8)) & 1u ? fresh_rows : seen_rows).push_back(i);
  }

  // A CUDA encode counts non-finite inputs into each part's status word; the packet's is their sum.
  void sum_status(const Tensor& body, int64_t f, int64_t d, const DeltaLayout& at) const {
    Tensor total = engine::zeros({1}, engine::TensorOptions(DType::f32, body.device()));
    if (f > 0 && codec_has_prelude(fresh_->id()))
      total = engine::add(total, typed_view(body, at.fresh_offset, DType::i32, {1}).to(DType::f32));
    if (d > 0 && codec_has_prelude(change_->id()))
      total = engine::add(total, typed_view(body, at.change_offset, DType::i32, {1}).to(DType::f32));
    typed_view(body, 0, DType::i32, {1}).copy_(total);
  }

  void name_inner() {
    fresh_->set_boundary(boundary_);
    change_->set_boundary(boundary_);
  }

  std::unique_ptr<Codec> fresh_, change_;
  std::string spec_;
  ReferenceStore store_;
};

}  // namespace

std::unique_ptr<Codec> make_delta_codec(const CodecSpec& spec) {
  DGP_CHECK(spec.next && spec.fresh, "delta: no codec for the changes");
  return std::make_unique<DeltaCodec>(spec);
}

}  // namespace dgpipe::compress::detail
