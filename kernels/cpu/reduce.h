// Reductions over the middle dim of a contiguous [outer, n, inner] array (any run of adjacent dims of a
// contiguous tensor has this shape). Sums accumulate in double.
#pragma once
#include <cstdint>

namespace vlp::cpu {

template <class T> void sum_dim(const T* x, T* y, int64_t outer, int64_t n, int64_t inner);
// y = max over the dim, idx = position of the first maximum (NaN counts as the maximum).
template <class T> void max_dim(const T* x, T* y, int64_t* idx, int64_t outer, int64_t n, int64_t inner);
// dx (zeroed by the caller) [outer, n, inner] gets g[o, i] at position idx[o, i] of the middle dim.
template <class T> void scatter_dim(const T* g, const int64_t* idx, T* dx, int64_t outer, int64_t n, int64_t inner);

}  // namespace vlp::cpu
