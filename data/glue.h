// GLUE tasks from their TSV files, in the official column layouts:
//   RTE   header  index sentence1 sentence2 label       labels entailment=0, not_entailment=1
//   QNLI  header  index question sentence label          labels entailment=0, not_entailment=1
//   MRPC  header  Quality #1 ID #2 ID #1 String #2 String   label = Quality (0/1)
//   SST-2 header  sentence label                         labels 0/1
//   CoLA  no header; source, label, original mark, sentence   labels 0/1
// Test files (no label column: "index sentence..." headers, CoLA's "index sentence") load with label -1.
// Fields are split on tabs only (GLUE files are not quoted). Every row is checked against the header's column
// count, its label against the task's label set, and its bytes for UTF-8; errors name the file and line.
#pragma once
#include <string>
#include <vector>

#include "data/dataset.h"

namespace dgpipe::data {

enum class GlueTask { rte, cola, sst2, mrpc, qnli };

GlueTask parse_glue_task(const std::string& name);  // "RTE", "rte", "SST-2", "sst2", ... throws on unknown
std::string glue_task_name(GlueTask task);  // official folder name: "RTE", "CoLA", "SST-2", "MRPC", "QNLI"
bool glue_task_is_pair(GlueTask task);
std::vector<std::string> glue_labels(GlueTask task);  // label names in id order

class GlueDataset : public TextDataset {
 public:
  GlueDataset(GlueTask task, const std::string& tsv_path);
  // <glue_dir>/<TaskName>/<split>.tsv, split in {train, dev, test}.
  static GlueDataset from_directory(const std::string& glue_dir, GlueTask task, const std::string& split);

  int64_t size() const override { return static_cast<int64_t>(examples_.size()); }
  const TextExample& example(int64_t index) const override;
  const std::vector<std::string>& classes() const override { return classes_; }
  std::string describe(int64_t index) const override;
  GlueTask task() const { return task_; }
  bool has_labels() const { return has_labels_; }

 private:
  GlueTask task_;
  std::string path_;
  std::vector<std::string> classes_;
  std::vector<TextExample> examples_;
  std::vector<int64_t> line_numbers_;
  bool has_labels_ = true;
};

}  // namespace dgpipe::data
