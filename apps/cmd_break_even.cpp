// `dgpipe break-even`: for finished runs (their summary.json), the link speed below which each run's codecs
// beat sending f32 tensors in time per step, and the predicted time per step over given links, with the two
// models of apps/link_cost.h (transfers hidden behind compute, or not at all).
//   dgpipe break-even runs/demo runs/demo-uniform8 --bandwidths 1gbit,100mbit,20mbit [--format json]
// The compute time is the run's training time less its codec time, so the runs should have trained without a
// slow link (the local channel, no --link-bandwidth): a run over a link also counts its waits as compute.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/command.h"
#include "apps/link_cost.h"
#include "engine/error.h"
#include "pipeline/channel.h"

namespace dgpipe::apps {
namespace {

namespace fs = std::filesystem;

nlohmann::json read_json(const fs::path& path) {
  std::ifstream f(path);
  DGP_CHECK(f.good(), "dgpipe break-even: cannot read '" << path.string()
                                                         << "' (is it the --log-dir of a finished run?)");
  try {
    return nlohmann::json::parse(f);
  } catch (const nlohmann::json::parse_error& e) {
    DGP_FAIL("dgpipe break-even: '" << path.string() << "' is not valid JSON: " << e.what());
  }
}

// One run, per optimizer step.
struct RunCost {
  std::string name, codec;
  bool waited_on_link = false;  // trained over a slow link: its compute time includes the waits
  LinkTraffic step;
};

RunCost run_cost(const std::string& dir) {
  nlohmann::json s = read_json(fs::path(dir) / "summary.json");
  nlohmann::json c = fs::exists(fs::path(dir) / "config.json") ? read_json(fs::path(dir) / "config.json")
                                                               : nlohmann::json::object();
  DGP_CHECK(s.contains("codec_seconds") && s.contains("train_seconds"),
            "dgpipe break-even: '" << dir << "/summary.json' predates codec timings (rerun the training)");
  const double steps = std::max(1.0, s.at("steps").get<double>());
  RunCost r;
  r.name = fs::path(dir).filename().string();
  if (r.name.empty()) r.name = fs::path(dir).parent_path().filename().string();
  r.codec = s.value("compress", "?");
  r.waited_on_link =
      !c.value("link_bandwidth", std::string()).empty() || c.value("channel", "local") != "local";
  r.step.wire_bytes = static_cast<uint64_t>(s.at("wire_bytes").get<double>() / steps);
  r.step.raw_bytes = static_cast<uint64_t>(s.at("raw_bytes").get<double>() / steps);
  r.step.codec_seconds = s.at("codec_seconds").get<double>() / steps;
  r.step.compute_seconds = std::max(0.0, s.at("train_seconds").get<double>() / steps - r.step.codec_seconds);
  return r;
}

nlohmann::json as_json(const RunCost& r, const std::vector<std::pair<std::string, double>>& links) {
  nlohmann::json j{
      {"run", r.name},
      {"codec", r.codec},
      {"compute_s_per_step", r.step.compute_seconds},
      {"codec_s_per_step", r.step.codec_seconds},
      {"wire_bytes_per_step", r.step.wire_bytes},
      {"raw_bytes_per_step", r.step.raw_bytes},
      {"waited_on_link", r.waited_on_link},
      {"break_even_bits_per_s",
       {{"overlapped", 8 * overlapped_break_even(r.step)}, {"serial", 8 * serial_break_even(r.step)}}}};
  for (const auto& [text, bytes_per_s] : links)
    j["predicted_s_per_step"][text] = {{"codec",
                                        {{"overlapped", overlapped_seconds(r.step, bytes_per_s, true)},
                                         {"serial", serial_seconds(r.step, bytes_per_s, true)}}},
                                       {"none",
                                        {{"overlapped", overlapped_seconds(r.step, bytes_per_s, false)},
                                         {"serial", serial_seconds(r.step, bytes_per_s, false)}}}};
  return j;
}

std::string range(double lo, double hi) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(2) << lo << ".." << hi;
  return os.str();
}

void print_table(const std::vector<RunCost>& runs, const std::vector<std::pair<std::string, double>>& links) {
  size_t name_w = 5, codec_w = 7;  // the widest run name and codec, plus a space
  for (const RunCost& r : runs) {
    name_w = std::max(name_w, r.name.size() + 2);
    codec_w = std::max(codec_w, r.codec.size() + 2);
  }
  const int nw = static_cast<int>(name_w), cw = static_cast<int>(codec_w);
  std::cout << "per optimizer step: C compute, E encode+decode, W wire bytes, R f32 bytes (codec none)\n"
            << std::left << std::setw(nw) << "run" << std::setw(cw) << "codec" << std::right << std::setw(10)
            << "C s" << std::setw(10) << "E s" << std::setw(10) << "W MB" << std::setw(10) << "R MB"
            << "   break-even (overlapped .. serial)\n";
  for (const RunCost& r : runs)
    std::cout << std::left << std::setw(nw) << r.name << std::setw(cw) << r.codec << std::right << std::fixed
              << std::setprecision(3) << std::setw(10) << r.step.compute_seconds << std::setw(10)
              << r.step.codec_seconds << std::setprecision(2) << std::setw(10) << r.step.wire_bytes / 1e6
              << std::setw(10) << r.step.raw_bytes / 1e6 << "   "
              << human_bandwidth(overlapped_break_even(r.step)) << " .. "
              << human_bandwidth(serial_break_even(r.step))
              << (r.waited_on_link ? "   (trained over a slow link: C includes its waits)" : "") << "\n";
  std::cout << "\npredicted s/step (overlapped..serial), with the run's codecs / with none\n"
            << std::left << std::setw(nw) << "run";
  for (const auto& link : links) std::cout << std::right << std::setw(26) << link.first;
  std::cout << "\n";
  for (const RunCost& r : runs) {
    std::cout << std::left << std::setw(nw) << r.name;
    for (const auto& link : links)
      std::cout << std::right << std::setw(26)
                << range(overlapped_seconds(r.step, link.second, true),
                         serial_seconds(r.step, link.second, true)) +
                       " / " +
                       range(overlapped_seconds(r.step, link.second, false),
                             serial_seconds(r.step, link.second, false));
    std::cout << "\n";
  }
}

int run_break_even(int argc, char** argv) {
  CLI::App app{"The link speed below which each run's codecs beat f32 in time per step (from summary.json)"};
  std::vector<std::string> dirs;
  std::string bandwidths = "1gbit,100mbit,20mbit", format = "table";
  app.add_option("runs", dirs, "log folders of finished runs (dgpipe train --log-dir)")->required();
  app.add_option("--bandwidths", bandwidths, "links to predict the time per step for");
  app.add_option("--format", format, "table | json")->check(CLI::IsMember({"table", "json"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::vector<std::pair<std::string, double>> links;
  std::stringstream ss(bandwidths);
  for (std::string item; std::getline(ss, item, ',');)
    links.push_back({item, pipeline::parse_bandwidth(item)});
  std::vector<RunCost> runs;
  for (const auto& d : dirs) runs.push_back(run_cost(d));
  if (format == "json") {
    nlohmann::json all = nlohmann::json::array();
    for (const RunCost& r : runs) all.push_back(as_json(r, links));
    std::cout << all.dump(2) << "\n";
  } else {
    print_table(runs, links);
  }
  return 0;
}

const Registration reg{"break-even",
                       "the link speed below which a run's codecs beat f32, and its time per step over links",
                       run_break_even};

}  // namespace
}  // namespace dgpipe::apps
