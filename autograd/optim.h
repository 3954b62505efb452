// Optimizers (SGD with momentum, AdamW), gradient clipping and learning-rate schedules.
//
// An Optimizer is a plain struct: parameter groups (each with its own hyperparameters), per-parameter
// state created lazily on a parameter's first gradient (frozen parameters never get any), and a step
// counter. step() updates, in place and without recording, every parameter that has a gradient; the
// arithmetic is torch.optim's (SGD, and AdamW with amsgrad=False), through the fused kernels of
// kernels/cpu/optim.h. State is stored in the parameter's dtype for F32/F64 parameters and in F32 for
// BF16/F16 ones, on the parameter's device. CUDA parameters (F32 or BF16) are updated by one
// multi-tensor AdamW launch per group, dtype and step count (cuda::adamw_multi_tensor), with fp32 master
// weights kept for BF16 parameters; SGD on CUDA runs the same formula through elementwise kernels. The whole state exports to named tensors, so a trainer can checkpoint it with
// safetensors and resume bit-exactly.
//
//   ParamGroup decayed, biases;               // set params (and names) per group
//   decayed.lr = biases.lr = 1e-3;
//   decayed.weight_decay = 0.01;              // biases keep weight_decay 0
//   Optimizer opt = make_adamw({decayed, biases});
//   for (int64_t s = 0; s < total; ++s) {
//     set_lr_factor(opt, linear_schedule_with_warmup(s, warmup, total));
//     backward(loss(...));
//     clip_grad_norm_(trainable, 5.0);
//     step(opt);
//     zero_grad(opt);
//   }
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/safetensors.h"
#include "runtime/tensor.h"

namespace vlp {

enum class OptimizerKind { SGD, AdamW };

struct ParamGroup {
  std::vector<Tensor> params;
  // Optional, one per parameter: the keys of its state in export_optimizer_state (default
  // "group<g>.param<i>"). Must be unique over all groups.
  std::vector<std::string> names;
  double lr = 1e-3;
  double weight_decay = 0.0;
  // AdamW
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  // SGD
  double momentum = 0.0, dampening = 0.0;
  bool nesterov = false;
  // The lr schedules scale (set_lr_factor); make_* sets it to lr.
  double initial_lr = 0.0;
};

struct ParamState {
  int64_t step = 0;             // updates this parameter received (AdamW bias correction)
  Tensor exp_avg, exp_avg_sq;   // AdamW moments
  Tensor momentum_buffer;       // SGD with momentum
  Tensor master;                // AdamW on CUDA, BF16 parameters: the fp32 weights (F32, on the parameter's GPU)
};

struct Optimizer {
  OptimizerKind kind = OptimizerKind::AdamW;
  std::vector<ParamGroup> groups;
  std::vector<std::vector<ParamState>> state;  // state[g][i] belongs to groups[g].params[i]
  int64_t step_count = 0;                      // calls of step()
};

// Check the groups (hyperparameter ranges, every parameter a floating tensor appearing once) and fill
// in names and initial_lr.
Optimizer make_sgd(std::vector<ParamGroup> groups);
Optimizer make_adamw(std::vector<ParamGroup> groups);
// One group with torch.optim.AdamW's defaults.
Optimizer make_adamw(const std::vector<Tensor>& params, double lr = 1e-3, double weight_decay = 1e-2,
                     double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8);

// One update of every parameter that has a gradient; parameters without one are skipped (their state
// and step count stay as they are). Increments opt.step_count.
void step(Optimizer& opt);
// Sets every parameter's gradient to undefined (freeing it).
void zero_grad(Optimizer& opt);
void zero_grad(const std::vector<Tensor>& params);
// lr of every group = its initial_lr * factor (the value of a schedule below).
void set_lr_factor(Optimizer& opt, double factor);

// The state as named tensors: "optimizer.step_count" (I64 scalar), "param_groups.<g>.lr" (F64
// scalar), and per parameter with state "state.<name>.step" (I64 scalar) plus "state.<name>.exp_avg"
// and "state.<name>.exp_avg_sq" (AdamW) or "state.<name>.momentum_buffer" (SGD with momentum), plus
// "state.<name>.master" (F32) for BF16 parameters trained on CUDA. The tensors share memory with the
// live state and stay on its device (save_safetensors copies them to the host): save them before the
// next step. import puts the values on each parameter's device; a "master" entry is kept for CUDA BF16
// parameters and ignored for others (the CPU update keeps no master weights).
NamedTensors export_optimizer_state(const Optimizer& opt);
// Replaces opt's state with an exported one (values copied). Refuses unknown or missing keys, and
// shapes or dtypes that do not match the parameters, naming the key.
void import_optimizer_state(Optimizer& opt, const NamedTensors& state);

// Scales all gradients so that their global L2 norm is at most max_norm, as
// torch.nn.utils.clip_grad_norm_: the norm over every defined gradient (accumulated in double, the
// same result for any thread count; CUDA gradients through the deterministic multi-tensor sum of
// squares, one launch per device and dtype), then when max_norm / (norm + 1e-6) < 1 every gradient is
// multiplied by it. Returns the norm before clipping. Parameters without a gradient are ignored.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);

// ---- learning-rate schedules: the factor applied to the initial lr at `step` (0-based), as the
// Hugging Face transformers schedules compute it ----
double constant_schedule(int64_t step);
double constant_schedule_with_warmup(int64_t step, int64_t warmup_steps);
// step / warmup during warmup, then linearly down to 0 at total_steps (and 0 after).
double linear_schedule_with_warmup(int64_t step, int64_t warmup_steps, int64_t total_steps);
// step / warmup during warmup, then 0.5 (1 + cos(2 pi num_cycles progress)), floored at 0; the default
// half cycle decays from 1 to 0 at total_steps.
double cosine_schedule_with_warmup(int64_t step, int64_t warmup_steps, int64_t total_steps,
                                   double num_cycles = 0.5);
// By name: "constant", "constant_with_warmup", "linear", "cosine".
double schedule_factor(const std::string& name, int64_t step, int64_t warmup_steps, int64_t total_steps);

}  // namespace vlp
