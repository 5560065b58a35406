#include "pipeline/channel.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "engine/error.h"

namespace dgpipe::pipeline {

const char* msg_kind_name(MsgKind k) {
  switch (k) {
    case MsgKind::activation:
      return "activation";
    case MsgKind::gradient:
      return "gradient";
    case MsgKind::control:
      return "control";
  }
  return "?";
}

namespace {
// Splits "2.5GB" into 2.5 and "gb" (lower-cased unit).
std::pair<double, std::string> split_number_unit(const std::string& text, const char* what) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  DGP_CHECK(i > 0, what << ": cannot parse '" << text << "' (expected a number with a unit, e.g. 1gbit)");
  double v = std::strtod(text.substr(0, i).c_str(), nullptr);
  std::string unit = text.substr(i);
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (unit.size() > 2 && unit.substr(unit.size() - 2) == "/s") unit = unit.substr(0, unit.size() - 2);
  if (unit.size() > 3 && unit.substr(unit.size() - 3) == "bps")
    unit = unit.substr(0, unit.size() - 3) + "bit";
  return {v, unit};
}
}  // namespace

double parse_bandwidth(const std::string& text) {
  auto [v, unit] = split_number_unit(text, "link bandwidth");
  static const std::map<std::string, double> units = {
      {"bit", 1.0 / 8}, {"kbit", 1e3 / 8},  {"mbit", 1e6 / 8},    {"gbit", 1e9 / 8},
      {"b", 1},         {"kb", 1e3},        {"mb", 1e6},          {"gb", 1e9},
      {"kib", 1024.0},  {"mib", 1048576.0}, {"gib", 1073741824.0}};
  auto it = units.find(unit);
  DGP_CHECK(it != units.end(), "link bandwidth: unknown unit '"
                                   << unit << "' in '" << text
                                   << "' (bit, kbit, mbit, gbit, B, KB, MB, GB, KiB, MiB, GiB)");
  DGP_CHECK(v > 0, "link bandwidth: must be positive, got '" << text << "'");
  return v * it->second;
}

double parse_latency(const std::string& text) {
  if (text == "0") return 0;
  auto [v, unit] = split_number_unit(text, "link latency");
  if (unit == "s") return v;
  if (unit == "ms") return v * 1e-3;
  if (unit == "us") return v * 1e-6;
  DGP_FAIL("link latency: unknown unit '" << unit << "' in '" << text << "' (s, ms, us)");
}

size_t message_bytes(const Message& msg) {
  return msg.bytes.size() + (msg.body.defined() ? msg.body.nbytes() : 0);
}

// ---------------- Mailbox ----------------

void Mailbox::put(Message msg, std::chrono::steady_clock::time_point deliver_at) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Key key{msg.src_stage, msg.dst_stage, static_cast<int>(msg.kind)};
    queues_[key].push_back(Pending{std::move(msg), deliver_at});
  }
  cv_.notify_all();
}

std::string Channel::timeout_text() const {
  std::ostringstream os;
  os << "within " << timeout_.count() / 1000.0 << " s (peer dead or stuck"
     << (timeout_why_.empty() ? "" : "; the bound: ") << timeout_why_ << ")";
  return os.str();
}

Message Mailbox::take(int src, int dst, MsgKind kind, int micro_batch, int64_t step,
                      std::chrono::milliseconds timeout, const std::string& timeout_text) {
  Key key{src, dst, static_cast<int>(kind)};
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    DGP_CHECK(abort_reason_.empty(), "stage " << dst << ": pipeline aborted while waiting for "
                                              << msg_kind_name(kind) << " of micro-batch " << micro_batch
                                              << " (step " << step << ") from stage " << src << ": "
                                              << abort_reason_);
    auto& q = queues_[key];
    auto now = std::chrono::steady_clock::now();
    if (!q.empty()) {
      if (q.front().deliver_at <= now) {
        Message m = std::move(q.front().msg);
        q.pop_front();
        DGP_CHECK(m.micro_batch == micro_batch && m.step == step,
                  "stage " << dst << ": expected " << msg_kind_name(kind) << " of micro-batch " << micro_batch
                           << " step " << step << " from stage " << src << " but received micro-batch "
                           << m.micro_batch << " step " << m.step << " (schedules disagree)");
        return m;
      }
      // Emulated link: the message is still on the wire.
      cv_.wait_until(lock, std::min(q.front().deliver_at, deadline));
    } else {
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && queues_[key].empty()) {
        DGP_CHECK(abort_reason_.empty(), "stage " << dst << ": pipeline aborted: " << abort_reason_);
        DGP_FAIL("stage " << dst << ": no " << msg_kind_name(kind) << " from stage " << src
                          << " for micro-batch " << micro_batch << " of step " << step << " "
                          << timeout_text);
      }
    }
  }
}

void Mailbox::abort(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (abort_reason_.empty()) abort_reason_ = reason;
  }
  cv_.notify_all();
}

bool Mailbox::aborted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !abort_reason_.empty();
}

// ---------------- LinkThrottle ----------------

std::chrono::steady_clock::time_point LinkThrottle::reserve(int src, int dst, size_t bytes) {
  auto now = std::chrono::steady_clock::now();
  if (!model_.throttled()) return now;
  std::lock_guard<std::mutex> lock(mu_);
  auto& free_at = wire_free_[{src, dst}];
  auto start = std::max(now, free_at);
  double wire_s =
      model_.bandwidth_bytes_per_s > 0 ? static_cast<double>(bytes) / model_.bandwidth_bytes_per_s : 0;
  auto done = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                          std::chrono::duration<double>(wire_s));
  free_at = done;
  return done + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                    std::chrono::duration<double>(model_.latency_s));
}

// ---------------- LocalChannel ----------------

void LocalChannel::send(Message msg) {
  auto at = throttle_.reserve(msg.src_stage, msg.dst_stage, message_bytes(msg));
  mailbox_.put(std::move(msg), at);
}

Message LocalChannel::recv(int src, int dst, MsgKind kind, int micro_batch, int64_t step) {
  return mailbox_.take(src, dst, kind, micro_batch, step, timeout_, timeout_text());
}

}  // namespace dgpipe::pipeline
