// Model-level pieces shared by every network: learned bottlenecks inserted at pipeline boundaries (names,
// sizes taken from the boundary tensor, errors naming the boundary) and the probe of a block range's output
// shape.
#include <gtest/gtest.h>

#include "models/registry.h"
#include "support/test_util.h"

using namespace dgpipe;
using dgpipe::testing::contains;
using dgpipe::testing::error_of;
using engine::Shape;

namespace {
models::ModelPtr small_mobilenet() {
  models::ModelOptions o;
  o.width_mult = 0.25;
  return models::build_model("mobilenetv2", o);
}
}  // namespace

TEST(Model, BlockOutputShapeProbesTheCut) {
  models::ModelPtr m = small_mobilenet();
  EXPECT_EQ(m->block_output_shape(0, {2, 3, 32, 32}), (Shape{2, 3, 32, 32}));
  EXPECT_EQ(m->block_output_shape(m->num_blocks(), {2, 3, 32, 32}), (Shape{2, 10}));
  EXPECT_EQ(m->block_output_shape(1), (Shape{1, 8, 32, 32}));  // the example input: one CIFAR image
  EXPECT_TRUE(m->is_training());                               // the probe leaves the mode as it was
}

TEST(Model, BottlenecksAreNamedByTheirBoundaryAndSizedFromIt) {
  models::ModelPtr m = small_mobilenet();
  const Shape first = m->block_output_shape(1);  // after features.0: [1, C, 32, 32]
  auto inserted = models::insert_bottlenecks(*m, "conv:4/2;none", {1, 18, 1}, 3);
  ASSERT_EQ(inserted.size(), 2u);
  ASSERT_TRUE(inserted[0] != nullptr);
  EXPECT_TRUE(inserted[1] == nullptr);
  EXPECT_EQ(inserted[0]->features, first[1]);
  EXPECT_EQ(inserted[0]->narrow_shape(first), (Shape{1, 4, 16, 16}));
  ASSERT_EQ(m->bottlenecks().size(), 1u);
  EXPECT_EQ(m->bottlenecks()[0].after, 0u);
  std::vector<std::string> names;
  for (auto& [name, t] : m->state_dict())
    if (name.rfind("bottleneck.", 0) == 0) names.push_back(name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"bottleneck.0.encoder.weight", "bottleneck.0.encoder.bias",
                                      "bottleneck.0.decoder.0.weight", "bottleneck.0.decoder.0.bias"}));
}

TEST(Model, BottlenecksThatDoNotFitNameTheBoundary) {
  models::ModelPtr m = small_mobilenet();
  std::string msg = error_of([&] { models::insert_bottlenecks(*m, "conv:4/3", {1, 18, 1}, 0); });
  EXPECT_TRUE(contains(msg, "boundary 0")) << msg;
  EXPECT_TRUE(contains(msg, "not divisible by the stride 3")) << msg;
  msg = error_of([&] { models::insert_bottlenecks(*m, "conv:4;conv:4;conv:4", {1, 18, 1}, 0); });
  EXPECT_TRUE(contains(msg, "3 specs for 2 boundaries")) << msg;
}
