#include "layers/bottleneck.h"

#include <sstream>

#include "engine/error.h"

namespace dgpipe::layers {

namespace {

int64_t parse_positive(const std::string& text, const std::string& spec, const char* field) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  DGP_CHECK(!text.empty() && used == text.size() && v > 0,
            "bottleneck '" << spec << "': " << field << " '" << text << "' is not a positive integer");
  return v;
}

}  // namespace

std::string BottleneckSpec::str() const {
  switch (kind) {
    case Kind::conv:
      return "conv:" + std::to_string(width) + (stride != 1 ? "/" + std::to_string(stride) : "");
    case Kind::linear:
      return "linear:" + std::to_string(width);
    default:
      return "none";
  }
}

BottleneckSpec parse_bottleneck_spec(const std::string& text) {
  BottleneckSpec s;
  if (text == "none" || text.empty()) return s;
  const size_t colon = text.find(':');
  const std::string kind = text.substr(0, colon);
  const std::string arg = colon == std::string::npos ? "" : text.substr(colon + 1);
  if (kind == "conv") {
    s.kind = BottleneckSpec::Kind::conv;
    const size_t slash = arg.find('/');
    s.width = parse_positive(arg.substr(0, slash), text, "channel count C");
    if (slash != std::string::npos) s.stride = parse_positive(arg.substr(slash + 1), text, "stride S");
  } else if (kind == "linear") {
    s.kind = BottleneckSpec::Kind::linear;
    s.width = parse_positive(arg, text, "feature count R");
  } else {
    DGP_FAIL(
        "bottleneck '" << text << "': unknown kind '" << kind
                       << "' (expected none, conv:C[/S] for image boundaries or linear:R for text ones)");
  }
  return s;
}

Bottleneck::Bottleneck(const BottleneckSpec& s, int64_t f, Generator* gen) : spec(s), features(f) {
  DGP_CHECK(spec.kind != BottleneckSpec::Kind::none, "Bottleneck: spec 'none' makes no bottleneck");
  DGP_CHECK(features > 0, "bottleneck '" << spec.str() << "': the boundary has " << features << " features");
  if (spec.kind == BottleneckSpec::Kind::conv) {
    Conv2dOptions down;
    down.kernel = down.stride = spec.stride;
    encoder = register_module("encoder", std::make_shared<Conv2d>(features, spec.width, down, gen));
    Conv2dOptions up;
    up.kernel = 1;
    auto dec = std::make_shared<Sequential>();
    dec->push_back(std::make_shared<Conv2d>(spec.width, features * spec.stride * spec.stride, up, gen));
    if (spec.stride > 1) dec->push_back(std::make_shared<PixelShuffle>(spec.stride));
    decoder = register_module("decoder", dec);
  } else {
    encoder = register_module("encoder", std::make_shared<Linear>(features, spec.width, true, gen));
    decoder = register_module("decoder", std::make_shared<Linear>(spec.width, features, true, gen));
  }
}

Tensor Bottleneck::forward(const Tensor& x, const BlockContext& ctx) {
  return decoder->forward(encoder->forward(x, ctx), ctx);
}

std::string Bottleneck::extra_repr() const {
  std::ostringstream os;
  os << spec.str() << ", " << features
     << (spec.kind == BottleneckSpec::Kind::conv ? " channels" : " features");
  return os.str();
}

Shape Bottleneck::narrow_shape(const Shape& wide) const {
  const std::string where = "bottleneck '" + spec.str() + "' on a boundary tensor " + engine::shape_str(wide);
  Shape narrow = wide;
  if (spec.kind == BottleneckSpec::Kind::conv) {
    DGP_CHECK(wide.size() == 4, where << ": conv needs an image boundary [N,C,H,W] (linear:R is for text)");
    DGP_CHECK(wide[1] == features,
              where << ": made for " << features << " channels, the tensor has " << wide[1]);
    DGP_CHECK(wide[2] % spec.stride == 0 && wide[3] % spec.stride == 0,
              where << ": the " << wide[2] << "x" << wide[3] << " map is not divisible by the stride "
                    << spec.stride);
    narrow[1] = spec.width;
    narrow[2] /= spec.stride;
    narrow[3] /= spec.stride;
  } else {
    DGP_CHECK(!wide.empty() && wide.back() == features,
              where << ": made for a last dim of " << features << " features");
    narrow.back() = spec.width;
  }
  return narrow;
}

int64_t Bottleneck::wide_numel(int64_t narrow) const {
  if (spec.kind == BottleneckSpec::Kind::conv)
    return narrow / spec.width * features * spec.stride * spec.stride;
  return narrow / spec.width * features;
}

}  // namespace dgpipe::layers
