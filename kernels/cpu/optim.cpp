// Fused optimizer steps: each element of param, grad and state is read and written once. The
// arithmetic follows PyTorch's single-tensor CPU implementations operation by operation (scalars cast
// to T, the same association order), so float results track torch.optim closely.
#include "kernels/cpu/optim.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace vlp::cpu {

template <class T>
void adamw_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n, const AdamWScalars& s) {
  const T decay = T(1.0 - s.lr * s.weight_decay);
  const T one_minus_beta1 = T(1.0 - s.beta1);
  const T beta2 = T(s.beta2), one_minus_beta2 = T(1.0 - s.beta2);
  const T bc2_sqrt = T(std::sqrt(s.bias_correction2));
  const T eps = T(s.eps);
  const T neg_step_size = T(-(s.lr / s.bias_correction1));
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    const T g = grad[i];
    T p = param[i] * decay;
    T m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i]);  // lerp toward g by 1 - beta1
    T v = exp_avg_sq[i] * beta2;
    v = v + one_minus_beta2 * g * g;
    const T denom = std::sqrt(v) / bc2_sqrt + eps;
    param[i] = p + neg_step_size * m / denom;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
  }
}

template <class T>
void sgd_step(T* param, const T* grad, T* momentum_buffer, bool first_step, int64_t n, const SGDScalars& s) {
  const T wd = T(s.weight_decay), momentum = T(s.momentum), keep = T(1.0 - s.dampening), neg_lr = T(-s.lr);
  const bool use_momentum = s.momentum != 0.0, use_wd = s.weight_decay != 0.0;
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    T d = use_wd ? grad[i] + wd * param[i] : grad[i];
    if (use_momentum) {
      T buf = first_step ? d : momentum_buffer[i] * momentum + keep * d;
      momentum_buffer[i] = buf;
      d = s.nesterov ? d + momentum * buf : buf;
    }
    param[i] = param[i] + neg_lr * d;
  }
}

template <class T>
double sum_of_squares(const T* x, int64_t n) {
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(size_t(std::max<int64_t>(chunks, 0)), 0.0);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t c = 0; c < chunks; ++c) {
    double acc = 0.0;
    const int64_t end = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < end; ++i) acc += double(x[i]) * double(x[i]);
    partial[size_t(c)] = acc;
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

template <class T>
void scale_inplace(T* x, int64_t n, double scale) {
  const T s = T(scale);
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * s;
}

template void adamw_step<float>(float*, const float*, float*, float*, int64_t, const AdamWScalars&);
template void adamw_step<double>(double*, const double*, double*, double*, int64_t, const AdamWScalars&);
template void sgd_step<float>(float*, const float*, float*, bool, int64_t, const SGDScalars&);
template void sgd_step<double>(double*, const double*, double*, bool, int64_t, const SGDScalars&);
template double sum_of_squares<float>(const float*, int64_t);
template double sum_of_squares<double>(const double*, int64_t);
template void scale_inplace<float>(float*, int64_t, double);
template void scale_inplace<double>(double*, int64_t, double);

}  // namespace vlp::cpu
