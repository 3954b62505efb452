// The fused LoRA linear: a frozen (or trainable) linear layer plus its low-rank update in one op,
//
//   y = x W^T + bias + scale * (dropout(x) A^T) B^T
//
// with x [..., in], W [out, in], bias [out] (optional), A [r, in], B [out, r]. The dropout mask is element
// i of the Philox stream (seed, offset) over x in row-major order, exactly as vlp::dropout draws it, and
// the op takes the same (p, training, generator) and consumes the same x.numel() values from the generator,
// so lora_linear(x, ...) gives the numbers of linear(x, W, bias) + scale * linear(linear(dropout(x), A), B).
//
// CPU: the readable reference composition (dropout into a buffer, three GEMMs, the scaled add), bit-for-bit
// the composed ops in F32 and F64. CUDA: h = dropout(x) A^T in one kernel (cuda::lora_down_dropout; the
// dropped activations are never stored), and the up-projection accumulated into the base GEMM's output
// (alpha = scale, beta = 1): no extra pass over the activations.
//
// Backward keeps x (for dW and dA; the mask is regenerated, never stored), W, A, B and h = dropout(x) A^T
// ([rows, r]), each only when a gradient needs it:
//   dW = dy^T x, db = sum(dy), dB = scale dy^T h, dh = scale dy B, dA = dh^T dropout(x),
//   dx = dy W + dropout_backward(dh A).
// On CUDA dropout(x) for dA is regenerated into a temporary buffer by the dropout kernel and multiplied
// with the GEMM (the composition of existing kernels, not a dedicated one); dh A is masked in place and the
// base dy W is accumulated into it (beta = 1).
#pragma once
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace vlp {

// All tensors on one device with one floating dtype; bias may be undefined. Dropout applies only when
// training and dropout_p > 0 (dropout_p in [0, 1)); gen defaults to default_generator().
Tensor lora_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& lora_a,
                   const Tensor& lora_b, double scale, double dropout_p, bool training = true,
                   Generator* gen = nullptr);

}  // namespace vlp
