// Random fills and the dropout mask, one Philox block (four values) per iteration.
#include "kernels/cpu/random.h"

#include <cmath>

#include "kernels/philox.h"

namespace vlp::cpu {

template <class T>
void random_uniform(T* out, int64_t n, uint64_t seed, uint64_t offset, double lo, double hi) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t b = 0; b < int64_t(philox_blocks(n)); ++b) {
    Philox4 r = philox_block(seed, offset, uint64_t(b));
    for (int j = 0; j < 4 && 4 * b + j < n; ++j) out[4 * b + j] = T(lo + (hi - lo) * double(philox_uniform(r.x[j])));
  }
}

template <class T>
void random_normal(T* out, int64_t n, uint64_t seed, uint64_t offset, double mean, double std) {
  const double two_pi = 6.283185307179586;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t b = 0; b < int64_t(philox_blocks(n)); ++b) {
    Philox4 r = philox_block(seed, offset, uint64_t(b));
    for (int pair = 0; pair < 2; ++pair) {
      double u1 = 1.0 - double(philox_uniform(r.x[2 * pair]));  // (0, 1]: log is finite
      double u2 = double(philox_uniform(r.x[2 * pair + 1]));
      double radius = std::sqrt(-2.0 * std::log(u1));
      int64_t i = 4 * b + 2 * pair;
      if (i < n) out[i] = T(mean + std * radius * std::cos(two_pi * u2));
      if (i + 1 < n) out[i + 1] = T(mean + std * radius * std::sin(two_pi * u2));
    }
  }
}

template <class T>
void dropout(const T* x, T* y, int64_t n, double p, uint64_t seed, uint64_t offset) {
  const float threshold = float(p);
  const T scale = T(1.0 / (1.0 - p));
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t b = 0; b < int64_t(philox_blocks(n)); ++b) {
    Philox4 r = philox_block(seed, offset, uint64_t(b));
    for (int j = 0; j < 4 && 4 * b + j < n; ++j) {
      int64_t i = 4 * b + j;
      y[i] = philox_uniform(r.x[j]) < threshold ? T(0) : x[i] * scale;
    }
  }
}

template void random_uniform<float>(float*, int64_t, uint64_t, uint64_t, double, double);
template void random_uniform<double>(double*, int64_t, uint64_t, uint64_t, double, double);
template void random_normal<float>(float*, int64_t, uint64_t, uint64_t, double, double);
template void random_normal<double>(double*, int64_t, uint64_t, uint64_t, double, double);
template void dropout<float>(const float*, float*, int64_t, double, uint64_t, uint64_t);
template void dropout<double>(const double*, double*, int64_t, double, uint64_t, uint64_t);

}  // namespace vlp::cpu
