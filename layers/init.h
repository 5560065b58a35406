// Parameter initialisation, as torch.nn.init does it, drawing from dgpipe's Philox generator (so values
// differ from PyTorch's but the distributions are the same, and from-scratch training behaves alike). All
// write in place without recording autograd.
#pragma once
#include <string>

#include "engine/ops.h"

namespace dgpipe::layers::init {

using engine::Generator;
using engine::Tensor;

// fan_in = size(1) * receptive field, fan_out = size(0) * receptive field (weights of 2 or more dims).
int64_t fan_in(const Tensor& w);
int64_t fan_out(const Tensor& w);

void uniform_(Tensor& t, double lo, double hi, Generator* gen = nullptr);
void normal_(Tensor& t, double mean, double std, Generator* gen = nullptr);
void constant_(Tensor& t, double value);
// kaiming_uniform_(a): bound = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)) — the nn.Linear /
// nn.Conv2d default uses a = sqrt(5), which makes the bound 1/sqrt(fan_in).
void kaiming_uniform_(Tensor& t, double a, Generator* gen = nullptr);
// kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / fan_out), as torchvision's conv init.
void kaiming_normal_fan_out_(Tensor& t, Generator* gen = nullptr);

}  // namespace dgpipe::layers::init
