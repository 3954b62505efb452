// Row normalisations over the last dim of a contiguous [rows, d] array: LayerNorm and RMSNorm (T5).
// Forward writes y and the per-row statistics backward needs (mean and rstd, or rstd), so backward
// never recomputes them. The statistics are kept in double whatever T is: a float mean of a row near 1e4
// is off by up to 5e-4, a sizeable fraction of a small spread. Backward produces dx and the parameter
// gradients in one call. Pointers marked optional may be null: no affine parameter, or that gradient
// not wanted.
#pragma once
#include <cstdint>

namespace vlp::cpu {

// y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps), var the population variance
// (two passes in double: accurate for rows with a large mean). gamma, beta optional.
template <class T>
void layer_norm_forward(const T* x, const T* gamma, const T* beta, T* y, double* mean, double* rstd, int64_t rows,
                        int64_t d, double eps);
// With xhat = (x - mean) * rstd and g = dy * gamma:
//   dx = rstd * (g - mean_row(g) - xhat * mean_row(g * xhat)),
//   dgamma = sum_rows(dy * xhat), dbeta = sum_rows(dy).
// gamma, dx, dgamma, dbeta optional; x, mean and rstd may be null when only dbeta is wanted.
// dgamma and dbeta are summed over rows in a fixed order: the same bits for any thread count.
template <class T>
void layer_norm_backward(const T* x, const double* mean, const double* rstd, const T* gamma, const T* dy, T* dx,
                         T* dgamma, T* dbeta, int64_t rows, int64_t d);

// y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps). weight optional.
template <class T>
void rms_norm_forward(const T* x, const T* weight, T* y, double* rstd, int64_t rows, int64_t d, double eps);
// With g = dy * weight: dx = rstd * (g - x * rstd^2 * mean_row(g * x)), dweight = sum_rows(dy * x * rstd).
// weight, dx, dweight optional; dweight summed in a fixed order as above.
template <class T>
void rms_norm_backward(const T* x, const double* rstd, const T* weight, const T* dy, T* dx, T* dweight,
                       int64_t rows, int64_t d);

}  // namespace vlp::cpu
