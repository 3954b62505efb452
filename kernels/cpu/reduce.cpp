// Middle-dim reductions. When inner == 1 each output is a dot-product-like sweep over one contiguous
// row; otherwise the loop walks the reduced dim outside and a block of 64 inner positions inside, so the
// reads stay contiguous and the block's accumulators stay in registers.
#include "kernels/cpu/reduce.h"

#include <algorithm>
#include <cmath>

namespace vlp::cpu {

namespace {
constexpr int64_t kBlock = 64;
}

template <class T>
void sum_dim(const T* x, T* y, int64_t outer, int64_t n, int64_t inner) {
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (outer * n > 32768)
    for (int64_t o = 0; o < outer; ++o) {
      double acc = 0.0;
      const T* row = x + o * n;
#pragma omp simd reduction(+ : acc)
      for (int64_t k = 0; k < n; ++k) acc += double(row[k]);
      y[o] = T(acc);
    }
    return;
  }
  const int64_t blocks = (inner + kBlock - 1) / kBlock;
#pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner > 32768)
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t i0 = b * kBlock, len = std::min(kBlock, inner - i0);
      double acc[kBlock] = {};
      for (int64_t k = 0; k < n; ++k) {
        const T* p = x + (o * n + k) * inner + i0;
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) acc[i] += double(p[i]);
      }
      for (int64_t i = 0; i < len; ++i) y[o * inner + i0 + i] = T(acc[i]);
    }
  }
}

template <class T>
void max_dim(const T* x, T* y, int64_t* idx, int64_t outer, int64_t n, int64_t inner) {
#pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner > 32768)
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      const T* p = x + o * n * inner + i;
      T best = p[0];
      int64_t at = 0;
      for (int64_t k = 1; k < n && !std::isnan(double(best)); ++k) {
        T v = p[k * inner];
        if (v > best || std::isnan(double(v))) best = v, at = k;
      }
      y[o * inner + i] = best;
      idx[o * inner + i] = at;
    }
  }
}

template <class T>
void scatter_dim(const T* g, const int64_t* idx, T* dx, int64_t outer, int64_t n, int64_t inner) {
#pragma omp parallel for schedule(static) if (outer * inner > 32768)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) dx[(o * n + idx[o * inner + i]) * inner + i] = g[o * inner + i];
}

template void sum_dim<float>(const float*, float*, int64_t, int64_t, int64_t);
template void sum_dim<double>(const double*, double*, int64_t, int64_t, int64_t);
template void max_dim<float>(const float*, float*, int64_t*, int64_t, int64_t, int64_t);
template void max_dim<double>(const double*, double*, int64_t*, int64_t, int64_t, int64_t);
template void scatter_dim<float>(const float*, const int64_t*, float*, int64_t, int64_t, int64_t);
template void scatter_dim<double>(const double*, const int64_t*, double*, int64_t, int64_t, int64_t);

}  // namespace vlp::cpu
