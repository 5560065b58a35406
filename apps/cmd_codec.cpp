// `dgpipe codec`: compares boundary codecs on one tensor — wire bytes, ratio, bits per element, error norms
// (max |e|, mean |e|, relative L2, cosine) and encode/decode times.
// Codecs with per-sample state (delta) are measured in their steady state (see Link).
//   dgpipe codec --synthetic laplace --shape 64,32,32,32
//   dgpipe codec --input act.safetensors --tensor boundary0 --codecs uniform:8,sortquant:6+2 --format csv
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include "apps/command.h"
#include "compress/codec.h"
#include "engine/cuda.h"
#include "engine/io/safetensors.h"
#include "engine/ops.h"

namespace dgpipe::apps {
namespace {

using engine::Tensor;

const char* kDefaultCodecs =
    "none,fp16,bf16,uniform:4,uniform:6,uniform:8,uniform:12,sortquant:3+1,sortquant:4+2,sortquant:6+2,"
    "sortquant:9+3,sortquant:12+4,fastquant:4+2,fastquant:6+2,fastquant:9+3,topk:0.05,topk:0.1,topk:0.25,"
    "power:2,"
    "power:4,power:8,svd:4,svd:8,kmeans:2,kmeans:3,kmeans:4,uniform:4/channel,uniform:8/channel,uniform:8/"
    "row,"
    "topk:0.25>uniform:8,topk:0.5>uniform:8,delta>uniform:2,delta>uniform:4";

Tensor synthetic(const std::string& dist, const engine::Shape& shape, uint64_t seed) {
  engine::Generator gen(seed);
  Tensor z = engine::randn(shape, engine::DType::f32, &gen);
  if (dist == "normal") return z;
  if (dist == "relu") return engine::relu(z);
  if (dist == "uniform") return engine::rand(shape, engine::DType::f32, &gen);
  if (dist == "laplace") {
    // inverse CDF of Laplace(0, 1) on u - 1/2
    std::vector<double> u = engine::rand(shape, engine::DType::f64, &gen).to_vector();
    for (double& v : u) {
      double c = v - 0.5;
      v = -(c < 0 ? -1 : 1) * std::log(std::max(1e-12, 1 - 2 * std::fabs(c)));
    }
    return engine::from_vector(u, shape, engine::DType::f32);
  }
  DGP_FAIL("dgpipe codec: unknown --synthetic distribution '" << dist
                                                              << "' (normal, laplace, relu, uniform)");
}

struct Row {
  std::string spec;
  uint64_t wire = 0;
  double ratio = 0, bits = 0, max_abs = 0, mean_abs = 0, rel_l2 = 0, cosine = 0, enc_ms = 0, dec_ms = 0;
};

// The two ends of a boundary for one codec (one object for both, as a warm-started power codec needs). A
// codec with per-sample state (delta) is measured in its steady state: both ends first exchange the tensor's
// previous version — the same samples (the rows) one epoch earlier, taken to be x plus noise of 5% of x's
// standard deviation — so that x crosses as a change.
struct Link {
  std::shared_ptr<compress::Codec> tx, rx;
  Tensor ids;
  Link(const std::string& spec, const Tensor& x) : tx(compress::make_codec(spec, "dgpipe codec")), rx(tx) {
    if (!tx->needs_sample_ids()) return;
    rx = compress::make_codec(spec, "dgpipe codec");
    ids = engine::arange(0, x.size(0)).to(x.device());
    engine::Generator gen(7);
    const double sd = std::sqrt(engine::var(x.flatten(), {0}).item());
    Tensor previous = engine::add(
        x, engine::mul(engine::randn(x.shape(), engine::DType::f32, &gen).to(x.device()), 0.05 * sd));
    decode(encode(previous));
  }
  bool per_sample() const { return ids.defined(); }
  compress::Packet encode(const Tensor& x) { return tx->encode_samples(x, ids); }
  Tensor decode(const compress::Packet& p) { return rx->decode_samples(p, ids); }
};

// Timed calls go on until there were `repeat` of them and they took `min_ms` in all: the minimum of a few
// sub-millisecond calls is mostly noise on a shared machine (a page fault or a preempted thread in each).
Row measure(const std::string& spec, const Tensor& x, int repeat, double min_ms) {
  auto link = std::make_unique<Link>(spec, x);
  auto sync = [&] {
    if (x.is_cuda()) engine::cuda::device_synchronize(x.device().index);
  };
  compress::Packet p = link->encode(x);  // warm-up (and warm start for power)
  Tensor y = link->decode(p);
  sync();
  // Encode and decode are timed in loops of their own, as a sender and a receiver run them (and as
  // bench/codecs_vs_pytorch.py times the original): alternating them in one loop would time each call with
  // the other's output in the caches. A codec with per-sample state goes back to its steady state before each
  // encode, so it alternates.
  using Clock = std::chrono::steady_clock;
  auto ms_since = [](Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };
  double enc = 1e30, dec = 1e30, spent = 0;
  auto more = [&](int r) { return r < repeat || spent < min_ms; };
  for (int r = 0; more(r); ++r) {
    if (link->per_sample()) link = std::make_unique<Link>(spec, x);  // back to the steady state
    sync();
    auto t0 = Clock::now();
    p = link->encode(x);
    sync();
    const double te = ms_since(t0);
    enc = std::min(enc, te);
    spent += te;
    if (!link->per_sample()) continue;
    t0 = Clock::now();
    y = link->decode(p);
    sync();
    dec = std::min(dec, ms_since(t0));
  }
  spent = 0;
  for (int r = 0; more(r) && !link->per_sample(); ++r) {
    auto t0 = Clock::now();
    y = link->decode(p);
    sync();
    const double td = ms_since(t0);
    dec = std::min(dec, td);
    spent += td;
  }
  p.serialize();  // validates the status word (a CUDA encode's NaN/Inf report)
  std::vector<double> a = x.to_vector(), b = y.to_vector();
  Row row;
  row.spec = spec;
  row.wire = p.wire_bytes();
  const double n = static_cast<double>(a.size());
  row.ratio = row.wire / (4.0 * n);
  row.bits = row.wire * 8.0 / n;
  double se = 0, sx = 0, sy = 0, sxy = 0, sabs = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double e = a[i] - b[i];
    row.max_abs = std::max(row.max_abs, std::fabs(e));
    sabs += std::fabs(e);
    se += e * e;
    sx += a[i] * a[i];
    sy += b[i] * b[i];
    sxy += a[i] * b[i];
  }
  row.mean_abs = sabs / n;
  row.rel_l2 = sx > 0 ? std::sqrt(se / sx) : std::sqrt(se);
  row.cosine = (sx > 0 && sy > 0) ? sxy / std::sqrt(sx * sy) : (se == 0 ? 1.0 : 0.0);
  row.enc_ms = enc;
  row.dec_ms = dec;
  return row;
}

// The options of `dgpipe codec`.
struct CodecArgs {
  std::string input, tensor_name;
  std::string dist = "laplace", shape_text = "64,32,32,32";
  std::string device_text = "cpu", format = "table";
  std::vector<std::string> specs;
  uint64_t seed = 1;
  int repeat = 3;
  double min_time_ms = 0;
};

void add_codec_options(CLI::App& app, CodecArgs& a) {
  app.add_option("--input", a.input, "safetensors file holding the tensor");
  app.add_option("--tensor", a.tensor_name, "tensor name inside --input (default: the first, in name order)");
  app.add_option("--synthetic", a.dist, "distribution when no --input: normal, laplace, relu, uniform")
      ->capture_default_str();
  app.add_option("--shape", a.shape_text, "shape of the synthetic tensor, e.g. 64,32,32,32")
      ->capture_default_str();
  app.add_option("--seed", a.seed, "seed of the synthetic tensor")->capture_default_str();
  app.add_option("--codecs", a.specs, "codec specs, comma separated (default: a sweep of every method)")
      ->delimiter(',');
  app.add_option("--device", a.device_text, "cpu or cuda[:N]")->capture_default_str();
  app.add_option("--repeat", a.repeat, "timed repetitions (the minimum is reported)")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--min-time-ms", a.min_time_ms,
                 "keep timing encode (and decode) until their calls took this many ms in all")
      ->check(CLI::Range(0.0, 3.6e6))
      ->capture_default_str();
  app.add_option("--format", a.format, "table, csv or json")
      ->check(CLI::IsMember({"table", "csv", "json"}))
      ->capture_default_str();
}

// The tensor to compress: from --input, or drawn from --synthetic; on --device. `source` names it.
Tensor codec_input(const CodecArgs& a, std::string& source) {
  Tensor x;
  if (!a.input.empty()) {
    engine::SafetensorsFile f = engine::load_safetensors(a.input);
    DGP_CHECK(!f.tensors.empty(), "dgpipe codec: " << a.input << " holds no tensors");
    std::string name = a.tensor_name.empty() ? f.tensors.begin()->first : a.tensor_name;
    auto it = f.tensors.find(name);
    DGP_CHECK(it != f.tensors.end(), "dgpipe codec: no tensor '" << name << "' in " << a.input);
    x = it->second.to(engine::DType::f32).contiguous();
    source = a.input + ":" + name;
  } else {
    engine::Shape shape;
    std::stringstream ss(a.shape_text);
    std::string d;
    while (std::getline(ss, d, ',')) shape.push_back(std::stoll(d));
    x = synthetic(a.dist, shape, a.seed);
    source = "synthetic " + a.dist;
  }
  x = x.to(engine::Device::parse(a.device_text));
  DGP_CHECK(engine::isfinite_all(x), "dgpipe codec: " << source << " contains NaN/Inf");
  return x;
}

void print_csv(const std::vector<Row>& rows, const std::string& source, const Tensor& x) {
  std::cout << "source,shape,spec,wire_bytes,ratio,bits_per_element,max_abs,mean_abs,rel_l2,cosine,encode_"
               "ms,decode_ms\n";
  for (const auto& r : rows)
    std::cout << source << ",\"" << engine::shape_str(x.shape()) << "\"," << r.spec << "," << r.wire << ","
              << r.ratio << "," << r.bits << "," << r.max_abs << "," << r.mean_abs << "," << r.rel_l2 << ","
              << r.cosine << "," << r.enc_ms << "," << r.dec_ms << "\n";
}

void print_json(const std::vector<Row>& rows) {
  std::cout << "[";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    std::cout << (i ? ",\n " : "") << "{\"spec\":\"" << r.spec << "\",\"wire_bytes\":" << r.wire
              << ",\"ratio\":" << r.ratio << ",\"bits_per_element\":" << r.bits
              << ",\"max_abs\":" << r.max_abs << ",\"mean_abs\":" << r.mean_abs << ",\"rel_l2\":" << r.rel_l2
              << ",\"cosine\":" << r.cosine << ",\"encode_ms\":" << r.enc_ms << ",\"decode_ms\":" << r.dec_ms
              << "}";
  }
  std::cout << "]\n";
}

void print_table(const std::vector<Row>& rows, const std::string& source, const Tensor& x) {
  std::cout << source << " " << engine::shape_str(x.shape()) << " on " << x.device().str() << ", "
            << x.numel() * 4 << " bytes as f32\n";
  // 24 characters: composed specs such as topk:0.5>sortquant:2+6 are long.
  std::cout << std::left << std::setw(24) << "codec" << std::right << std::setw(12) << "wire B"
            << std::setw(8) << "ratio" << std::setw(7) << "bits" << std::setw(11) << "max|e|" << std::setw(11)
            << "mean|e|" << std::setw(10) << "relL2" << std::setw(9) << "cosine" << std::setw(10) << "enc ms"
            << std::setw(10) << "dec ms"
            << "\n";
  for (const auto& r : rows)
    std::cout << std::left << std::setw(24) << r.spec << std::right << std::setw(12) << r.wire << std::fixed
              << std::setprecision(4) << std::setw(8) << r.ratio << std::setprecision(2) << std::setw(7)
              << r.bits << std::scientific << std::setprecision(2) << std::setw(11) << r.max_abs
              << std::setw(11) << r.mean_abs << std::setw(10) << r.rel_l2 << std::fixed
              << std::setprecision(5) << std::setw(9) << r.cosine << std::setprecision(3) << std::setw(10)
              << r.enc_ms << std::setw(10) << r.dec_ms << std::defaultfloat << "\n";
}

int run_codec(int argc, char** argv) {
  CLI::App app{"Compare boundary codecs on a tensor: wire bytes, ratio, error norms, encode/decode time"};
  CodecArgs a;
  add_codec_options(app, a);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (a.specs.empty()) {
    std::stringstream ss(kDefaultCodecs);
    std::string s;
    while (std::getline(ss, s, ',')) a.specs.push_back(s);
  }
  for (const auto& s : a.specs) compress::parse_codec_spec(s);  // fail early on a typo
  std::string source;
  Tensor x = codec_input(a, source);
  std::vector<Row> rows;
  for (const auto& s : a.specs) rows.push_back(measure(s, x, a.repeat, a.min_time_ms));
  if (a.format == "csv")
    print_csv(rows, source, x);
  else if (a.format == "json")
    print_json(rows);
  else
    print_table(rows, source, x);
  return 0;
}

const Registration reg{"codec", "compare boundary codecs on a tensor (wire bytes, error norms, timings)",
                       run_codec};

}  // namespace
}  // namespace dgpipe::apps
