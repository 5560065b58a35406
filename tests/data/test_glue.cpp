#include "data/glue.h"

#include <gtest/gtest.h>

#include <fstream>

#include "data_test_paths.h"
#include "engine/error.h"
#include "support/test_util.h"

using dgpipe::data::GlueDataset;
using dgpipe::data::GlueTask;
using dgpipe::engine::Error;
using namespace dgpipe::testing;

namespace {

std::string write_file(const ScratchDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir / name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

}  // namespace

TEST(Glue, OfficialLayoutsOfEveryTask) {
  ScratchDir dir;
  GlueDataset rte(GlueTask::rte, write_file(dir, "rte.tsv",
                                            "index\tsentence1\tsentence2\tlabel\n"
                                            "0\tA dog runs.\tAn animal moves.\tentailment\n"
                                            "1\tIt rains.\tIt is dry.\tnot_entailment\n"));
  ASSERT_EQ(rte.size(), 2);
  EXPECT_EQ(rte.example(0).text_a, "A dog runs.");
  EXPECT_EQ(*rte.example(0).text_b, "An animal moves.");
  EXPECT_EQ(rte.example(0).label, 0);
  EXPECT_EQ(rte.example(1).label, 1);
  EXPECT_NE(rte.describe(1).find("rte.tsv:3"), std::string::npos);

  GlueDataset cola(GlueTask::cola,
                   write_file(dir, "cola.tsv", "gj04\t1\t\tGood sentence.\ngj04\t0\t*\tBad sentence it.\n"));
  ASSERT_EQ(cola.size(), 2);
  EXPECT_EQ(cola.example(1).text_a, "Bad sentence it.");
  EXPECT_FALSE(cola.example(1).text_b.has_value());
  EXPECT_EQ(cola.example(1).label, 0);

  GlueDataset cola_test(GlueTask::cola, write_file(dir, "cola_test.tsv", "index\tsentence\n0\tWho knows.\n"));
  EXPECT_FALSE(cola_test.has_labels());
  EXPECT_EQ(cola_test.example(0).label, -1);
  EXPECT_EQ(cola_test.example(0).text_a, "Who knows.");

  GlueDataset sst(GlueTask::sst2, write_file(dir, "sst.tsv", "sentence\tlabel\nit 's fine \t1\n"));
  EXPECT_EQ(sst.example(0).text_a, "it 's fine ");  // fields are kept verbatim
  EXPECT_EQ(sst.example(0).label, 1);

  GlueDataset mrpc(GlueTask::mrpc, write_file(dir, "mrpc.tsv",
                                              "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                                              "1\t11\t12\tHe said so.\tSo he said.\n"));
  EXPECT_EQ(mrpc.example(0).text_a, "He said so.");
  EXPECT_EQ(*mrpc.example(0).text_b, "So he said.");
  EXPECT_EQ(mrpc.example(0).label, 1);

  GlueDataset qnli(
      GlueTask::qnli,
      write_file(dir, "qnli.tsv", "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tnot_entailment\n"));
  EXPECT_EQ(qnli.example(0).label, 1);
  GlueDataset rte_test(GlueTask::rte,
                       write_file(dir, "rte_test.tsv", "index\tsentence1\tsentence2\n0\ta\tb\n"));
  EXPECT_EQ(rte_test.example(0).label, -1);

  EXPECT_EQ(dgpipe::data::parse_glue_task("SST-2"), GlueTask::sst2);
  EXPECT_EQ(dgpipe::data::parse_glue_task("cola"), GlueTask::cola);
  EXPECT_THROW(dgpipe::data::parse_glue_task("mnli-x"), Error);
}

TEST(Glue, BadRowsNameTheFileAndLine) {
  ScratchDir dir;
  std::string msg = error_of([&] {
    GlueDataset(GlueTask::rte, write_file(dir, "cols.tsv",
                                          "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n"
                                          "1\tonly three\tentailment\n"));
  });
  EXPECT_NE(msg.find("cols.tsv:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 4 tab-separated columns, found 3"), std::string::npos) << msg;

  msg = error_of(
      [&] { GlueDataset(GlueTask::cola, write_file(dir, "label.tsv", "gj04\t1\t\tOk.\ngj04\t2\t\tNo.\n")); });
  EXPECT_NE(msg.find("label.tsv:2: unknown label '2'"), std::string::npos) << msg;

  msg = error_of([&] {
    GlueDataset(GlueTask::sst2, write_file(dir, "utf8.tsv", "sentence\tlabel\ngood\t1\nbad \xe9t\xe9\t0\n"));
  });
  EXPECT_NE(msg.find("utf8.tsv:3: invalid UTF-8"), std::string::npos) << msg;

  msg = error_of(
      [&] { GlueDataset(GlueTask::rte, write_file(dir, "header.tsv", "idx\tfirst\tsecond\tlabel\n")); });
  EXPECT_NE(msg.find("header.tsv:1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("sentence1"), std::string::npos) << msg;

  msg = error_of([&] { GlueDataset(GlueTask::rte, dir / "missing.tsv"); });
  EXPECT_NE(msg.find("missing.tsv"), std::string::npos) << msg;
  msg = error_of([&] { GlueDataset(GlueTask::rte, write_file(dir, "empty.tsv", "")); });
  EXPECT_NE(msg.find("empty.tsv is empty"), std::string::npos) << msg;
}

TEST(Glue, SharedFilesLoadWithTheirCounts) {
  const std::string glue = shared_data_dir() + "/glue";
  DGP_REQUIRE_FILE(glue + "/RTE/dev.tsv");
  struct Case {
    GlueTask task;
    const char* split;
    int64_t rows;
  };
  for (const Case& c : {Case{GlueTask::rte, "train", 2490}, Case{GlueTask::rte, "dev", 277},
                        Case{GlueTask::rte, "test", 3000}, Case{GlueTask::cola, "train", 8551},
                        Case{GlueTask::cola, "dev", 1043}, Case{GlueTask::sst2, "train", 67349},
                        Case{GlueTask::sst2, "dev", 872}}) {
    const auto ds = GlueDataset::from_directory(glue, c.task, c.split);
    EXPECT_EQ(ds.size(), c.rows) << dgpipe::data::glue_task_name(c.task) << " " << c.split;
    EXPECT_EQ(ds.has_labels(), std::string(c.split) != "test");
  }
  const auto rte = GlueDataset::from_directory(glue, GlueTask::rte, "dev");
  EXPECT_EQ(rte.example(0).label, 1);  // not_entailment
  int64_t positives = 0;
  const auto cola = GlueDataset::from_directory(glue, GlueTask::cola, "dev");
  for (int64_t i = 0; i < cola.size(); ++i) positives += cola.example(i).label;
  EXPECT_EQ(positives, 719);  // acceptable sentences in CoLA dev (counted with awk on the file)
}
