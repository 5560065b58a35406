#include "data/glue.h"

#include <algorithm>
#include <cctype>

#include "data/text_file.h"
#include "engine/error.h"

namespace dgpipe::data {
namespace {

std::string normalized_name(const std::string& name) {
  std::string out;
  for (char c : name) {
    if (std::isalnum(static_cast<unsigned char>(c))) out.push_back(static_cast<char>(std::tolower(c)));
  }
  return out;
}

// Column names of one task's files: text_a, optional text_b, label.
struct Layout {
  std::string text_a, text_b, label;
};

Layout layout_of(GlueTask task) {
  switch (task) {
    case GlueTask::rte:
      return {"sentence1", "sentence2", "label"};
    case GlueTask::qnli:
      return {"question", "sentence", "label"};
    case GlueTask::mrpc:
      return {"#1 String", "#2 String", "Quality"};
    case GlueTask::sst2:
      return {"sentence", "", "label"};
    case GlueTask::cola:
      return {"sentence", "", "label"};
  }
  return {};
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
  return out;
}

}  // namespace

GlueTask parse_glue_task(const std::string& name) {
  const std::string n = normalized_name(name);
  if (n == "rte") return GlueTask::rte;
  if (n == "cola") return GlueTask::cola;
  if (n == "sst2") return GlueTask::sst2;
  if (n == "mrpc") return GlueTask::mrpc;
  if (n == "qnli") return GlueTask::qnli;
  DGP_FAIL("glue: unknown task '" << name << "' (expected RTE, CoLA, SST-2, MRPC or QNLI)");
}

std::string glue_task_name(GlueTask task) {
  switch (task) {
    case GlueTask::rte:
      return "RTE";
    case GlueTask::cola:
      return "CoLA";
    case GlueTask::sst2:
      return "SST-2";
    case GlueTask::mrpc:
      return "MRPC";
    case GlueTask::qnli:
      return "QNLI";
  }
  return "?";
}

bool glue_task_is_pair(GlueTask task) {
  return !layout_of(task).text_b.empty();
}

std::vector<std::string> glue_labels(GlueTask task) {
  if (task == GlueTask::rte || task == GlueTask::qnli) return {"entailment", "not_entailment"};
  return {"0", "1"};
}

GlueDataset::GlueDataset(GlueTask task, const std::string& tsv_path)
    : task_(task), path_(tsv_path), classes_(glue_labels(task)) {
  const std::string who = "glue " + glue_task_name(task);
  const std::vector<std::string> lines = read_utf8_lines(tsv_path, who);
  DGP_CHECK(!lines.empty(), who << ": " << tsv_path << " is empty");
  const Layout layout = layout_of(task);

  int col_a = -1, col_b = -1, col_label = -1;
  size_t columns = 0, first_row = 0;
  const std::vector<std::string> first = split_fields(lines[0], '\t');
  const bool headerless_cola = task == GlueTask::cola && !(first.size() >= 1 && first[0] == "index");
  if (headerless_cola) {
    // CoLA's train/dev files: source, label, original acceptability mark, sentence; no header line.
    columns = 4, col_label = 1, col_a = 3;
  } else {
    columns = first.size();
    first_row = 1;
    auto find = [&](const std::string& column) {
      auto it = std::find(first.begin(), first.end(), column);
      return it == first.end() ? -1 : static_cast<int>(it - first.begin());
    };
    col_a = find(layout.text_a);
    col_b = layout.text_b.empty() ? -1 : find(layout.text_b);
    col_label = find(layout.label);
    DGP_CHECK(col_a >= 0 && (layout.text_b.empty() || col_b >= 0),
              who << ": " << tsv_path << ":1: header [" << join(first) << "] lacks the column '"
                  << (col_a < 0 ? layout.text_a : layout.text_b) << "' of the official "
                  << glue_task_name(task) << " layout");
  }
  has_labels_ = col_label >= 0;

  for (size_t ln = first_row; ln < lines.size(); ++ln) {
    if (ln + 1 == lines.size() && lines[ln].empty()) continue;
    const std::vector<std::string> fields = split_fields(lines[ln], '\t');
    DGP_CHECK(fields.size() == columns, who << ": " << tsv_path << ":" << ln + 1 << ": expected " << columns
                                            << " tab-separated columns, found " << fields.size());
    TextExample ex;
    ex.text_a = fields[col_a];
    if (col_b >= 0) ex.text_b = fields[col_b];
    if (has_labels_) {
      const std::string& label = fields[col_label];
      auto it = std::find(classes_.begin(), classes_.end(), label);
      DGP_CHECK(it != classes_.end(), who << ": " << tsv_path << ":" << ln + 1 << ": unknown label '" << label
                                          << "' (expected one of " << join(classes_) << ")");
      ex.label = it - classes_.begin();
    }
    examples_.push_back(std::move(ex));
    line_numbers_.push_back(static_cast<int64_t>(ln + 1));
  }
}

GlueDataset GlueDataset::from_directory(const std::string& glue_dir, GlueTask task,
                                        const std::string& split) {
  DGP_CHECK(split == "train" || split == "dev" || split == "test",
            "glue: unknown split '" << split << "' (expected train, dev or test)");
  return GlueDataset(task, glue_dir + "/" + glue_task_name(task) + "/" + split + ".tsv");
}

const TextExample& GlueDataset::example(int64_t index) const {
  DGP_CHECK(index >= 0 && index < size(), "glue: index " << index << " outside 0.." << size() - 1);
  return examples_[static_cast<size_t>(index)];
}

std::string GlueDataset::describe(int64_t index) const {
  DGP_CHECK(index >= 0 && index < size(), "glue: index " << index << " outside 0.." << size() - 1);
  return path_ + ":" + std::to_string(line_numbers_[static_cast<size_t>(index)]);
}

}  // namespace dgpipe::data
