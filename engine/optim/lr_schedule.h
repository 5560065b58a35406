// Learning-rate schedules stepped per iteration, with the semantics of the Hugging Face
// get_*_schedule_with_warmup functions and torch.optim.lr_scheduler.StepLR. lr(t) = base_lr * factor(t),
// where t = 0 is the first optimizer step (what a LambdaLR sees before its first scheduler.step()).
#pragma once
#include <cstdint>
#include <string>

namespace dgpipe::engine {

class Optimizer;

class LRSchedule {
 public:
  enum class Kind { constant, cosine, polynomial, linear, step };

  // lr(t) = base_lr.
  static LRSchedule constant(double base_lr);
  // t < W: t/W; else 0.5 * (1 + cos(pi * (t-W)/(T-W))), floored at 0 (HF get_cosine_schedule_with_warmup).
  static LRSchedule cosine_with_warmup(double base_lr, int64_t warmup_steps, int64_t total_steps);
  // t < W: t/W; t > T: lr_end; else (base-lr_end) * (1 - (t-W)/(T-W))^power + lr_end
  // (HF get_polynomial_decay_schedule_with_warmup; lr_end must be below base_lr).
  static LRSchedule polynomial_with_warmup(double base_lr, int64_t warmup_steps, int64_t total_steps,
                                           double lr_end = 1e-7, double power = 1.0);
  // t < W: t/W; else max(0, (T-t)/(T-W)) (HF get_linear_schedule_with_warmup).
  static LRSchedule linear_with_warmup(double base_lr, int64_t warmup_steps, int64_t total_steps);
  // base_lr * gamma^(t / step_size) (StepLR).
  static LRSchedule step_decay(double base_lr, int64_t step_size, double gamma);

  double lr(int64_t t) const;      // learning rate for iteration t >= 0
  double factor(int64_t t) const;  // lr(t) / base_lr
  // Sets the optimizer's learning rate (all groups) to lr(t) and returns it.
  double apply(Optimizer& optimizer, int64_t t) const;

  Kind kind() const { return kind_; }
  double base_lr() const { return base_lr_; }
  std::string describe() const;  // "cosine(lr=0.001, warmup=100, total=1000)"

 private:
  LRSchedule(Kind kind, double base_lr) : kind_(kind), base_lr_(base_lr) {}
  Kind kind_;
  double base_lr_;
  int64_t warmup_ = 0;
  int64_t total_ = 0;
  double lr_end_ = 0.0;
  double power_ = 1.0;
  int64_t step_size_ = 1;
  double gamma_ = 1.0;
};

}  // namespace dgpipe::engine
