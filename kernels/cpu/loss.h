// Loss kernels: cross-entropy over the rows of [N, C] logits (log-softmax, label smoothing, ignored
// rows and sample weights fused into one pass per row) and binary cross-entropy on logits.
#pragma once
#include <cstdint>

namespace vlp::cpu {

// Per row i with target t = target[i] (rows whose target equals ignore_index give 0 and lse 0):
//   lse[i]      = log sum_c exp(logits[i, c])
//   raw_loss[i] = (1 - eps) * (lse - logits[i, t]) + eps * (lse - mean_c logits[i, c])
//   loss[i]     = raw_loss[i] * sample_weight[i]
// No probability tensor is formed. sample_weight and raw_loss are optional. Targets must be valid.
template <class T>
void cross_entropy_forward(const T* logits, const int64_t* target, const T* sample_weight, int64_t n, int64_t c,
                           int64_t ignore_index, double eps, double* loss, double* lse, double* raw_loss);
// With g[i] = dloss[i * dloss_stride] * scale (stride 0 for a reduced loss; scale 1/count for Mean):
//   dlogits[i, c]  = g[i] * sample_weight[i] * (exp(logits[i, c] - lse[i]) - (1 - eps) [c == t] - eps / C)
//   dweight[i]     = g[i] * raw_loss[i]
// Ignored rows get 0. dlogits (needs logits and lse) and dweight (needs raw_loss) are each optional.
template <class T>
void cross_entropy_backward(const T* logits, const int64_t* target, const T* sample_weight, const double* lse,
                            const double* raw_loss, const T* dloss, int64_t dloss_stride, double scale, int64_t n,
                            int64_t c, int64_t ignore_index, double eps, T* dlogits, T* dweight);

// loss[i] = max(x, 0) - x t + log(1 + exp(-|x|)) (no overflow for any x). loss is optional; returns the
// sum of all n losses in double, added in fixed-size chunks so the result does not depend on threads.
template <class T> double bce_with_logits_forward(const T* x, const T* t, T* loss, int64_t n);
// With g = dloss[i * dloss_stride] * scale: dx = g (sigmoid(x) - t), dt = -g x. dx and dt optional.
template <class T>
void bce_with_logits_backward(const T* x, const T* t, const T* dloss, int64_t dloss_stride, double scale, int64_t n,
                              T* dx, T* dt);

}  // namespace vlp::cpu
