// Optimizer kernels over one contiguous parameter tensor: fused AdamW and SGD steps (one pass over
// param, grad and state), and the two halves of gradient clipping (sum of squares, in-place scale).
#pragma once
#include <cstdint>

namespace vlp::cpu {

// Scalars of one AdamW step. bias_correction1 = 1 - beta1^t, bias_correction2 = 1 - beta2^t, computed
// by the caller from the parameter's step count t (already incremented for this step).
struct AdamWScalars {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  double bias_correction1 = 1.0, bias_correction2 = 1.0;
};

// torch.optim.AdamW (amsgrad=False) for n elements, in place on param, exp_avg, exp_avg_sq:
//   p *= 1 - lr*wd;  m += (1-beta1)(g - m);  v = beta2 v + (1-beta2) g^2;
//   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
template <class T>
void adamw_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n, const AdamWScalars& s);

// Scalars of one SGD step (torch.optim.SGD).
struct SGDScalars {
  double lr = 1e-3, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
};

// torch.optim.SGD for n elements: d = g + wd p; with momentum, buf = d on the first step (first_step)
// else buf = momentum buf + (1 - dampening) d, and d = nesterov ? d + momentum buf : buf; p -= lr d.
// momentum_buffer may be null when momentum is 0.
template <class T>
void sgd_step(T* param, const T* grad, T* momentum_buffer, bool first_step, int64_t n, const SGDScalars& s);

// Sum of x[i]^2 accumulated in double. Fixed chunks combined in order, so the result does not depend
// on the number of threads.
template <class T>
double sum_of_squares(const T* x, int64_t n);

// x[i] *= scale.
template <class T>
void scale_inplace(T* x, int64_t n, double scale);

}  // namespace vlp::cpu
