// Softmax / log-softmax along the middle dim of [outer, n, inner], max-subtracted so exp never
// overflows; row sums accumulate in double. When inner == 1 each row is a contiguous sweep; otherwise
// the loops walk the reduced dim outside and a block of up to 64 inner positions inside, so reads stay
// contiguous and the block's running max and sums stay in small arrays.
#include "kernels/cpu/softmax.h"

#include <algorithm>
#include <cmath>

namespace vlp::cpu {

namespace {

constexpr int64_t kBlock = 64;

template <class T>
void softmax_row(const T* x, T* y, int64_t n, bool log) {
  T m = x[0];
  for (int64_t k = 1; k < n; ++k) m = std::max(m, x[k]);
  double sum = 0.0;
  if (log) {
    for (int64_t k = 0; k < n; ++k) sum += double(std::exp(x[k] - m));
    const T shift = m + T(std::log(sum));
    for (int64_t k = 0; k < n; ++k) y[k] = x[k] - shift;
  } else {
    for (int64_t k = 0; k < n; ++k) {
      y[k] = std::exp(x[k] - m);
      sum += double(y[k]);
    }
    const T inv = T(1.0 / sum);
    for (int64_t k = 0; k < n; ++k) y[k] *= inv;
  }
}

// Rows (o, i0 .. i0+len) of the [outer, n, inner] layout: element k of column i is at p[k * inner + i].
template <class T>
void softmax_block(const T* x, T* y, int64_t n, int64_t inner, int64_t len, bool log) {
  T m[kBlock];
  double sum[kBlock] = {};
  for (int64_t i = 0; i < len; ++i) m[i] = x[i];
  for (int64_t k = 1; k < n; ++k)
    for (int64_t i = 0; i < len; ++i) m[i] = std::max(m[i], x[k * inner + i]);
  for (int64_t k = 0; k < n; ++k)
    for (int64_t i = 0; i < len; ++i) sum[i] += double(std::exp(x[k * inner + i] - m[i]));
  T shift[kBlock];
  for (int64_t i = 0; i < len; ++i) shift[i] = log ? m[i] + T(std::log(sum[i])) : T(1.0 / sum[i]);
  for (int64_t k = 0; k < n; ++k)
    for (int64_t i = 0; i < len; ++i) {
      const T v = x[k * inner + i];
      y[k * inner + i] = log ? v - shift[i] : std::exp(v - m[i]) * shift[i];
    }
}

template <class T>
void softmax_backward_row(const T* y, const T* dy, T* dx, int64_t n, bool log) {
  double s = 0.0;
  if (log) {
    for (int64_t k = 0; k < n; ++k) s += double(dy[k]);
    const T st = T(s);
    for (int64_t k = 0; k < n; ++k) dx[k] = dy[k] - std::exp(y[k]) * st;
  } else {
    for (int64_t k = 0; k < n; ++k) s += double(dy[k]) * double(y[k]);
    const T st = T(s);
    for (int64_t k = 0; k < n; ++k) dx[k] = y[k] * (dy[k] - st);
  }
}

template <class T>
void softmax_backward_block(const T* y, const T* dy, T* dx, int64_t n, int64_t inner, int64_t len, bool log) {
  double s[kBlock] = {};
  for (int64_t k = 0; k < n; ++k)
    for (int64_t i = 0; i < len; ++i) {
      const int64_t at = k * inner + i;
      s[i] += log ? double(dy[at]) : double(dy[at]) * double(y[at]);
    }
  T st[kBlock];
  for (int64_t i = 0; i < len; ++i) st[i] = T(s[i]);
  for (int64_t k = 0; k < n; ++k)
    for (int64_t i = 0; i < len; ++i) {
      const int64_t at = k * inner + i;
      dx[at] = log ? dy[at] - std::exp(y[at]) * st[i] : y[at] * (dy[at] - st[i]);
    }
}

}  // namespace

template <class T>
void softmax_forward(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (outer * n * inner == 0) return;
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (outer * n > 32768 && outer > 1)
    for (int64_t o = 0; o < outer; ++o) softmax_row(x + o * n, y + o * n, n, log);
    return;
  }
  const int64_t blocks = (inner + kBlock - 1) / kBlock;
#pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner > 32768)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t at = o * n * inner + b * kBlock;
      softmax_block(x + at, y + at, n, inner, std::min(kBlock, inner - b * kBlock), log);
    }
}

template <class T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (outer * n * inner == 0) return;
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (outer * n > 32768 && outer > 1)
    for (int64_t o = 0; o < outer; ++o) softmax_backward_row(y + o * n, dy + o * n, dx + o * n, n, log);
    return;
  }
  const int64_t blocks = (inner + kBlock - 1) / kBlock;
#pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner > 32768)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t at = o * n * inner + b * kBlock;
      softmax_backward_block(y + at, dy + at, dx + at, n, inner, std::min(kBlock, inner - b * kBlock), log);
    }
}

template void softmax_forward<float>(const float*, float*, int64_t, int64_t, int64_t, bool);
template void softmax_forward<double>(const double*, double*, int64_t, int64_t, int64_t, bool);
template void softmax_backward<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, bool);
template void softmax_backward<double>(const double*, const double*, double*, int64_t, int64_t, int64_t, bool);

}  // namespace vlp::cpu
