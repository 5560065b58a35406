// Checks that several codec tests make the same way: a codec's codes against the original system's, a
// codec's CUDA packets against its CPU packets, and its CPU packets at several op thread counts.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "compress/codec.h"
#include "engine/parallel.h"
#include "support/golden_json.h"

namespace dgpipe::testing {

// Encodes every input of tests/data/codecs/goldens.json (scripts/goldens_codecs.py) with the cases of
// `method`, the codec built from each case by `spec_of`, and expects the original's codes and group
// statistics. Returns how many cases it checked.
inline int check_original_golden_codes(const std::string& method,
                                       const std::function<std::string(const nlohmann::json&)>& spec_of) {
  nlohmann::json g = load_golden_json("codecs/goldens.json");
  if (g.is_null()) {
    ADD_FAILURE() << "tests/data/codecs/goldens.json missing: run scripts/goldens_codecs.py";
    return 0;
  }
  int checked = 0;
  for (const auto& c : g["cases"]) {
    if (c["method"] != method) continue;
    std::vector<float> x = g["inputs"][c["input"].get<std::string>()].get<std::vector<float>>();
    const std::string spec = spec_of(c);
    auto codec = compress::make_codec(spec);
    compress::Packet p = codec->encode(engine::from_vector(x, {static_cast<int64_t>(x.size())}));
    std::vector<uint32_t> got = compress::read_codes(p);
    std::vector<int64_t> want = c["codes"].get<std::vector<int64_t>>();
    EXPECT_EQ(got.size(), want.size()) << c["input"] << " " << spec;
    if (got.size() != want.size()) continue;
    int mismatches = 0;
    for (size_t i = 0; i < got.size(); ++i) mismatches += static_cast<int64_t>(got[i]) != want[i];
    EXPECT_EQ(mismatches, 0) << c["input"] << " " << spec;
    std::vector<compress::GroupStat> st = compress::read_group_stats(p);
    EXPECT_EQ(st.size(), c["stats"].size()) << c["input"] << " " << spec;
    for (size_t k = 0; k < st.size() && k < c["stats"].size(); ++k) {
      EXPECT_EQ(st[k].lo, c["stats"][k][0].get<float>()) << spec << " group " << k;
      EXPECT_EQ(st[k].step, c["stats"][k][1].get<float>()) << spec << " group " << k;
    }
    ++checked;
  }
  return checked;
}

// Encodes `x` on the CPU and on cuda: the packets must be equal byte for byte, and so must their decodes.
// Returns the CUDA packet.
inline compress::Packet expect_cuda_packet_equals_cpu(compress::Codec& codec, const engine::Tensor& x,
                                                      const std::string& what) {
  compress::Packet cpu = codec.encode(x);
  compress::Packet gpu = codec.encode(x.to(engine::Device::cuda()));
  EXPECT_EQ(cpu.serialize(), gpu.serialize()) << what << " " << codec.spec();
  EXPECT_EQ(codec.decode(cpu).to_vector(), codec.decode(gpu).to(engine::Device::cpu()).to_vector())
      << what << " " << codec.spec();
  return gpu;
}

// Encodes x with a fresh codec of `spec` at 1, 2 and 3 op threads (engine/parallel.h), `calls` times each
// (the last packet counts: a warm-started codec's later calls start from its state), and expects the same
// packet bytes and decoded values at every thread count. Restores the thread count.
inline void expect_same_at_any_thread_count(const std::string& spec, const engine::Tensor& x, int calls = 1) {
  const int restore = engine::cpu_threads();
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<std::vector<double>> decoded;
  for (int threads : {1, 2, 3}) {
    engine::set_cpu_threads(threads);
    auto codec = compress::make_codec(spec);
    compress::Packet p;
    for (int call = 0; call < calls; ++call) p = codec->encode(x);
    bytes.push_back(p.serialize());
    decoded.push_back(codec->decode(p).to_vector());
  }
  engine::set_cpu_threads(restore);
  for (size_t k = 1; k < bytes.size(); ++k) {
    EXPECT_EQ(bytes[k], bytes[0]) << spec << " at " << k + 1 << " threads";
    EXPECT_EQ(decoded[k], decoded[0]) << spec << " at " << k + 1 << " threads";
  }
}

}  // namespace dgpipe::testing
