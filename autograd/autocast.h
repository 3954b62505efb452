// Mixed precision: an autocast policy with fp32 master weights.
//
// Inside an AutocastScope(true) (per thread), the ops that carry nearly all the FLOPs read their F32
// operands as low-precision (BF16 by default) copies, and everything else stays F32:
//
//   low precision in, F32 out   linear, matmul, bmm (autograd/linalg.h), scaled_dot_product_attention
//                               (autograd/attention.h: q, k, v and the additive bias; the key padding
//                               mask is Bool and stays as it is)
//   F32                         everything else: norms, softmax, losses, residual adds, activations,
//                               embeddings, the linear bias (added to the F32 output), the optimizer
//
// The casts are the differentiable vlp::to(x, dtype) (autograd/views.h), recorded on the tape like any
// op, so the gradient of an F32 parameter or activation comes back to it in F32: parameters stay F32 (the
// master weights), their .grad is F32, and the optimizer and its state are unchanged.
//
// Why the outputs return in F32: the elementwise ops have no mixed-dtype promotion rules (both operands
// of an add must share a dtype), so a BF16 result meeting an F32 residual would need one. Returning F32
// keeps every other op exactly as it was. It costs nothing for the GEMMs: they accumulate in F32 and
// write F32 directly (cuBLASLt with BF16 A and B and an F32 C; the CPU computes in F32 anyway). The
// attention kernels write their output in their input dtype, so attention rounds its output to BF16 and
// converts it back (one extra elementwise pass).
//
// Backward: an autocast op receives its output gradient in F32 and rounds it to the low-precision dtype,
// which is what its backward GEMMs read; the input gradients come back in that dtype and the recorded
// casts convert them to F32. The scope only needs to surround forward and loss; backward() always runs
// with autocast off (the recorded casts are replayed whatever the scope).
//
// Every device: on CUDA the BF16 operands go to BF16 kernels; on the CPU the kernels compute in F32
// (compute_dtype) on the BF16-rounded values, which reproduces the rounding of the inputs exactly. F16
// is accepted but only rounds: both backends compute F16 operands in F32. Ops apply autocast only to F32
// operands: F64 (gradcheck) and tensors already in BF16/F16 are untouched (all operands of an op share
// one dtype, as before).
//
// Memory: a node keeps the low-precision copy of a weight it needs for backward (as torch.autocast does),
// also for a frozen weight; on the CPU that copy is held in the F32 compute dtype.
//
// Within one enabled region, the low-precision copy of a parameter (a leaf that requires grad) is made
// once and reused by every op reading it (tied weights, repeated forwards, generation loops), as long
// as the parameter is not modified in place; the copies are dropped when autocast turns off again.
#pragma once
#include <cstdint>

#include "runtime/tensor.h"

namespace vlp {

// Turns autocast on (to `dtype`: BF16 or F16) or off for the current thread until the scope ends; the
// previous state is restored, so scopes nest and AutocastScope(false) disables it inside an enabled region.
struct AutocastScope {
  explicit AutocastScope(bool enabled, DType dtype = DType::BF16);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool previous_enabled_;
  DType previous_dtype_;
};

bool autocast_enabled();
DType autocast_dtype();  // the low-precision dtype of the current (or last) scope
// True when autocast is on and x is a defined F32 tensor: an op with this operand autocasts.
bool autocast_applies(const Tensor& x);
// x converted to autocast_dtype() through the differentiable vlp::to when autocast_applies(x), else x
// itself. A parameter's copy is cached for the enabled region (see above).
Tensor autocast_input(const Tensor& x);
// Low-precision parameter copies currently cached (for tests).
int64_t autocast_cache_size();

}  // namespace vlp
