// The model registry: one list of names and aliases, and every alias builds the model it stands for.
#include <gtest/gtest.h>

#include <algorithm>

#include "golden.h"
#include "models/registry.h"

using namespace dgpipe;
using namespace dgpipe::models;
using dgpipe::testing::source_path;

namespace {

// Small sizes, so that building every model stays cheap: width 1/8 for images, the tiny encoders of
// scripts/goldens_models.py for text.
ModelOptions small_options(const std::string& canonical) {
  ModelOptions o;
  o.width_mult = 0.125;
  if (canonical == "roberta") o.hf_config = source_path("tests/data/models/roberta_tiny/config.json");
  if (canonical == "bert") o.hf_config = source_path("tests/data/models/bert_tiny/config.json");
  return o;
}

}  // namespace

TEST(Registry, EveryAliasNamesAKnownModel) {
  const std::vector<std::string> names = model_names();
  for (const std::string& n : names) EXPECT_EQ(canonical_model_name(n), n);
  ASSERT_FALSE(model_aliases().empty());
  for (const auto& [alias, canonical] : model_aliases()) {
    EXPECT_NE(std::find(names.begin(), names.end(), canonical), names.end()) << alias << " -> " << canonical;
    EXPECT_EQ(std::find(names.begin(), names.end(), alias), names.end()) << alias << " is also a name";
    EXPECT_EQ(canonical_model_name(alias), canonical) << alias;
    EXPECT_EQ(is_text_model(alias), is_text_model(canonical)) << alias;
    EXPECT_NE(model_names_help().find(alias), std::string::npos) << model_names_help();
  }
  // The aliases the docs and presets use.
  EXPECT_EQ(canonical_model_name("vgg11_bn"), "vgg11");
  EXPECT_EQ(canonical_model_name("vgg11-bn"), "vgg11");
  EXPECT_EQ(canonical_model_name("roberta-base"), "roberta");
  EXPECT_EQ(canonical_model_name("minilm"), "bert");
  EXPECT_EQ(canonical_model_name("all-minilm-l6-v2"), "bert");
  EXPECT_EQ(canonical_model_name("alexnet"), "");
  EXPECT_FALSE(is_text_model("alexnet"));
  EXPECT_TRUE(is_text_model("roberta"));
  EXPECT_TRUE(is_text_model("minilm"));
  EXPECT_FALSE(is_text_model("vgg11_bn"));
}

TEST(Registry, AnAliasBuildsTheSameModelAsItsName) {
  for (const auto& [alias, canonical] : model_aliases()) {
    SCOPED_TRACE(alias);
    ModelPtr a = build_model(alias, small_options(canonical));
    ModelPtr b = build_model(canonical, small_options(canonical));
    EXPECT_EQ(a->name(), b->name());
    EXPECT_EQ(a->num_blocks(), b->num_blocks());
    EXPECT_EQ(a->num_parameters(), b->num_parameters());
    auto sa = a->state_dict(), sb = b->state_dict();
    ASSERT_EQ(sa.size(), sb.size());
    for (auto ia = sa.begin(), ib = sb.begin(); ia != sa.end(); ++ia, ++ib) {
      EXPECT_EQ(ia->first, ib->first);
      EXPECT_EQ(ia->second.to_vector(), ib->second.to_vector()) << ia->first;  // same seed, same weights
    }
  }
  try {
    build_model("alexnet");
    FAIL() << "expected an error";
  } catch (const engine::Error& e) {
    EXPECT_NE(std::string(e.what()).find("vgg11_bn"), std::string::npos) << e.what();  // lists the aliases
  }
}
