#include "pipeline/channel.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
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
  size_t bytes = msg.bytes.size() + (msg.body.defined() ? msg.body.nbytes() : 0);
  for (const engine::Tensor& t : msg.side_inputs) bytes += tensor_record_bytes(t);
  return bytes;
}

// ---------------- tensor records ----------------

void put_tensor_record(std::vector<uint8_t>& out, const engine::Tensor& t) {
  if (!t.defined()) {
    out.push_back(0);
    return;
  }
  engine::Tensor c = t.to(engine::Device::cpu()).contiguous();
  out.push_back(1);
  out.push_back(static_cast<uint8_t>(c.dtype()));
  out.push_back(static_cast<uint8_t>(c.dim()));
  for (int64_t d : c.shape()) {
    uint8_t b[8];
    std::memcpy(b, &d, 8);
    out.insert(out.end(), b, b + 8);
  }
  const uint8_t* p = static_cast<const uint8_t*>(c.raw_data());
  out.insert(out.end(), p, p + c.nbytes());
}

engine::Tensor get_tensor_record(const uint8_t*& p, const uint8_t* end, engine::Device device) {
  auto need = [&](size_t n) {
    DGP_CHECK(static_cast<size_t>(end - p) >= n, "pipeline message: truncated side inputs");
  };
  need(1);
  if (*p++ == 0) return engine::Tensor();
  need(2);
  engine::DType dtype = static_cast<engine::DType>(*p++);
  DGP_CHECK(static_cast<int>(dtype) <= static_cast<int>(engine::DType::boolean),
            "pipeline message: bad side-input dtype");
  int ndim = *p++;
  engine::Shape shape(ndim);
  need(8 * static_cast<size_t>(ndim));
  for (int i = 0; i < ndim; ++i) {
    std::memcpy(&shape[i], p, 8);
    p += 8;
    DGP_CHECK(shape[i] >= 0 && shape[i] < (int64_t(1) << 40), "pipeline message: bad side-input shape");
  }
  engine::Tensor t = engine::empty(shape, engine::TensorOptions(dtype, engine::Device::cpu()));
  need(t.nbytes());
  std::memcpy(t.raw_data(), p, t.nbytes());
  p += t.nbytes();
  return t.to(device);
}

size_t tensor_record_bytes(const engine::Tensor& t) {
  return t.defined() ? 3 + 8 * static_cast<size_t>(t.dim()) + t.nbytes() : 1;
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

namespace {
// The CUDA tensors a message carries (its body and side inputs) and their one device (-1: none).
std::vector<engine::Tensor> cuda_tensors_of(const Message& msg, int* device) {
  std::vector<engine::Tensor> out;
  *device = -1;
  auto take = [&](const engine::Tensor& t) {
    if (!t.defined() || !t.is_cuda()) return;
    DGP_CHECK(*device < 0 || *device == t.device().index,
              "local channel: the message from stage " << msg.src_stage << " to stage " << msg.dst_stage
                                                       << " holds tensors on cuda:" << *device << " and "
                                                       << t.device().str() << " (one device per message)");
    *device = t.device().index;
    out.push_back(t);
  };
  take(msg.body);
  for (const engine::Tensor& t : msg.side_inputs) take(t);
  return out;
}
}  // namespace

void LocalChannel::send(Message msg) {
  int device = -1;
  cuda_tensors_of(msg, &device);
  if (device >= 0) {
    // The sender's stream may still be writing them: the receiver waits for this point of it.
    msg.body_ready = std::make_shared<engine::cuda::Event>();
    msg.body_ready->record(engine::cuda::current_stream(device));
  }
  auto at = throttle_.reserve(msg.src_stage, msg.dst_stage, message_bytes(msg));
  mailbox_.put(std::move(msg), at);
}

Message LocalChannel::recv(int src, int dst, MsgKind kind, int micro_batch, int64_t step) {
  Message m = mailbox_.take(src, dst, kind, micro_batch, step, timeout_, timeout_text());
  int device = -1;
  std::vector<engine::Tensor> on_device = cuda_tensors_of(m, &device);
  if (m.body_ready && device >= 0) {
    // Whatever this thread runs next on that device (decoding, or a copy to its own device) waits for the
    // sender's writes, and the blocks are not reused by the sender's stream before that work has read them.
    engine::cuda::Stream consumer = engine::cuda::current_stream(device);
    m.body_ready->wait(consumer);
    for (const engine::Tensor& t : on_device) engine::cuda::record_stream(t, consumer);
  }
  return m;
}

}  // namespace dgpipe::pipeline
