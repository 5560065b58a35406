#include "layers/init.h"

#include <cmath>

namespace dgpipe::layers::init {

namespace {
int64_t receptive_field(const Tensor& w) {
  int64_t r = 1;
  for (int64_t d = 2; d < w.dim(); ++d) r *= w.size(d);
  return r;
}
}  // namespace

int64_t fan_in(const Tensor& w) {
  DGP_CHECK(w.dim() >= 2,
            "init: fan_in needs a weight of 2 or more dims, got " << engine::shape_str(w.shape()));
  return w.size(1) * receptive_field(w);
}

int64_t fan_out(const Tensor& w) {
  DGP_CHECK(w.dim() >= 2,
            "init: fan_out needs a weight of 2 or more dims, got " << engine::shape_str(w.shape()));
  return w.size(0) * receptive_field(w);
}

void uniform_(Tensor& t, double lo, double hi, Generator* gen) {
  // Drawn in the parameter's own dtype and device and scaled in place: a full-size model (10^8 weights) must
  // not need double-precision temporaries.
  Tensor u = engine::rand(t.shape(), engine::TensorOptions(t.dtype(), t.device()), gen);
  engine::mul_(u, hi - lo);
  t.copy_(lo == 0.0 ? u : engine::add(u, lo));
}

void normal_(Tensor& t, double mean, double std, Generator* gen) {
  Tensor n = engine::randn(t.shape(), engine::TensorOptions(t.dtype(), t.device()), gen);
  engine::mul_(n, std);
  t.copy_(mean == 0.0 ? n : engine::add(n, mean));
}

void constant_(Tensor& t, double value) {
  t.fill_(value);
}

void kaiming_uniform_(Tensor& t, double a, Generator* gen) {
  double gain = std::sqrt(2.0 / (1.0 + a * a));
  double bound = gain * std::sqrt(3.0 / static_cast<double>(fan_in(t)));
  uniform_(t, -bound, bound, gen);
}

void kaiming_normal_fan_out_(Tensor& t, Generator* gen) {
  normal_(t, 0.0, std::sqrt(2.0 / static_cast<double>(fan_out(t))), gen);
}

}  // namespace dgpipe::layers::init
