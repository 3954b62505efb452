// LayerNorm and RMSNorm kernels. Rows are independent, so forward and dx run one row per iteration in
// parallel, with row statistics accumulated in double over 8 interleaved partial sums (a fixed order, so
// results do not depend on the thread count, and one the compiler can keep in vector registers instead
// of waiting on one add chain). The parameter gradients are sums over rows: they
// run in parallel over blocks of columns, each block summing its rows in order, so the result does not
// depend on how many threads ran it.
#include "kernels/cpu/norm.h"

#include <algorithm>
#include <cmath>

namespace vlp::cpu {

namespace {

constexpr int64_t kColumnBlock = 64;

bool parallel_rows(int64_t rows, int64_t d) { return rows > 1 && rows * d > 16384; }

// sum_j f(j) for j in [0, d) in double: partial sum k takes j = k, k + 8, ..., combined pairwise.
template <class F>
double row_sum(int64_t d, F f) {
  constexpr int64_t kLanes = 8;
  double acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes)
    for (int64_t k = 0; k < kLanes; ++k) acc[k] += f(j + k);
  double tail = 0.0;
  for (; j < d; ++j) tail += f(j);
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

// out[j] = sum_r f(r, j) for j in [0, d), summed over r in order, in double; parallel over column blocks.
template <class T, class F>
void column_sums(T* out, int64_t rows, int64_t d, F f) {
  const int64_t blocks = (d + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (blocks > 1 && rows * d > 16384)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t j0 = b * kColumnBlock, len = std::min(kColumnBlock, d - j0);
    double acc[kColumnBlock] = {};
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < len; ++j) acc[j] += f(r, j0 + j);
    for (int64_t j = 0; j < len; ++j) out[j0 + j] = T(acc[j]);
  }
}

}  // namespace

template <class T>
void layer_norm_forward(const T* x, const T* gamma, const T* beta, T* y, double* mean, double* rstd, int64_t rows,
                        int64_t d, double eps) {
#pragma omp parallel for schedule(static) if (parallel_rows(rows, d))
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    const double mu = row_sum(d, [&](int64_t j) { return double(xr[j]); }) / double(d);
    // second pass on centred values: no cancellation when |mean| >> std
    const double ss = row_sum(d, [&](int64_t j) {
      const double c = double(xr[j]) - mu;
      return c * c;
    });
    const double inv = 1.0 / std::sqrt(ss / double(d) + eps);
    mean[r] = mu;
    rstd[r] = inv;
    for (int64_t j = 0; j < d; ++j) {
      double v = (double(xr[j]) - mu) * inv;
      if (gamma) v *= double(gamma[j]);
      if (beta) v += double(beta[j]);
      yr[j] = T(v);
    }
  }
}

template <class T>
void layer_norm_backward(const T* x, const double* mean, const double* rstd, const T* gamma, const T* dy, T* dx,
                         T* dgamma, T* dbeta, int64_t rows, int64_t d) {
  if (dx) {
#pragma omp parallel for schedule(static) if (parallel_rows(rows, d))
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * d;
      const T* gr = dy + r * d;
      const double mu = mean[r], inv = rstd[r];
      auto g_at = [&](int64_t j) { return gamma ? double(gr[j]) * double(gamma[j]) : double(gr[j]); };
      const double sum_g = row_sum(d, g_at);
      const double sum_gx = row_sum(d, [&](int64_t j) { return g_at(j) * (double(xr[j]) - mu) * inv; });
      const double a = sum_g / double(d), b = sum_gx / double(d);
      for (int64_t j = 0; j < d; ++j) {
        const double g = gamma ? double(gr[j]) * double(gamma[j]) : double(gr[j]);
        const double xhat = (double(xr[j]) - mu) * inv;
        dx[r * d + j] = T(inv * (g - a - xhat * b));
      }
    }
  }
  if (dgamma)
    column_sums(dgamma, rows, d, [&](int64_t r, int64_t j) {
      return double(dy[r * d + j]) * (double(x[r * d + j]) - mean[r]) * rstd[r];
    });
  if (dbeta) column_sums(dbeta, rows, d, [&](int64_t r, int64_t j) { return double(dy[r * d + j]); });
}

template <class T>
void rms_norm_forward(const T* x, const T* weight, T* y, double* rstd, int64_t rows, int64_t d, double eps) {
#pragma omp parallel for schedule(static) if (parallel_rows(rows, d))
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    const double ss = row_sum(d, [&](int64_t j) { return double(xr[j]) * double(xr[j]); });
    const double inv = 1.0 / std::sqrt(ss / double(d) + eps);
    rstd[r] = inv;
    for (int64_t j = 0; j < d; ++j) {
      double v = double(xr[j]) * inv;
      if (weight) v *= double(weight[j]);
      y[r * d + j] = T(v);
    }
  }
}

template <class T>
void rms_norm_backward(const T* x, const double* rstd, const T* weight, const T* dy, T* dx, T* dweight,
                       int64_t rows, int64_t d) {
  if (dx) {
#pragma omp parallel for schedule(static) if (parallel_rows(rows, d))
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * d;
      const T* gr = dy + r * d;
      const double inv = rstd[r];
      const double sum_gx = row_sum(d, [&](int64_t j) {
        const double g = weight ? double(gr[j]) * double(weight[j]) : double(gr[j]);
        return g * double(xr[j]);
      });
      const double c = inv * inv * sum_gx / double(d);
      for (int64_t j = 0; j < d; ++j) {
        const double g = weight ? double(gr[j]) * double(weight[j]) : double(gr[j]);
        dx[r * d + j] = T(inv * (g - double(xr[j]) * c));
      }
    }
  }
  if (dweight)
    column_sums(dweight, rows, d, [&](int64_t r, int64_t j) {
      return double(dy[r * d + j]) * double(x[r * d + j]) * rstd[r];
    });
}

#define VLP_INSTANTIATE(T)                                                                                   \
  template void layer_norm_forward<T>(const T*, const T*, const T*, T*, double*, double*, int64_t, int64_t,  \
                                      double);                                                               \
  template void layer_norm_backward<T>(const T*, const double*, const double*, const T*, const T*, T*, T*, T*, \
                                       int64_t, int64_t);                                                    \
  template void rms_norm_forward<T>(const T*, const T*, T*, double*, int64_t, int64_t, double);              \
  template void rms_norm_backward<T>(const T*, const double*, const T*, const T*, T*, T*, int64_t, int64_t);
VLP_INSTANTIATE(float)
VLP_INSTANTIATE(double)
#undef VLP_INSTANTIATE

}  // namespace vlp::cpu
