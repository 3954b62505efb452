// Differentiable neural-network ops: softmax, normalisations, embedding lookup, dropout.
#pragma once
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace vlp {

Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// Normalises over the last dim: (x - mean) / sqrt(var + eps) * weight + bias (population variance).
// weight and bias ([last dim]) may be undefined.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);
// T5's RMSNorm over the last dim: x / sqrt(mean(x^2) + eps) * weight. weight may be undefined.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps);
// weight [V, D], ids (I32 or I64, any shape) -> [..., D]. Ids outside [0, V) are an error naming the id.
Tensor embedding(const Tensor& weight, const Tensor& ids);
// Zeroes each element with probability p and scales the rest by 1/(1-p). Element i is dropped when
// the Philox uniform of (seed, offset, i) is below p, the same on every device. The mask is not
// stored: backward regenerates it from (seed, offset). Identity when !training or p == 0. p must be in
// [0, 1): p == 1 (drop everything) is an error, checked in eval mode too.
Tensor dropout(const Tensor& x, double p, bool training = true, Generator* gen = nullptr);

}  // namespace vlp
