// Loss kernels. Cross-entropy works one row at a time: a max pass, then one pass for the sum of
// exponentials and the sum of logits (for label smoothing), both in double; backward turns the saved
// logsumexp back into probabilities on the fly. Rows are independent and run in parallel.
#include "kernels/cpu/loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace vlp::cpu {

namespace {
constexpr int64_t kChunk = 4096;  // elements per partial sum in bce_with_logits_forward
}

template <class T>
void cross_entropy_forward(const T* logits, const int64_t* target, const T* sample_weight, int64_t n, int64_t c,
                           int64_t ignore_index, double eps, double* loss, double* lse, double* raw_loss) {
#pragma omp parallel for schedule(static) if (n > 1 && n * c > 32768)
  for (int64_t i = 0; i < n; ++i) {
    if (target[i] == ignore_index) {
      loss[i] = 0.0, lse[i] = 0.0;
      if (raw_loss) raw_loss[i] = 0.0;
      continue;
    }
    const T* row = logits + i * c;
    T m = row[0];
    for (int64_t k = 1; k < c; ++k) m = std::max(m, row[k]);
    double sum_exp = 0.0, sum_x = 0.0;
    for (int64_t k = 0; k < c; ++k) {
      sum_exp += double(std::exp(row[k] - m));
      sum_x += double(row[k]);
    }
    const double l = double(m) + std::log(sum_exp);
    double raw = (1.0 - eps) * (l - double(row[target[i]]));
    if (eps != 0.0) raw += eps * (l - sum_x / double(c));
    lse[i] = l;
    if (raw_loss) raw_loss[i] = raw;
    loss[i] = sample_weight ? raw * double(sample_weight[i]) : raw;
  }
}

template <class T>
void cross_entropy_backward(const T* logits, const int64_t* target, const T* sample_weight, const double* lse,
                            const double* raw_loss, const T* dloss, int64_t dloss_stride, double scale, int64_t n,
                            int64_t c, int64_t ignore_index, double eps, T* dlogits, T* dweight) {
  const double uniform = eps / double(c);
#pragma omp parallel for schedule(static) if (n > 1 && n * c > 32768)
  for (int64_t i = 0; i < n; ++i) {
    const bool ignored = target[i] == ignore_index;
    const double g = ignored ? 0.0 : double(dloss[i * dloss_stride]) * scale;
    if (dweight) dweight[i] = T(g * raw_loss[i]);
    if (!dlogits) continue;
    T* out = dlogits + i * c;
    if (ignored) {
      std::fill(out, out + c, T(0));
      continue;
    }
    const double gw = sample_weight ? g * double(sample_weight[i]) : g;
    const T* row = logits + i * c;
    // exp in T: float exp is several times cheaper, and the probabilities need no more than T holds.
    const T l = T(lse[i]), scaled = T(gw), shift = T(gw * uniform);
    for (int64_t k = 0; k < c; ++k) out[k] = scaled * std::exp(row[k] - l) - shift;
    out[target[i]] -= T(gw * (1.0 - eps));
  }
}

template <class T>
double bce_with_logits_forward(const T* x, const T* t, T* loss, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(size_t(chunks), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t b = 0; b < chunks; ++b) {
    double s = 0.0;
    for (int64_t i = b * kChunk; i < std::min(n, (b + 1) * kChunk); ++i) {
      const double v = double(x[i]);
      const double l = std::max(v, 0.0) - v * double(t[i]) + std::log1p(std::exp(-std::abs(v)));
      if (loss) loss[i] = T(l);
      s += l;
    }
    partial[size_t(b)] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

template <class T>
void bce_with_logits_backward(const T* x, const T* t, const T* dloss, int64_t dloss_stride, double scale, int64_t n,
                              T* dx, T* dt) {
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    const double g = double(dloss[i * dloss_stride]) * scale, v = double(x[i]);
    if (dx) dx[i] = T(g * (1.0 / (1.0 + std::exp(-v)) - double(t[i])));
    if (dt) dt[i] = T(-g * v);
  }
}

#define VLP_INSTANTIATE(T)                                                                                       \
  template void cross_entropy_forward<T>(const T*, const int64_t*, const T*, int64_t, int64_t, int64_t, double,  \
                                         double*, double*, double*);                                             \
  template void cross_entropy_backward<T>(const T*, const int64_t*, const T*, const double*, const double*,      \
                                          const T*, int64_t, double, int64_t, int64_t, int64_t, double, T*, T*); \
  template double bce_with_logits_forward<T>(const T*, const T*, T*, int64_t);                                   \
  template void bce_with_logits_backward<T>(const T*, const T*, const T*, int64_t, double, int64_t, T*, T*);
VLP_INSTANTIATE(float)
VLP_INSTANTIATE(double)
#undef VLP_INSTANTIATE

}  // namespace vlp::cpu
