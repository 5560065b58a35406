// Learning-rate schedules.
#include "engine/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "engine/error.h"
#include "engine/optim/optimizer.h"

namespace dgpipe::engine {

namespace {
constexpr double kPi = 3.14159265358979323846;

void check_base(double base_lr, const char* what) {
  DGP_CHECK(base_lr >= 0.0 && std::isfinite(base_lr),
            what << ": base learning rate " << base_lr << " is invalid");
}
void check_warmup_total(int64_t warmup, int64_t total, const char* what) {
  DGP_CHECK(warmup >= 0, what << ": warmup_steps " << warmup << " is negative");
  DGP_CHECK(total >= 0, what << ": total_steps " << total << " is negative");
  DGP_CHECK(warmup <= total, what << ": warmup_steps " << warmup << " exceeds total_steps " << total);
}
double warmup_factor(int64_t t, int64_t warmup) {
  return static_cast<double>(t) / static_cast<double>(std::max<int64_t>(1, warmup));
}
}  // namespace

LRSchedule LRSchedule::constant(double base_lr) {
  check_base(base_lr, "constant schedule");
  return LRSchedule(Kind::constant, base_lr);
}

LRSchedule LRSchedule::cosine_with_warmup(double base_lr, int64_t warmup_steps, int64_t total_steps) {
  check_base(base_lr, "cosine schedule");
  check_warmup_total(warmup_steps, total_steps, "cosine schedule");
  LRSchedule s(Kind::cosine, base_lr);
  s.warmup_ = warmup_steps;
  s.total_ = total_steps;
  return s;
}

LRSchedule LRSchedule::polynomial_with_warmup(double base_lr, int64_t warmup_steps, int64_t total_steps,
                                              double lr_end, double power) {
  check_base(base_lr, "polynomial schedule");
  check_warmup_total(warmup_steps, total_steps, "polynomial schedule");
  // HF raises the same error: the decay goes from base_lr down to lr_end.
  DGP_CHECK(lr_end < base_lr,
            "polynomial schedule: lr_end " << lr_end << " must be smaller than the base lr " << base_lr);
  DGP_CHECK(power > 0.0, "polynomial schedule: power " << power << " must be positive");
  LRSchedule s(Kind::polynomial, base_lr);
  s.warmup_ = warmup_steps;
  s.total_ = total_steps;
  s.lr_end_ = lr_end;
  s.power_ = power;
  return s;
}

LRSchedule LRSchedule::linear_with_warmup(double base_lr, int64_t warmup_steps, int64_t total_steps) {
  check_base(base_lr, "linear schedule");
  check_warmup_total(warmup_steps, total_steps, "linear schedule");
  LRSchedule s(Kind::linear, base_lr);
  s.warmup_ = warmup_steps;
  s.total_ = total_steps;
  return s;
}

LRSchedule LRSchedule::step_decay(double base_lr, int64_t step_size, double gamma) {
  check_base(base_lr, "step schedule");
  DGP_CHECK(step_size > 0, "step schedule: step_size " << step_size << " must be positive");
  DGP_CHECK(gamma >= 0.0, "step schedule: gamma " << gamma << " must be >= 0");
  LRSchedule s(Kind::step, base_lr);
  s.step_size_ = step_size;
  s.gamma_ = gamma;
  return s;
}

double LRSchedule::factor(int64_t t) const {
  DGP_CHECK(t >= 0, "LRSchedule: iteration " << t << " is negative");
  switch (kind_) {
    case Kind::constant:
      return 1.0;
    case Kind::cosine: {
      if (t < warmup_) return warmup_factor(t, warmup_);
      double progress =
          static_cast<double>(t - warmup_) / static_cast<double>(std::max<int64_t>(1, total_ - warmup_));
      return std::max(0.0, 0.5 * (1.0 + std::cos(kPi * progress)));
    }
    case Kind::polynomial: {
      if (t < warmup_) return warmup_factor(t, warmup_);
      if (t > total_) return lr_end_ / base_lr_;
      double decay_steps = static_cast<double>(total_ - warmup_);
      // total == warmup leaves no decay phase: t == total is the end of the schedule.
      double remaining = decay_steps > 0 ? 1.0 - static_cast<double>(t - warmup_) / decay_steps : 0.0;
      double lr = (base_lr_ - lr_end_) * std::pow(remaining, power_) + lr_end_;
      return lr / base_lr_;
    }
    case Kind::linear: {
      if (t < warmup_) return warmup_factor(t, warmup_);
      return std::max(
          0.0, static_cast<double>(total_ - t) / static_cast<double>(std::max<int64_t>(1, total_ - warmup_)));
    }
    case Kind::step:
      return std::pow(gamma_, static_cast<double>(t / step_size_));
  }
  return 1.0;
}

double LRSchedule::lr(int64_t t) const {
  return base_lr_ * factor(t);
}

double LRSchedule::apply(Optimizer& optimizer, int64_t t) const {
  double value = lr(t);
  optimizer.set_lr(value);
  return value;
}

std::string LRSchedule::describe() const {
  std::ostringstream os;
  switch (kind_) {
    case Kind::constant:
      os << "constant(lr=" << base_lr_ << ")";
      break;
    case Kind::cosine:
      os << "cosine(lr=" << base_lr_ << ", warmup=" << warmup_ << ", total=" << total_ << ")";
      break;
    case Kind::polynomial:
      os << "polynomial(lr=" << base_lr_ << ", warmup=" << warmup_ << ", total=" << total_
         << ", lr_end=" << lr_end_ << ", power=" << power_ << ")";
      break;
    case Kind::linear:
      os << "linear(lr=" << base_lr_ << ", warmup=" << warmup_ << ", total=" << total_ << ")";
      break;
    case Kind::step:
      os << "step(lr=" << base_lr_ << ", step_size=" << step_size_ << ", gamma=" << gamma_ << ")";
      break;
  }
  return os.str();
}

}  // namespace dgpipe::engine
