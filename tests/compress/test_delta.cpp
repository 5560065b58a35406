// delta[:F]>C: first sends exact, changes quantized, both ends' references in step over many epochs (the
// error of a send never accumulates), mixed batches, evaluation without ids, out-of-step stores named, memory
// and wire bytes exact, CUDA parity.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "compress/codec.h"
#include "distributions.h"
#include "engine/ops.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe::compress;
using namespace dgpipe::testing;
using dgpipe::engine::Shape;
using dgpipe::engine::Tensor;

namespace {

Tensor ids_of(std::vector<int64_t> ids) {
  return dgpipe::engine::from_vector(ids, {static_cast<int64_t>(ids.size())});
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector(), y = b.to_vector();
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::fabs(x[i] - y[i]));
  return worst;
}

// The activations of 12 samples (rows of [12, 4, 5]) in epoch e: a slow random walk, as a model that changes
// a little between epochs gives.
Tensor epoch_activations(int epoch) {
  Tensor x = make_input(Dist::laplace, 100, {12, 4, 5});
  for (int e = 1; e <= epoch; ++e)
    x = dgpipe::engine::add(x, dgpipe::engine::mul(make_input(Dist::normal, 100 + e, {12, 4, 5}), 0.02));
  return x;
}

}  // namespace

TEST(Delta, FirstSendIsExactThenOnlyTheChangeIsQuantized) {
  auto sender = make_codec("delta>uniform:4", "stage0->1 fwd");
  auto receiver = make_codec("delta>uniform:4", "stage0->1 fwd");
  EXPECT_TRUE(sender->needs_sample_ids());
  const Tensor ids = ids_of({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  const Tensor x0 = epoch_activations(0), x1 = epoch_activations(1);
  Packet first = sender->encode_samples(x0, ids);
  EXPECT_EQ(first.header.params, std::vector<int64_t>{12});
  EXPECT_EQ(receiver->decode_samples(first, ids).to_vector(), x0.to_vector());
  Packet second = sender->encode_samples(x1, ids);
  EXPECT_EQ(second.header.params, std::vector<int64_t>{0});
  const double err = max_abs_diff(receiver->decode_samples(second, ids), x1);
  // The change spans about +-0.1: 4 bits put the error near 0.1/15; quantizing x1 itself (range ~10) with 4
  // bits would cost about 0.3.
  auto direct = make_codec("uniform:4");
  EXPECT_LT(err, 0.01);
  EXPECT_GT(max_abs_diff(direct->decode(direct->encode(x1)), x1), 10 * err);
  // Steady state: header, prelude + bitmap padded to 16, and uniform:4's body for the 240 elements.
  EXPECT_EQ(second.wire_bytes(),
            second.header_bytes() + 16 + make_codec("uniform:4")->body_bytes({12, 4, 5}));
  EXPECT_EQ(second.serialize().size(), second.wire_bytes());
}

TEST(Delta, TheTwoEndsStayInStepSoErrorsDoNotAccumulate) {
  // Ten epochs of 2-bit changes, micro-batches of 4 samples in a new order every epoch. If the sender's
  // reference were not exactly the receiver's (e.g. the exact activation instead of what was decoded), the
  // receiver's error would grow like a random walk.
  auto sender = make_codec("delta>uniform:2");
  auto receiver = make_codec("delta>uniform:2");
  std::vector<int64_t> order(12);
  std::iota(order.begin(), order.end(), 0);
  double worst = 0;
  for (int epoch = 0; epoch < 10; ++epoch) {
    std::rotate(order.begin(), order.begin() + 5, order.end());
    const Tensor x = epoch_activations(epoch);
    for (int mb = 0; mb < 3; ++mb) {
      std::vector<int64_t> rows(order.begin() + 4 * mb, order.begin() + 4 * mb + 4);
      const Tensor xs = dgpipe::engine::index_select(x, 0, ids_of(rows));
      Packet p = Packet::deserialize(sender->encode_samples(xs, ids_of(rows)).serialize());
      const Tensor got = receiver->decode_samples(p, ids_of(rows));
      if (epoch == 0) {
        EXPECT_EQ(got.to_vector(), xs.to_vector());
      } else {
        worst = std::max(worst, max_abs_diff(got, xs));
      }
    }
  }
  // A change spans about 6 sigma = 0.12 plus the previous send's error; 2 bits cut it into 3 steps, so each
  // send is off by at most half a step, about 0.03, in every epoch.
  EXPECT_LE(worst, 0.04);
  EXPECT_EQ(sender->state_bytes(), receiver->state_bytes());
}

TEST(Delta, MixedBatchesKeepTheirRowOrder) {
  auto sender = make_codec("delta>uniform:8");
  auto receiver = make_codec("delta>uniform:8");
  const Tensor a = make_input(Dist::normal, 1, {3, 10}), b = make_input(Dist::normal, 2, {3, 10});
  receiver->decode_samples(sender->encode_samples(a, ids_of({5, 6, 7})), ids_of({5, 6, 7}));
  // Rows 0 and 2 are new (samples 1 and 2), row 1 (sample 6) is a change.
  Packet p = sender->encode_samples(b, ids_of({1, 6, 2}));
  EXPECT_EQ(p.header.params, std::vector<int64_t>{2});
  const std::vector<double> got = receiver->decode_samples(p, ids_of({1, 6, 2})).to_vector(),
                            want = b.to_vector();
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(got[i], want[i]);            // fresh rows: exact
    EXPECT_EQ(got[20 + i], want[20 + i]);  // fresh
    EXPECT_NEAR(got[10 + i], want[10 + i], 0.05);
  }
  // A sample whose row changed size (a text batch padded to another length) is sent fresh again.
  Packet q = sender->encode_samples(make_input(Dist::normal, 3, {1, 12}), ids_of({6}));
  EXPECT_EQ(q.header.params, std::vector<int64_t>{1});
}

TEST(Delta, WithoutSampleIdsEveryRowIsFreshAndNothingIsKept) {
  auto sender = make_codec("delta:fp16>uniform:4");
  auto receiver = make_codec("delta:fp16>uniform:4");
  const Tensor x = make_input(Dist::normal, 4, {6, 7});
  Packet p = sender->encode(x);
  EXPECT_EQ(p.header.params, std::vector<int64_t>{6});
  EXPECT_EQ(p.wire_bytes(), sender->wire_bytes(x.shape()));
  EXPECT_LE(max_abs_diff(receiver->decode(p), x), 4e-3);  // fp16
  EXPECT_EQ(sender->state_bytes(), 0u);
  EXPECT_EQ(receiver->state_bytes(), 0u);
  // A packet of changes cannot be decoded without knowing whose changes they are.
  sender->encode_samples(x, ids_of({0, 1, 2, 3, 4, 5}));
  Packet changes = sender->encode_samples(x, ids_of({0, 1, 2, 3, 4, 5}));
  EXPECT_TRUE(contains(error_of([&] { receiver->decode(changes); }), "needs the sample ids"));
}

TEST(Delta, StoresOutOfStepAreNamed) {
  auto sender = make_codec("delta>uniform:4", "stage1->2 fwd");
  auto receiver = make_codec("delta>uniform:4", "stage1->2 fwd");
  const Tensor x = make_input(Dist::normal, 4, {2, 5});
  sender->encode_samples(x, ids_of({40, 41}));  // the receiver never saw this packet
  Packet p = sender->encode_samples(x, ids_of({40, 41}));
  const std::string msg = error_of([&] { receiver->decode_samples(p, ids_of({40, 41})); });
  EXPECT_TRUE(contains(msg, "sample 40")) << msg;
  EXPECT_TRUE(contains(msg, "out of step")) << msg;
  EXPECT_TRUE(contains(msg, "stage1->2 fwd")) << msg;
  EXPECT_TRUE(contains(error_of([&] {
                         sender->encode_samples(x, ids_of({1, 2, 3}));
                       }),
                       "expected 2 integer sample ids"));
}

TEST(Delta, MemoryIsOneF32RowPerSample) {
  auto codec = make_codec("delta>uniform:4");
  codec->encode_samples(make_input(Dist::normal, 1, {4, 3, 5}), ids_of({0, 1, 2, 3}));
  EXPECT_EQ(codec->state_bytes(), 4u * 15u * 4u);
  codec->encode_samples(make_input(Dist::normal, 2, {2, 3, 5}), ids_of({3, 9}));  // one new sample
  EXPECT_EQ(codec->state_bytes(), 5u * 15u * 4u);
}

// The CUDA path (engine ops for the gather and the arithmetic, uniform's kernels for the parts) sends the
// CPU's packets byte for byte and keeps the same references.
TEST(Delta, CudaEqualsCpuPacketForPacket) {
  DGP_SKIP_WITHOUT_CUDA();
  using dgpipe::engine::Device;
  for (const std::string spec : {"delta>uniform:4", "delta:fp16>topk:0.5>uniform:8", "delta>uniform:6/row"}) {
    auto cpu = make_codec(spec), gpu = make_codec(spec), cpu_rx = make_codec(spec), gpu_rx = make_codec(spec);
    for (int epoch = 0; epoch < 3; ++epoch) {
      const Tensor x = epoch_activations(epoch);
      const Tensor ids = ids_of({3, 1, 4, 0, 5, 9, 2, 6, 8, 7, 11, 10});
      Packet a = cpu->encode_samples(x, ids);
      Packet b = gpu->encode_samples(x.to(Device::cuda()), ids.to(Device::cuda()));
      EXPECT_EQ(a.serialize(), b.serialize()) << spec << " epoch " << epoch;
      EXPECT_EQ(cpu_rx->decode_samples(a, ids).to_vector(),
                gpu_rx->decode_samples(b, ids.to(Device::cuda())).to(Device::cpu()).to_vector())
          << spec << " epoch " << epoch;
    }
  }
}
