// What boundary traffic costs over a link of a given speed, and the link speed below which codecs pay.
//
// A training run (or one step of it) is summed up by its compute time C, its codecs' encode + decode time E,
// the bytes its codecs put on the wire W and the bytes f32 tensors would have needed R (codec `none`: no
// codec time, R on the wire). Over a link of bandwidth B two simple models bracket the time it takes:
//   serial      C + E + W/B        nothing overlaps the transfers (an upper bound)
//   overlapped  max(C + E, W/B)    the transfers hide behind compute perfectly (a lower bound)
// A pipeline of micro-batches overlaps part of its transfers, so a real run lies in between. The codecs beat
// `none` on links slower than the break-even bandwidth:
//   serial      (R - W) / E        the wire time saved exceeds the codec time spent
//   overlapped  R / (C + E)        the f32 transfer outlasts the compressed run's compute
// (the overlapped break-even assumes W/B <= C + E there, which holds for any codec that compresses).
// `dgpipe break-even` prints both for runs; bench/time_to_accuracy.py checks them against a real shaped link.
#pragma once
#include <cstdint>
#include <string>

namespace dgpipe::apps {

struct LinkTraffic {
  uint64_t wire_bytes = 0;     // W: what the codecs sent
  uint64_t raw_bytes = 0;      // R: what f32 tensors (codec none) would have sent
  double codec_seconds = 0;    // E: encode + decode time
  double compute_seconds = 0;  // C: everything else of the training time, on a run without a slow link
};

// Seconds `bytes` take on a link of `bytes_per_s`.
double wire_seconds(uint64_t bytes, double bytes_per_s);
// The run's time over the link by each model, with its codecs or (compressed = false) uncompressed.
double serial_seconds(const LinkTraffic& t, double bytes_per_s, bool compressed);
double overlapped_seconds(const LinkTraffic& t, double bytes_per_s, bool compressed);
// Break-even bandwidths (bytes/s): 0 when the codecs do not shrink the traffic; infinity when they are free.
double serial_break_even(const LinkTraffic& t);
double overlapped_break_even(const LinkTraffic& t);
// "784 Mbit/s", "1.20 Gbit/s", "never", "any speed".
std::string human_bandwidth(double bytes_per_s);

}  // namespace dgpipe::apps
