#include "compress/codec.h"

#include <cmath>
#include <cstring>
#include <sstream>

#include "compress/codec_impl.h"
#include "compress/quant_math.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace dgpipe::compress {

using engine::Tensor;

namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// Parses a whole decimal integer; throws naming the spec and the field.
int parse_int(const std::string& text, const std::string& spec, const char* field) {
  DGP_CHECK(!text.empty(), "codec spec '" << spec << "': missing " << field);
  size_t used = 0;
  long v = 0;
  try {
    v = std::stol(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  DGP_CHECK(used == text.size() && used > 0,
            "codec spec '" << spec << "': " << field << " '" << text << "' is not an integer");
  return static_cast<int>(v);
}

double parse_double(const std::string& text, const std::string& spec, const char* field) {
  DGP_CHECK(!text.empty(), "codec spec '" << spec << "': missing " << field);
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  DGP_CHECK(used == text.size() && used > 0,
            "codec spec '" << spec << "': " << field << " '" << text << "' is not a number");
  return v;
}

// "R" or "R/I"
std::pair<int, int> parse_with_iters(const std::string& arg, const std::string& spec, const char* field,
                                     int default_iters) {
  size_t slash = arg.find('/');
  int main_value = parse_int(arg.substr(0, slash), spec, field);
  int iters = default_iters;
  if (slash != std::string::npos) iters = parse_int(arg.substr(slash + 1), spec, "iteration count");
  DGP_CHECK(iters >= 1 && iters <= 1000,
            "codec spec '" << spec << "': iteration count " << iters << " out of range [1, 1000]");
  return {main_value, iters};
}

}  // namespace

std::string CodecSpec::str() const {
  std::ostringstream s;
  s << codec_id_name(id);
  switch (id) {
    case CodecId::uniform:
      s << ":" << q_bits;
      break;
    case CodecId::sortquant:
    case CodecId::fastquant:
      s << ":" << q_bits << "+" << s_bits;
      break;
    case CodecId::topk:
      s << ":" << fraction;
      break;
    case CodecId::power:
    case CodecId::svd:
      s << ":" << rank << "/" << iterations;
      break;
    case CodecId::kmeans:
      s << ":" << bits << "/" << iterations;
      break;
    default:
      break;
  }
  if (error_feedback) s << "+ef";
  return s.str();
}

CodecSpec parse_codec_spec(const std::string& raw) {
  const std::string spec = trim(raw);
  DGP_CHECK(!spec.empty(),
            "codec spec is empty (expected e.g. none, fp16, uniform:8, sortquant:6+2, topk:0.1)");
  CodecSpec out;
  std::string body = spec;
  if (body.size() > 3 && body.compare(body.size() - 3, 3, "+ef") == 0) {
    out.error_feedback = true;
    body = body.substr(0, body.size() - 3);
  }
  size_t colon = body.find(':');
  std::string name = body.substr(0, colon);
  std::string arg = colon == std::string::npos ? std::string() : body.substr(colon + 1);
  auto no_arg = [&](CodecId id) {
    DGP_CHECK(colon == std::string::npos, "codec spec '" << spec << "': " << name << " takes no argument");
    out.id = id;
  };
  if (name == "none") {
    no_arg(CodecId::none);
  } else if (name == "fp16") {
    no_arg(CodecId::fp16);
  } else if (name == "bf16") {
    no_arg(CodecId::bf16);
  } else if (name == "uniform") {
    out.id = CodecId::uniform;
    out.q_bits = parse_int(arg, spec, "bit count Q");
    DGP_CHECK(out.q_bits >= 1 && out.q_bits <= 16,
              "codec spec '" << spec << "': uniform needs 1 <= Q <= 16, got " << out.q_bits);
  } else if (name == "sortquant" || name == "fastquant") {
    out.id = name == "sortquant" ? CodecId::sortquant : CodecId::fastquant;
    size_t plus = arg.find('+');
    DGP_CHECK(plus != std::string::npos, "codec spec '" << spec << "': expected " << name
                                                        << ":Q+S (value bits + split bits), e.g. " << name
                                                        << ":6+2");
    out.q_bits = parse_int(arg.substr(0, plus), spec, "value bits Q");
    out.s_bits = parse_int(arg.substr(plus + 1), spec, "split bits S");
    DGP_CHECK(out.q_bits >= 1 && out.s_bits >= 0 && out.s_bits <= 8 && out.q_bits + out.s_bits <= 16,
              "codec spec '" << spec << "': need Q >= 1, 0 <= S <= 8 and Q + S <= 16, got Q=" << out.q_bits
                             << " S=" << out.s_bits);
  } else if (name == "topk") {
    out.id = CodecId::topk;
    out.fraction = parse_double(arg, spec, "kept fraction R");
    DGP_CHECK(out.fraction > 0.0 && out.fraction <= 1.0,
              "codec spec '" << spec << "': topk fraction must be in (0, 1], got " << out.fraction);
  } else if (name == "power" || name == "svd") {
    out.id = name == "power" ? CodecId::power : CodecId::svd;
    auto [r, it] = parse_with_iters(arg, spec, "rank R", 2);
    out.rank = r;
    out.iterations = it;
    DGP_CHECK(out.rank >= 1 && out.rank <= 4096,
              "codec spec '" << spec << "': rank must be in [1, 4096], got " << out.rank);
  } else if (name == "kmeans") {
    out.id = CodecId::kmeans;
    auto [b, it] = parse_with_iters(arg, spec, "bit count B", 20);
    out.bits = b;
    out.iterations = it;
    DGP_CHECK(out.bits >= 1 && out.bits <= 12,
              "codec spec '" << spec << "': kmeans needs 1 <= B <= 12, got " << out.bits);
  } else {
    DGP_FAIL("codec spec '"
             << spec << "': unknown codec '" << name
             << "' (known: none, fp16, bf16, uniform:Q, sortquant:Q+S, fastquant:Q+S, topk:R, power:R, "
                "svd:R, kmeans:B, each optionally followed by +ef)");
  }
  return out;
}

DirectionPair parse_direction_pair(const std::string& raw) {
  const std::string text = trim(raw);
  DirectionPair out;
  if (text.find('=') == std::string::npos) {
    parse_codec_spec(text);
    out.fwd = out.bwd = text;
    return out;
  }
  out.fwd = out.bwd = "none";
  bool seen_fwd = false, seen_bwd = false;
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, ',')) {
    part = trim(part);
    size_t eq = part.find('=');
    DGP_CHECK(eq != std::string::npos,
              "codec pair '" << text << "': item '" << part << "' is not fwd=SPEC or bwd=SPEC");
    std::string key = trim(part.substr(0, eq)), value = trim(part.substr(eq + 1));
    parse_codec_spec(value);
    if (key == "fwd") {
      DGP_CHECK(!seen_fwd, "codec pair '" << text << "': fwd given twice");
      out.fwd = value;
      seen_fwd = true;
    } else if (key == "bwd") {
      DGP_CHECK(!seen_bwd, "codec pair '" << text << "': bwd given twice");
      out.bwd = value;
      seen_bwd = true;
    } else {
      DGP_FAIL("codec pair '" << text << "': unknown direction '" << key << "' (expected fwd or bwd)");
    }
  }
  return out;
}

uint64_t Codec::wire_bytes(const engine::Shape& shape, engine::DType dtype) const {
  PacketHeader h;
  h.shape = shape;
  h.params = header_params(shape);
  return h.bytes() + body_bytes(shape, dtype);
}

PacketHeader Codec::make_header(const Tensor& x) const {
  PacketHeader h;
  h.codec = id();
  h.dtype = x.dtype();
  h.shape = x.shape();
  h.params = header_params(x.shape());
  h.body_bytes = body_bytes(x.shape(), x.dtype());
  return h;
}

Packet Codec::start_packet(const Tensor& x) const {
  check_input(x);
  Packet p;
  p.boundary = boundary_;
  p.header = make_header(x);
  return p;
}

Tensor Codec::device_body(const Packet& p, engine::Device device) {
  return engine::empty({static_cast<int64_t>(p.header.body_bytes)},
                       engine::TensorOptions(engine::DType::u8, device));
}

Tensor Codec::contiguous_f32(const Tensor& x) {
  return (x.dtype() == engine::DType::f32 ? x : x.to(engine::DType::f32)).contiguous();
}

Tensor Codec::contiguous_input(const Tensor& x) {
  return (x.dtype() == engine::DType::f64 ? x.to(engine::DType::f32) : x).contiguous();
}

std::string Codec::where() const {
  return spec() + " at boundary '" + (boundary_.empty() ? std::string("(unnamed)") : boundary_) + "'";
}

void Codec::check_input(const Tensor& x) const {
  DGP_CHECK(x.defined(), where() << ": encode of an undefined tensor");
  DGP_CHECK(engine::is_floating(x.dtype()), where() << ": expected a floating tensor, got "
                                                    << engine::dtype_name(x.dtype()) << " "
                                                    << engine::shape_str(x.shape()));
  if (!x.device().is_cpu()) return;  // CUDA encodes record non-finite inputs in the packet status word
  const detail::HostValues v(x);
  const int64_t n = v.size();
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(v[i])) {
      int64_t bad = 0;
      for (int64_t j = i; j < n; ++j) bad += std::isfinite(v[j]) ? 0 : 1;
      DGP_FAIL(where() << ": input " << engine::shape_str(x.shape()) << " contains " << bad
                       << " non-finite values (first at flat index " << i << ": " << v[i]
                       << "); NaN/Inf cannot be encoded");
    }
  }
}

void Codec::check_packet(const Packet& p) const {
  DGP_CHECK(p.header.codec == id(),
            where() << ": cannot decode a " << codec_id_name(p.header.codec) << " packet");
  std::vector<int64_t> expect = header_params(p.header.shape);
  DGP_CHECK(p.header.params == expect, where()
                                           << ": packet parameters do not match this codec (packet of shape "
                                           << engine::shape_str(p.header.shape) << ")");
  DGP_CHECK(p.body_bytes() == body_bytes(p.header.shape) && p.header.body_bytes == p.body_bytes(),
            where() << ": packet body has " << p.body_bytes() << " bytes, expected "
                    << body_bytes(p.header.shape) << " for shape " << engine::shape_str(p.header.shape));
}

std::unique_ptr<Codec> make_codec(const CodecSpec& spec, const std::string& boundary) {
  std::unique_ptr<Codec> c;
  switch (spec.id) {
    case CodecId::none:
    case CodecId::fp16:
    case CodecId::bf16:
      c = detail::make_cast_codec(spec);
      break;
    case CodecId::uniform:
      c = detail::make_uniform_codec(spec);
      break;
    case CodecId::sortquant:
      c = detail::make_sortquant_codec(spec);
      break;
    case CodecId::fastquant:
      c = detail::make_fastquant_codec(spec);
      break;
    case CodecId::topk:
      c = detail::make_topk_codec(spec);
      break;
    case CodecId::power:
      c = detail::make_power_codec(spec);
      break;
    case CodecId::svd:
      c = detail::make_svd_codec(spec);
      break;
    case CodecId::kmeans:
      c = detail::make_kmeans_codec(spec);
      break;
  }
  if (spec.error_feedback) c = detail::make_error_feedback(std::move(c), spec);
  c->set_boundary(boundary);
  return c;
}

std::unique_ptr<Codec> make_codec(const std::string& spec, const std::string& boundary) {
  return make_codec(parse_codec_spec(spec), boundary);
}

namespace {
int group_count(const Packet& p) {
  switch (p.header.codec) {
    case CodecId::uniform:
      return 1;
    case CodecId::sortquant:
    case CodecId::fastquant:
      return 1 << p.header.params.at(1);
    default:
      DGP_FAIL("read_group_stats: a " << codec_id_name(p.header.codec) << " packet has no group statistics");
  }
  return 0;
}
}  // namespace

std::vector<GroupStat> read_group_stats(const Packet& p) {
  const int groups = group_count(p);
  Tensor hb = p.host_body();
  DGP_CHECK(static_cast<uint64_t>(hb.numel()) >= detail::group_payload_offset(groups),
            "read_group_stats: body too short");
  std::vector<GroupStat> out(groups);
  std::memcpy(out.data(), static_cast<const uint8_t*>(hb.raw_data()) + detail::group_stats_offset(),
              8ull * groups);
  return out;
}

std::vector<uint32_t> read_codes(const Packet& p) {
  int bits = 0;
  uint64_t offset = 0;
  switch (p.header.codec) {
    case CodecId::uniform:
      bits = static_cast<int>(p.header.params.at(0));
      offset = detail::group_payload_offset(1);
      break;
    case CodecId::sortquant:
    case CodecId::fastquant:
      bits = static_cast<int>(p.header.params.at(0) + p.header.params.at(1));
      offset = detail::group_payload_offset(1 << p.header.params.at(1));
      break;
    case CodecId::kmeans:
      bits = static_cast<int>(p.header.params.at(0));
      offset = detail::kmeans_payload_offset(1 << bits);
      break;
    default:
      DGP_FAIL("read_codes: a " << codec_id_name(p.header.codec) << " packet has no code stream");
  }
  Tensor hb = p.host_body();
  const uint8_t* payload = static_cast<const uint8_t*>(hb.raw_data()) + offset;
  const uint64_t nbytes = static_cast<uint64_t>(hb.numel()) - offset;
  const int64_t n = engine::shape_numel(p.header.shape);
  std::vector<uint32_t> codes(n);
  for (int64_t i = 0; i < n; ++i) codes[i] = get_bits(payload, nbytes, static_cast<uint64_t>(i), bits);
  return codes;
}

int index_bits(int64_t n) {
  int b = 1;
  while (b < 63 && (int64_t(1) << b) < n) ++b;
  return b;
}

void* codec_stream() {
  return engine::cuda::current_stream().raw();  // nullptr in a build without CUDA
}

namespace detail {

Tensor host_f32(const Tensor& x) {
  Tensor h = x.device().is_cpu() ? x : x.to(engine::Device::cpu());
  if (h.dtype() != engine::DType::f32) h = h.to(engine::DType::f32);
  return h.contiguous();
}

Tensor byte_view(const Tensor& t) {
  DGP_CHECK(t.is_contiguous(), "byte_view: tensor must be contiguous");
  auto impl = std::make_shared<engine::TensorImpl>();
  impl->storage = t.storage();
  impl->dtype = engine::DType::u8;
  impl->shape = {static_cast<int64_t>(t.nbytes())};
  impl->strides = {1};
  impl->offset = t.offset() * static_cast<int64_t>(t.itemsize());
  return Tensor(impl);
}

Tensor typed_view(const Tensor& body, uint64_t byte_offset, engine::DType dtype, const engine::Shape& shape) {
  const size_t item = engine::dtype_size(dtype);
  const uint64_t start = static_cast<uint64_t>(body.offset()) + byte_offset;
  DGP_CHECK(start % item == 0, "typed_view: misaligned offset " << byte_offset);
  DGP_CHECK(byte_offset + item * static_cast<uint64_t>(engine::shape_numel(shape)) <= body.nbytes(),
            "typed_view: " << engine::shape_str(shape) << " " << engine::dtype_name(dtype) << " at byte "
                           << byte_offset << " overruns a body of " << body.nbytes() << " bytes");
  auto impl = std::make_shared<engine::TensorImpl>();
  impl->storage = body.storage();
  impl->dtype = dtype;
  impl->shape = shape;
  impl->strides = engine::contiguous_strides(shape);
  impl->offset = static_cast<int64_t>(start / item);
  return Tensor(impl);
}

Tensor finish_decode(const Tensor& f32, engine::DType dtype, engine::Device device) {
  Tensor out = f32;
  if (dtype != engine::DType::f32) out = out.to(dtype);
  if (device != out.device()) out = out.to(device);
  return out;
}

HostValues::HostValues(const Tensor& x) {
  DGP_CHECK(engine::is_floating(x.dtype()),
            "HostValues: expected a floating tensor, got " << engine::dtype_name(x.dtype()));
  host_ = (x.device().is_cpu() ? x : x.to(engine::Device::cpu())).contiguous();
  data_ = host_.raw_data();
  dtype_ = host_.dtype();
  n_ = host_.numel();
}

}  // namespace detail

}  // namespace dgpipe::compress
