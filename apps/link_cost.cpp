#include "apps/link_cost.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>

#include "engine/error.h"

namespace dgpipe::apps {

namespace {
// The codec-side quantities of the traffic, or those of codec none.
struct Sent {
  uint64_t bytes;
  double codec_s;
};
Sent sent(const LinkTraffic& t, bool compressed) {
  return compressed ? Sent{t.wire_bytes, t.codec_seconds} : Sent{t.raw_bytes, 0.0};
}
}  // namespace

double wire_seconds(uint64_t bytes, double bytes_per_s) {
  DGP_CHECK(bytes_per_s > 0, "link cost: the bandwidth must be positive, got " << bytes_per_s);
  return static_cast<double>(bytes) / bytes_per_s;
}

double serial_seconds(const LinkTraffic& t, double bytes_per_s, bool compressed) {
  const Sent s = sent(t, compressed);
  return t.compute_seconds + s.codec_s + wire_seconds(s.bytes, bytes_per_s);
}

double overlapped_seconds(const LinkTraffic& t, double bytes_per_s, bool compressed) {
  const Sent s = sent(t, compressed);
  return std::max(t.compute_seconds + s.codec_s, wire_seconds(s.bytes, bytes_per_s));
}

double serial_break_even(const LinkTraffic& t) {
  if (t.wire_bytes >= t.raw_bytes) return 0;
  if (t.codec_seconds <= 0) return std::numeric_limits<double>::infinity();
  return static_cast<double>(t.raw_bytes - t.wire_bytes) / t.codec_seconds;
}

double overlapped_break_even(const LinkTraffic& t) {
  if (t.wire_bytes >= t.raw_bytes) return 0;
  const double busy = t.compute_seconds + t.codec_seconds;
  if (busy <= 0) return std::numeric_limits<double>::infinity();
  return static_cast<double>(t.raw_bytes) / busy;
}

std::string human_bandwidth(double bytes_per_s) {
  if (bytes_per_s <= 0) return "never";
  if (std::isinf(bytes_per_s)) return "any speed";
  double bits = bytes_per_s * 8;
  const char* unit = "bit/s";
  if (bits >= 1e9) {
    bits /= 1e9;
    unit = "Gbit/s";
  } else if (bits >= 1e6) {
    bits /= 1e6;
    unit = "Mbit/s";
  } else if (bits >= 1e3) {
    bits /= 1e3;
    unit = "kbit/s";
  }
  std::ostringstream os;
  os << std::fixed << std::setprecision(bits < 10 ? 2 : (bits < 100 ? 1 : 0)) << bits << " " << unit;
  return os.str();
}

}  // namespace dgpipe::apps
