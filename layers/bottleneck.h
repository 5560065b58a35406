// Learned bottlenecks at a pipeline stage boundary (docs/original.md, "Convolution insertion" and "Linear
// insertion"): an encoder at the end of the sending stage and a decoder at the start of the receiving one, so
// what crosses the link — and what the boundary's codec, if any, compresses further — is the encoder's
// output, and the gradient coming back has that small shape too. Both are trained with the network (or first
// alone, as an autoencoder of the boundary activations: the two-phase recipe, apps/trainer.cpp).
//   none        no bottleneck
//   conv:C[/S]  image boundary [N,Cin,H,W]: encoder Conv2d(Cin->C, kernel S, stride S) -> [N,C,H/S,W/S];
//   decoder
//               Conv2d(C->Cin*S*S, 1x1) then PixelShuffle(S) -> [N,Cin,H,W]. The decoder is the map of a
//               ConvTranspose2d(C->Cin, kernel S, stride S) (the windows do not overlap), with a bias per
//               position in the window instead of per channel. S = 1 (the default) is a 1x1 channel
//               bottleneck.
//   linear:R    text boundary [..., H]: encoder Linear(H->R), decoder Linear(R->H) over the last dim.
// Parameters: "encoder.weight", "encoder.bias", "decoder.0.weight", ... under the name the model gives the
// bottleneck (models::insert_bottlenecks: "bottleneck.<boundary>").
#pragma once
#include <memory>
#include <string>

#include "layers/layers.h"

namespace dgpipe::layers {

struct BottleneckSpec {
  enum class Kind { none, conv, linear };
  Kind kind = Kind::none;
  int64_t width = 0;        // conv: channels C; linear: features R
  int64_t stride = 1;       // conv: kernel and stride S
  std::string str() const;  // canonical spelling, parse(str()) == *this
};
// "none" | "conv:C[/S]" | "linear:R"; throws naming the text and what is wrong.
BottleneckSpec parse_bottleneck_spec(const std::string& text);

class Bottleneck : public Module {
 public:
  // features: the boundary tensor's channels (conv, dim 1) or hidden size (linear, last dim).
  Bottleneck(const BottleneckSpec& spec, int64_t features, Generator* gen = nullptr);
  // decoder(encoder(x)): the autoencoder the first phase of the two-phase recipe trains.
  Tensor forward(const Tensor& x, const BlockContext& ctx) override;
  std::string type_name() const override { return "Bottleneck"; }
  std::string extra_repr() const override;

  // The encoder's output shape for a boundary tensor of shape `wide`; throws, naming the spec, when the
  // tensor does not fit (rank, channels or hidden size, a map not divisible by the stride).
  Shape narrow_shape(const Shape& wide) const;
  // Elements of the boundary tensor whose encoding has `narrow` elements (what an uncompressed boundary would
  // have sent, for the traffic counts).
  int64_t wide_numel(int64_t narrow) const;

  const BottleneckSpec spec;
  const int64_t features;
  std::shared_ptr<Module> encoder, decoder;
};

}  // namespace dgpipe::layers
