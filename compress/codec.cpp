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

namespace {

// This stage's own spelling, without what it feeds (next) and without "+ef".
std::string stage_str(const CodecSpec& c) {
  std::ostringstream s;
  switch (c.id) {
    case CodecId::uniform:
      s << "uniform:" << c.q_bits;
      if (c.grouping == Grouping::channel) s << "/channel";
      if (c.grouping == Grouping::row) s << "/row";
      break;
    case CodecId::sortquant:
    case CodecId::fastquant:
      s << codec_id_name(c.id) << ":" << c.q_bits << "+" << c.s_bits;
      break;
    case CodecId::topk:
    case CodecId::topk_chain:
      s << "topk:" << c.fraction;
      break;
    case CodecId::power:
    case CodecId::svd:
      s << codec_id_name(c.id) << ":" << c.rank << "/" << c.iterations;
      break;
    case CodecId::kmeans:
      s << "kmeans:" << c.bits << "/" << c.iterations;
      break;
    case CodecId::delta:
      s << "delta";
      if (c.fresh && c.fresh->id != CodecId::none) s << ":" << stage_str(*c.fresh);
      break;
    default:
      s << codec_id_name(c.id);
      break;
  }
  if (c.next) s << ">" << stage_str(*c.next);
  return s.str();
}

const char* kKnownCodecs =
    "none, fp16, bf16, uniform:Q[/channel|/row], sortquant:Q+S, fastquant:Q+S, topk:R, power:R, svd:R, "
    "kmeans:B, chains topk:R>Q and delta[:F]>C, each optionally followed by +ef";

// One stage of a spec ("uniform:8/row", "delta:fp16"); `spec` is the whole spec, for error messages.
CodecSpec parse_stage(const std::string& stage, const std::string& spec) {
  CodecSpec out;
  size_t colon = stage.find(':');
  std::string name = stage.substr(0, colon);
  std::string arg = colon == std::string::npos ? std::string() : stage.substr(colon + 1);
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
    size_t slash = arg.find('/');
    out.q_bits = parse_int(arg.substr(0, slash), spec, "bit count Q");
    DGP_CHECK(out.q_bits >= 1 && out.q_bits <= 16,
              "codec spec '" << spec << "': uniform needs 1 <= Q <= 16, got " << out.q_bits);
    if (slash != std::string::npos) {
      const std::string group = arg.substr(slash + 1);
      DGP_CHECK(group == "channel" || group == "row",
                "codec spec '" << spec << "': unknown grouping '" << group
                               << "' (expected uniform:Q/channel or uniform:Q/row)");
      out.grouping = group == "channel" ? Grouping::channel : Grouping::row;
    }
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
  } else if (name == "delta") {
    out.id = CodecId::delta;
    CodecSpec fresh;  // none unless given
    if (colon != std::string::npos) {
      DGP_CHECK(!arg.empty(),
                "codec spec '" << spec << "': delta: needs a codec after the colon (delta:fp16)");
      fresh = parse_stage(arg, spec);
      DGP_CHECK(fresh.id != CodecId::delta && fresh.id != CodecId::power && fresh.id != CodecId::svd,
                "codec spec '" << spec << "': delta's first sends cannot use " << codec_id_name(fresh.id)
                               << " (the references on both sides must decode bit for bit alike)");
    }
    out.fresh = std::make_shared<const CodecSpec>(fresh);
  } else {
    DGP_FAIL("codec spec '" << spec << "': unknown codec '" << name << "' (known: " << kKnownCodecs << ")");
  }
  return out;
}

// Checks that `first` may feed `next` and links them.
CodecSpec chain(CodecSpec first, const CodecSpec& next, const std::string& spec) {
  if (first.id == CodecId::topk) {
    const bool values_codec = (next.id == CodecId::uniform && next.grouping == Grouping::tensor) ||
                              next.id == CodecId::sortquant || next.id == CodecId::fastquant ||
                              next.id == CodecId::kmeans || next.id == CodecId::fp16 ||
                              next.id == CodecId::bf16;
    DGP_CHECK(values_codec, "codec spec '" << spec << "': topk's kept values are a flat list; they can feed "
                                           << "uniform:Q, sortquant, fastquant, kmeans, fp16 or bf16, not '"
                                           << stage_str(next) << "'");
    first.id = CodecId::topk_chain;
  } else if (first.id == CodecId::delta) {
    DGP_CHECK(next.id != CodecId::delta && next.id != CodecId::power && next.id != CodecId::svd,
              "codec spec '" << spec << "': delta cannot feed '" << stage_str(next) << "' ("
                             << (next.id == CodecId::delta
                                     ? "one delta per boundary"
                                     : "a low-rank decode is a GEMM whose rounding differs between CPU and "
                                       "GPU, so the two sides' references could drift")
                             << ")");
  } else {
    DGP_FAIL("codec spec '" << spec << "': only topk and delta can feed another codec ('" << stage_str(first)
                            << "' cannot; e.g. topk:0.5>uniform:8, delta>uniform:4)");
  }
  first.next = std::make_shared<const CodecSpec>(next);
  return first;
}

bool contains_delta(const CodecSpec& c) {
  return c.id == CodecId::delta || (c.next && contains_delta(*c.next));
}

}  // namespace

std::string CodecSpec::str() const {
  return stage_str(*this) + (error_feedback ? "+ef" : "");
}

CodecSpec parse_codec_spec(const std::string& raw) {
  const std::string spec = trim(raw);
  DGP_CHECK(!spec.empty(),
            "codec spec is empty (expected e.g. none, fp16, uniform:8, sortquant:6+2, topk:0.1)");
  std::string body = spec;
  bool error_feedback = false;
  if (body.size() > 3 && body.compare(body.size() - 3, 3, "+ef") == 0) {
    error_feedback = true;
    body = body.substr(0, body.size() - 3);
  }
  // Stages left to right; each one but the last feeds the next, so the spec is built from the right.
  std::vector<std::string> stages;
  std::stringstream ss(body);
  std::string stage;
  while (std::getline(ss, stage, '>')) stages.push_back(trim(stage));
  if (body.empty() || body.back() == '>') stages.push_back("");
  for (const std::string& st : stages)
    DGP_CHECK(!st.empty(), "codec spec '" << spec << "': an empty stage around '>' (expected e.g. "
                                          << "topk:0.5>uniform:8)");
  CodecSpec out = parse_stage(stages.back(), spec);
  for (size_t i = stages.size() - 1; i-- > 0;) out = chain(parse_stage(stages[i], spec), out, spec);
  DGP_CHECK(!(error_feedback && contains_delta(out)),
            "codec spec '" << spec << "': error feedback cannot wrap delta (its reference already carries "
                           << "the error of the last send into the next one)");
  DGP_CHECK(stages.size() > 1 || out.id != CodecId::delta,
            "codec spec '" << spec << "': delta needs the codec of the changes, e.g. delta>uniform:4");
  out.error_feedback = error_feedback;
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
  Packet p = start_packet_unscanned(x);
  check_finite(x);
  return p;
}

Packet Codec::start_packet_unscanned(const Tensor& x) const {
  check_type(x);
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

void Codec::check_type(const Tensor& x) const {
  DGP_CHECK(x.defined(), where() << ": encode of an undefined tensor");
  DGP_CHECK(engine::is_floating(x.dtype()), where() << ": expected a floating tensor, got "
                                                    << engine::dtype_name(x.dtype()) << " "
                                                    << engine::shape_str(x.shape()));
}

void Codec::check_input(const Tensor& x) const {
  check_type(x);
  check_finite(x);
}

void Codec::check_finite(const Tensor& x) const {
  if (!x.device().is_cpu()) return;  // CUDA encodes record non-finite inputs in the packet status word
  const detail::HostValues v(x);
  const int64_t n = v.size();
  if (v.all_finite()) return;
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
      c = spec.grouping == Grouping::tensor ? detail::make_uniform_codec(spec)
                                            : detail::make_grouped_uniform_codec(spec);
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
    case CodecId::topk_chain:
      c = detail::make_topk_chain_codec(spec);
      break;
    case CodecId::delta:
      c = detail::make_delta_codec(spec);
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
    case CodecId::uniform:  // params {Q} or, grouped, {Q, grouping, groups}
      return p.header.params.size() >= 3 ? static_cast<int>(p.header.params[2]) : 1;
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
      offset = detail::group_payload_offset(group_count(p));
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

Packet inner_packet(const Codec& codec, const engine::Shape& shape, engine::DType dtype, const Tensor& body,
                    uint64_t offset, const std::string& boundary) {
  Packet p;
  p.boundary = boundary;
  p.header.codec = codec.id();
  p.header.dtype = dtype;
  p.header.shape = shape;
  p.header.params = codec.header_params(shape);
  p.header.body_bytes = codec.body_bytes(shape, dtype);
  DGP_CHECK(offset + p.header.body_bytes <= body.nbytes(),
            codec.spec() << " at boundary '" << boundary << "': an inner packet of " << p.header.body_bytes
                         << " bytes at byte " << offset << " overruns a body of " << body.nbytes()
                         << " bytes");
  p.body = body.slice(0, static_cast<int64_t>(offset), static_cast<int64_t>(offset + p.header.body_bytes));
  return p;
}

void place_inner_body(const Tensor& body, uint64_t offset, const Packet& inner) {
  const uint64_t n = inner.body_bytes();
  if (n == 0) return;
  body.slice(0, static_cast<int64_t>(offset), static_cast<int64_t>(offset + n)).copy_(inner.body);
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

const float* HostValues::floats() const {
  if (dtype_ == engine::DType::f32) return static_cast<const float*>(data_);
  if (converted_.size() != static_cast<size_t>(n_)) {
    converted_.resize(static_cast<size_t>(n_));
    for (int64_t i = 0; i < n_; ++i) converted_[i] = (*this)[i];
  }
  return converted_.data();
}

bool HostValues::all_finite() const {
  if (dtype_ != engine::DType::f32) {
    for (int64_t i = 0; i < n_; ++i)
      if (!std::isfinite((*this)[i])) return false;
    return true;
  }
  // On the bits, without a branch per element (the loop vectorises): exponent all ones = NaN or Inf.
  const char* bytes = static_cast<const char*>(data_);
  uint32_t bad = 0;
  for (int64_t i = 0; i < n_; ++i) {
    uint32_t u;
    std::memcpy(&u, bytes + 4 * i, 4);
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

}  // namespace detail

}  // namespace dgpipe::compress
