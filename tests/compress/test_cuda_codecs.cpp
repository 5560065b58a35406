// Every CUDA launcher of the codecs against its CPU reference, as a table of twin cases (tests/support/
// cuda_twin.h): a case encodes and decodes on one device, and the decoded tensors of the two devices are
// compared. The packet-level parity (byte for byte, ties, many shapes and distributions) is in each codec's
// own test file; this table is what makes every launcher declared in compress/*_kernels.h have a case, which
// the coverage check below enforces. Without a device the CPU half of every case still runs.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "compress/codec.h"
#include "distributions.h"
#include "support/cuda_twin.h"
#include "support/gradcheck.h"

using namespace dgpipe::testing;
using dgpipe::compress::make_codec;
using dgpipe::engine::Device;
using dgpipe::engine::DType;
using dgpipe::engine::Tensor;

namespace {

// decode(encode(x)) with one codec: `steps` calls share it, so a warm-started codec (power) carries its state
// from call to call on the device under test.
CudaTwinCase round_trip(const std::string& spec, std::vector<std::string> launchers, Tensor x, double tol,
                        Metric metric = {}, int steps = 1) {
  CudaTwinCase c;
  c.name = spec;
  c.launchers = std::move(launchers);
  c.inputs = {std::move(x)};
  c.tol = tol;
  c.metric = std::move(metric);
  c.steps = steps;
  c.backward = false;
  c.prepare = [spec](const Inputs& v, Device) -> Step {
    std::shared_ptr<dgpipe::compress::Codec> codec = make_codec(spec);
    Tensor input = v[0];
    return [codec, input] { return codec->decode(codec->encode(input)); };
  };
  return c;
}

// delta: three sends of x, x + 0.01 d, x + 0.02 d for the same samples (one fresh, then two changes) through
// a sender and a receiver on the device under test; compared: the receiver's last decode.
CudaTwinCase delta_round_trip(const std::string& spec, std::vector<std::string> launchers, Tensor x) {
  CudaTwinCase c = round_trip(spec, std::move(launchers), std::move(x), 0.0);
  c.inputs.push_back(make_input(Dist::normal, 6, c.inputs[0].shape()));
  c.prepare = [spec](const Inputs& v, Device device) -> Step {
    std::shared_ptr<dgpipe::compress::Codec> sender = make_codec(spec), receiver = make_codec(spec);
    const Tensor ids = dgpipe::engine::arange(0, v[0].size(0)).to(device);
    Tensor x = v[0], drift = dgpipe::engine::mul(v[1], 0.01);
    return [sender, receiver, ids, x, drift]() mutable {
      Tensor out = receiver->decode_samples(sender->encode_samples(x, ids), ids);
      x = dgpipe::engine::add(x, drift);
      return out;
    };
  };
  c.steps = 3;
  return c;
}

// The same round trip on a half-precision input (the CUDA kernels read f16/bf16 directly): x is first rounded
// to `half`, so the oracle's f32 input holds exactly the values the device reads, and both sides decode to
// f32 (decode_as), so the comparison is of the codec, not of a final rounding.
CudaTwinCase half_round_trip(const std::string& spec, std::vector<std::string> launchers, const Tensor& x,
                             DType half, double tol, Metric metric = {}) {
  CudaTwinCase c = round_trip(spec, std::move(launchers), x.to(half).to(DType::f32), tol, std::move(metric));
  c.name = spec + " " + dgpipe::engine::dtype_name(half);
  c.dtype = half;
  c.prepare = [spec](const Inputs& v, Device) -> Step {
    std::shared_ptr<dgpipe::compress::Codec> codec = make_codec(spec);
    Tensor input = v[0];
    return [codec, input] { return codec->decode_as(codec->encode(input), DType::f32); };
  };
  return c;
}

// The tolerances are those of the codecs' own parity tests: the quantizers and top-k send the CPU's packet
// byte for byte and decode with the same arithmetic (exact); k-means decodes exactly on inputs whose elements
// are far from every midpoint; power and svd agree to float rounding (1e-4 relative, Frobenius, on a known
// spectrum).
const std::vector<CudaTwinCase>& codec_cases() {
  static const std::vector<CudaTwinCase> cases = [] {
    const Tensor x = make_input(Dist::normal, 5, {4, 8, 6, 5});
    std::vector<double> sigma;
    for (int i = 0; i < 24; ++i) sigma.push_back(std::pow(0.7, i) * 10);
    const Tensor spectrum = known_spectrum(3, 40, 60, sigma, 100);
    const Metric frobenius = [](const Tensor& cuda, const Tensor& cpu) { return relative_diff(cuda, cpu); };
    std::vector<CudaTwinCase> t = {
        round_trip("uniform:8", {"uniform_encode", "group_decode"}, x, 0.0),
        round_trip("sortquant:6+2", {"sortquant_encode", "group_decode"}, x, 0.0),
        round_trip("fastquant:6+2", {"fastquant_encode", "group_decode"}, x, 0.0),
        round_trip("topk:0.1", {"topk_encode", "topk_decode"}, x, 0.0),
        round_trip("kmeans:3", {"kmeans_encode", "kmeans_decode"}, make_input(Dist::tiny), 0.0),
        round_trip("kmeans:4/50", {"kmeans_encode", "kmeans_decode"}, make_input(Dist::all_equal), 0.0),
        // Three calls: the third starts from the warm state the first two left on the device.
        round_trip("power:4", {"power_init_state", "power_encode", "lowrank_decode"}, spectrum, 1e-4,
                   frobenius, 3),
        round_trip("svd:4", {"svd_encode", "lowrank_decode"}, spectrum, 1e-4, frobenius),
        round_trip("uniform:8/channel", {"grouped_uniform_encode", "grouped_uniform_decode"}, x, 0.0),
        round_trip("uniform:4/row", {"grouped_uniform_encode", "grouped_uniform_decode"}, x, 0.0),
        // Composed codecs run the kernels of their parts.
        round_trip("topk:0.5>uniform:8", {"topk_encode", "uniform_encode", "group_decode", "topk_decode"}, x,
                   0.0),
        delta_round_trip("delta>uniform:4", {"uniform_encode", "group_decode"}, x),
    };
    for (DType half : {DType::f16, DType::bf16}) {
      t.push_back(half_round_trip("uniform:8", {"uniform_encode", "group_decode"}, x, half, 0.0));
      t.push_back(half_round_trip("sortquant:6+2", {"sortquant_encode", "group_decode"}, x, half, 0.0));
      t.push_back(half_round_trip("fastquant:6+2", {"fastquant_encode", "group_decode"}, x, half, 0.0));
      t.push_back(half_round_trip("topk:0.1", {"topk_encode", "topk_decode"}, x, half, 0.0));
      t.push_back(half_round_trip("kmeans:4/50", {"kmeans_encode", "kmeans_decode"},
                                  make_input(Dist::all_equal), half, 0.0));
      t.push_back(
          half_round_trip("svd:4", {"svd_encode", "lowrank_decode"}, spectrum, half, 1e-4, frobenius));
    }
    return t;
  }();
  return cases;
}

std::string test_name(const ::testing::TestParamInfo<size_t>& info) {
  return test_identifier(codec_cases()[info.param].name);
}

}  // namespace

class CudaCodecTwin : public ::testing::TestWithParam<size_t> {};

TEST_P(CudaCodecTwin, DecodesLikeTheCpuReference) {
  const CudaTwinCase& c = codec_cases()[GetParam()];
  const TwinRun cpu = run_case(c, Device::cpu());
  ASSERT_EQ(cpu.out.shape(), c.inputs[0].shape()) << c.name;
  if (!have_cuda()) GTEST_SKIP() << no_cuda_reason() << ": the CPU half ran, the CUDA half is skipped";
  const TwinRun cuda = run_case(c, Device::cuda(0));
  for (const std::string& problem : compare_twins(c, cpu, cuda)) ADD_FAILURE() << c.name << ": " << problem;
}

INSTANTIATE_TEST_SUITE_P(Table, CudaCodecTwin, ::testing::Range<size_t>(0, codec_cases().size()), test_name);

TEST(CudaCodecCases, EveryCodecLauncherHasACase) {
  const std::set<std::string> declared = declared_launchers("compress");
  const LauncherCoverage cov = launcher_coverage(declared, codec_cases());
  std::string without, unknown;
  for (const std::string& n : cov.without_case) without += " " + n;
  for (const std::string& n : cov.unknown) unknown += " " + n;
  EXPECT_TRUE(cov.without_case.empty()) << "CUDA launchers with no case in this file:" << without;
  EXPECT_TRUE(cov.unknown.empty()) << "cases name launchers that no compress/*_kernels.h declares:"
                                   << unknown;
  EXPECT_GE(declared.size(), 12u) << "the header scan found too few launchers";
}
