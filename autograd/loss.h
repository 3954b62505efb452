// Differentiable losses.
#pragma once
#include "runtime/tensor.h"

namespace vlp {

enum class Reduction { Mean, Sum, None };

// logits [N, C], target [N] (I64 or I32 class ids). Targets equal to ignore_index contribute nothing.
// label_smoothing eps mixes the one-hot target with the uniform distribution (as PyTorch).
// sample_weight [N] (optional) multiplies each sample's loss. Mean divides the (weighted) sum by the
// number of non-ignored samples (0, with a zero gradient, when every sample is ignored). None returns
// [N] (0 for ignored samples). Targets outside [0, C) other than ignore_index are an error.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index = -100,
                     double label_smoothing = 0.0, const Tensor& sample_weight = Tensor(),
                     Reduction reduction = Reduction::Mean);
// Binary cross-entropy on logits against soft targets in [0, 1] (same shape), numerically stable:
// max(x, 0) - x*t + log(1 + exp(-|x|)). Mean averages over all elements.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target,
                                        Reduction reduction = Reduction::Mean);

}  // namespace vlp
