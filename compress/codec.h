// Boundary codecs: turn a tensor into a Packet (compress/packet.h) and back.
//
// Specs (one per boundary and direction):
//   none | fp16 | bf16                    casts (none sends the raw tensor)
//   uniform:Q                             Q-bit min/max quantization, 1 <= Q <= 16
//   sortquant:Q+S                         2^S equal-population groups by exact order, Q bits inside a group
//   fastquant:Q+S                         same code layout, group boundaries from sample quantiles
//   topk:R                                keep the fraction R (0 < R <= 1) of largest magnitudes
//   power:R[/I]                           rank-R power iteration, warm-started, I iterations (default 2)
//   svd:R[/I]                             randomized SVD of rank R, I sketch power iterations (default 2)
//   kmeans:B[/I]                          1-D k-means with 2^B centroids, at most I Lloyd iterations (default
//   20)
//   uniform:Q/channel, uniform:Q/row      group quantization: one (min, step) per channel (dim 1) or per row
//                                         (the last dim: per token of a [b,L,H] text boundary)
// Composed specs chain stages with '>': the first stage's output feeds the next one.
//   topk:R>Q                              top-k, then the kept values quantized by Q (uniform, sortquant,
//                                         fastquant, kmeans, fp16 or bf16); indices as in topk:R
//   delta[:F]>C                           per training sample, the change against the copy sent last time,
//                                         encoded by C; a sample seen for the first time is sent with F
//                                         (default none: exact). Needs sample ids (encode_samples).
// Any spec may end in "+ef" (error feedback around the whole spec: the sender adds the residual of its
// previous encode); delta refuses it (its reference already carries the error forward).
// "fwd=SPEC,bwd=SPEC" chooses per direction (parse_direction_pair); a single SPEC applies to both.
//
// Encode/decode run on the device of the tensor: CPU reference everywhere, CUDA twins for every method (fused
// kernels for the quantizers and top-k, device Lloyd iterations for k-means, batched cuBLAS for power/svd);
// only svd above rank 64 runs its CPU reference on a host copy.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compress/packet.h"
#include "engine/tensor.h"

namespace dgpipe::compress {

// How uniform quantization groups elements under one (min, step): the whole tensor, one group per channel
// (dim 1; a tensor of fewer than 2 dims is one group) or one per row of the last dim.
enum class Grouping { tensor = 0, channel = 1, row = 2 };

struct CodecSpec {
  CodecId id = CodecId::none;
  int q_bits = 0;                        // uniform / sortquant / fastquant: value bits
  int s_bits = 0;                        // sortquant / fastquant: split bits (2^S groups)
  double fraction = 0.0;                 // topk: fraction kept
  int rank = 0;                          // power / svd
  int iterations = 0;                    // power / svd / kmeans
  int bits = 0;                          // kmeans: 2^bits centroids
  Grouping grouping = Grouping::tensor;  // uniform
  // Composed specs (id topk_chain or delta): the codec the first stage's output feeds ...
  std::shared_ptr<const CodecSpec> next;
  // ... and, for delta, the codec of a sample's first send.
  std::shared_ptr<const CodecSpec> fresh;
  bool error_feedback = false;
  std::string str() const;  // canonical spelling, parse(str()) == *this
};

// Parses one spec; throws engine::Error naming the spec and what is wrong with it.
CodecSpec parse_codec_spec(const std::string& spec);

struct DirectionPair {
  std::string fwd;  // activation codec (sender -> receiver)
  std::string bwd;  // gradient codec (receiver -> sender)
};
// "fwd=A,bwd=B" (either order, either may be omitted -> "none"), or a single spec used for both.
// Both specs are validated.
DirectionPair parse_direction_pair(const std::string& text);

// Half-precision inputs (f16, bf16): every codec encodes them from their 2-byte values, not through an f32
// copy of the tensor (the power/svd GEMMs on a GPU excepted, see lowrank.cpp), into the same wire format as
// the same values in f32; the lossy codecs' arithmetic stays f32. The header records the input's dtype, and
// decode() returns it (decode_as: the dtype a receiving stage computes in). `none` sends the tensor's own
// bytes (half the f32 bytes for a half input); fp16/bf16 send a half input unchanged.
class Codec {
 public:
  virtual ~Codec() = default;
  // x: a floating tensor (f32, f16, bf16; f64 is encoded as f32) on any device.
  virtual Packet encode(const engine::Tensor& x) = 0;
  // The decoded tensor in `dtype`, on the device of the packet's body.
  virtual engine::Tensor decode_as(const Packet& p, engine::DType dtype) = 0;
  // The decoded tensor in the dtype of the encoded one.
  engine::Tensor decode(const Packet& p) { return decode_as(p, p.header.dtype); }
  virtual std::string spec() const = 0;
  virtual CodecId id() const = 0;
  // Body bytes of a packet for an f32 tensor of this shape (exact; known before encoding).
  virtual uint64_t body_bytes(const engine::Shape& shape) const = 0;
  // ... for a tensor of this shape and dtype (differs from body_bytes only for `none`, fp16 and bf16).
  virtual uint64_t body_bytes(const engine::Shape& shape, engine::DType dtype) const {
    return body_bytes(shape);
  }
  // Parameters written into the header for a tensor of this shape.
  virtual std::vector<int64_t> header_params(const engine::Shape& shape) const = 0;
  // Exact wire bytes (header + body) of the packet for a tensor of this shape and dtype.
  uint64_t wire_bytes(const engine::Shape& shape, engine::DType dtype = engine::DType::f32) const;

  // Codecs that remember something per training sample (delta) must know which samples the rows (dim 0) of
  // x are: sample_ids is i64 [x.size(0)], the dataset index of each row, on any device. Without ids (an
  // undefined tensor: evaluation) they send every row as if seen for the first time and remember nothing.
  // Every other codec ignores the ids.
  virtual bool needs_sample_ids() const { return false; }
  virtual Packet encode_samples(const engine::Tensor& x, const engine::Tensor& sample_ids) {
    return encode(x);
  }
  // The decoded tensor in `dtype` (as decode_as).
  virtual engine::Tensor decode_samples_as(const Packet& p, const engine::Tensor& sample_ids,
                                           engine::DType dtype) {
    return decode_as(p, dtype);
  }
  engine::Tensor decode_samples(const Packet& p, const engine::Tensor& sample_ids) {
    return decode_samples_as(p, sample_ids, p.header.dtype);
  }
  // Bytes this instance keeps between calls (host and device): the delta codec's references, the
  // error-feedback residual. Reported per boundary, since for delta it grows with the data set.
  virtual uint64_t state_bytes() const { return 0; }

  // Names the boundary and direction in error messages ("stage0->1 fwd").
  void set_boundary(std::string name) { boundary_ = std::move(name); }
  const std::string& boundary() const { return boundary_; }

 protected:
  std::string boundary_;
  // Throws naming the codec and the boundary if x is not a floating tensor or holds NaN/Inf (CPU tensors).
  void check_input(const engine::Tensor& x) const;
  // The NaN/Inf half of check_input: throws (naming how many and the first) if the CPU tensor x holds a
  // non-finite value.
  void check_finite(const engine::Tensor& x) const;
  // The other half: throws if x is undefined or not a floating tensor.
  void check_type(const engine::Tensor& x) const;
  // Throws if p was not produced by this kind of codec or its header is inconsistent.
  void check_packet(const Packet& p) const;
  PacketHeader make_header(const engine::Tensor& x) const;
  std::string where() const;  // "uniform:8 at boundary 'stage0->1 fwd'"

  // The common start of an encode: checks x (check_input), names the boundary and fills the header
  // (make_header); the caller fills the body.
  Packet start_packet(const engine::Tensor& x) const;
  // start_packet without check_input's pass over the values, for a codec that looks for NaN/Inf within its
  // own single pass over x and then calls check_finite(x) (the same verdict and error, one read of x less).
  Packet start_packet_unscanned(const engine::Tensor& x) const;
  // An uninitialised u8 body of p.header.body_bytes on `device`, for a kernel that writes every byte of it.
  static engine::Tensor device_body(const Packet& p, engine::Device device);
  // x as a contiguous f32 tensor on its own device (x itself when it already is one): what the power/svd
  // GEMMs read.
  static engine::Tensor contiguous_f32(const engine::Tensor& x);
  // x contiguous on its own device in its own dtype when that is f32, f16 or bf16 (f64: as f32): what the
  // quantizers' CUDA kernels read.
  static engine::Tensor contiguous_input(const engine::Tensor& x);
};

std::unique_ptr<Codec> make_codec(const CodecSpec& spec, const std::string& boundary = "");
std::unique_ptr<Codec> make_codec(const std::string& spec, const std::string& boundary = "");

// ---- inspection helpers (tests, the `dgpipe codec` tool) ----
struct GroupStat {
  float lo;    // group minimum
  float step;  // (max - min) / (2^Q - 1); 0 for constant or empty groups
};
// Per-group statistics of a uniform (one group, or one per channel or row), sortquant or fastquant packet.
std::vector<GroupStat> read_group_stats(const Packet& p);
// Unpacked codes of a uniform / sortquant / fastquant / kmeans packet (code = group << Q | q for sortquant
// and fastquant; grouped uniform codes are Q bits, the group follows from the position).
std::vector<uint32_t> read_codes(const Packet& p);
// Index width in bits used by top-k for n elements: the narrowest that represents n - 1 (at least 1).
int index_bits(int64_t n);

// CUDA stream (cudaStream_t) the codec kernels run on: the engine's current stream of the current device.
//
// The CUDA launchers of the codecs (namespace cuda_kernels, declared in compress/<codec>_kernels.h next to
// <codec>.cpp and <codec>.cu) all run on this stream, never wait for the device, and write the whole body in
// the layout of the CPU reference (codec_impl.h): the prelude, whose status word counts the non-finite
// inputs, then the method's statistics and payload. The codecs call them whenever the tensor is on CUDA; a
// build without CUDA links the throwing stubs of compress/cuda_stub.cpp instead.
void* codec_stream();

}  // namespace dgpipe::compress
