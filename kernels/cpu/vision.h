// Adaptive max-pooling over a channels-last token grid, with the argmax saved for the backward.
#pragma once
#include <cstdint>

namespace vlp::cpu {

// Window [start, end) of output cell i of n over an input of size len (PyTorch's adaptive rule):
// start = floor(i * len / n), end = ceil((i + 1) * len / n).
inline int64_t adaptive_start(int64_t i, int64_t len, int64_t n) { return (i * len) / n; }
inline int64_t adaptive_end(int64_t i, int64_t len, int64_t n) { return ((i + 1) * len + n - 1) / n; }

// x [B, H, W, C] contiguous -> y [B, oh, ow, C] and argmax [B, oh, ow, C] (row * W + col of the first
// maximum of each window in row-major order; NaN counts as the maximum).
template <class T>
void adaptive_max_pool_grid(const T* x, T* y, int64_t* argmax, int64_t B, int64_t H, int64_t W, int64_t C,
                            int64_t oh, int64_t ow);
// dx [B, H, W, C] (zeroed by the caller) += dy at the saved argmax positions; overlapping windows that
// share a maximum add up.
template <class T>
void adaptive_max_pool_grid_backward(const T* dy, const int64_t* argmax, T* dx, int64_t B, int64_t H, int64_t W,
                                     int64_t C, int64_t oh, int64_t ow);

}  // namespace vlp::cpu
