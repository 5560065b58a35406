// Mixed precision: the autocast policy and fp32 master weights. Dynamic loss scaling is DynamicLossScaler
// (engine/optim/loss_scaler.h); together they make `--precision mixed`.
//
// Policy (as PyTorch's autocast): GEMM-like ops (matmul, bmm, linear, conv2d) run in the low-precision dtype
// (f16 or bf16: tensor cores); reductions, softmax/log_softmax, normalisations and losses run in fp32;
// everything else keeps its inputs' dtype. Parameters stay fp32 (the master copy): a layer casts them with
// autocast() at use, and the cast's backward returns an fp32 gradient, so the optimizer only ever sees fp32.
//
//   amp::AutocastGuard ac(true, DType::f16);
//   Tensor y = linear(amp::autocast(x, "linear"), amp::autocast(w, "linear"), amp::autocast(b, "linear"));
//   Tensor p = softmax(amp::autocast(y, "softmax"), -1);   // back to fp32
#pragma once
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace dgpipe::engine::amp {

// The --precision choices. mixed = autocast with f16 compute + loss scaling; mixed_bf16 the same with bf16
// (bf16 has fp32's range, so the scaler is normally off). fp16/bf16 = the whole model stored in half
// precision with fp32 master weights kept by MasterWeights.
enum class Precision { fp32, fp16, bf16, mixed, mixed_bf16 };
Precision parse_precision(const std::string& text);  // "fp32", "fp16", "bf16", "mixed", "mixed-bf16"
const char* precision_name(Precision p);
// The dtype GEMMs run in under p (f32, f16 or bf16).
DType compute_dtype(Precision p);
bool uses_autocast(Precision p);
bool needs_loss_scaling(Precision p);  // fp16 and mixed (f16 underflows); bf16 variants do not

enum class CastPolicy {
  lower_precision,  // run in the autocast dtype
  fp32,             // run in f32
  keep,             // leave inputs alone
};
// Policy of an op by its engine name ("matmul", "linear", "conv2d", "softmax", "layer_norm", ...).
CastPolicy policy_for(const std::string& op);

// Autocast state of the calling thread.
bool autocast_enabled();
DType autocast_dtype();

class AutocastGuard {
 public:
  explicit AutocastGuard(bool enabled, DType dtype = DType::f16);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool prev_enabled_;
  DType prev_dtype_;
};

// t converted to the dtype op should run in under the current autocast state: unchanged when autocast is off,
// t is undefined or not floating, the policy is keep, or t already has that dtype. Differentiable.
Tensor autocast(const Tensor& t, const std::string& op);
std::vector<Tensor> autocast(const std::vector<Tensor>& ts, const std::string& op);

// fp32 master copies of half-precision model parameters (Precision::fp16 / bf16). The optimizer is built over
// master(); after backward, copy_grads_to_master() moves the model's half gradients into the masters' .grad
// (as f32), and after the optimizer step, copy_master_to_model() writes the updated values back into the
// model.
class MasterWeights {
 public:
  explicit MasterWeights(std::vector<Tensor> model_params);
  const std::vector<Tensor>& master() const { return master_; }
  const std::vector<Tensor>& model() const { return model_; }
  void copy_grads_to_master();
  void copy_master_to_model();

 private:
  std::vector<Tensor> model_;
  std::vector<Tensor> master_;
};

}  // namespace dgpipe::engine::amp
