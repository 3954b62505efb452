// Indexing kernels: picking rows by an index (index_select and its accumulating backward), gather and
// scatter_add along one dim (torch semantics), and an elementwise select (where / masked_fill).
// Indices are I64 and already checked to be in range by the caller (first_out_of_range). The
// data-movement kernels are instantiated for float, double, int32_t, int64_t, uint8_t and bool; the
// accumulating ones (index_add, scatter_add) for float, double, int32_t and int64_t.
#pragma once
#include <cstdint>
#include <vector>

namespace vlp::cpu {

// Position of the first index outside [0, size), or -1 when all are in range.
int64_t first_out_of_range(const int64_t* index, int64_t n, int64_t size);

// out [outer, m, inner] = x [outer, n, inner] at rows index[0..m) of the middle dim (all contiguous).
template <class T>
void index_select(const T* x, const int64_t* index, T* out, int64_t outer, int64_t n, int64_t m, int64_t inner);
// dx [outer, n, inner] += g [outer, m, inner] at rows index[0..m). Repeated rows are summed in the
// order of the index, so the result does not depend on the thread count.
template <class T>
void index_add(const T* g, const int64_t* index, T* dx, int64_t outer, int64_t n, int64_t m, int64_t inner);

// out[p] = x[p with coordinate dim replaced by index[p]] for every position p of `shape` (the index's
// shape). out and index are contiguous; x has its own strides (elements).
template <class T>
void gather(const std::vector<int64_t>& shape, int64_t dim, const T* x, const int64_t* x_strides,
            const int64_t* index, T* out);
// out[p with coordinate dim replaced by index[p]] += src[p] for every position p of `shape`. index is
// contiguous; out and src have their own strides. Serial, so repeated targets sum in a fixed order.
template <class T>
void scatter_add(const std::vector<int64_t>& shape, int64_t dim, T* out, const int64_t* out_strides,
                 const int64_t* index, const T* src, const int64_t* src_strides);

// out = cond ? a : b over one shape with per-operand strides (stride 0 broadcasts).
template <class T>
void where(const std::vector<int64_t>& shape, T* out, const int64_t* out_strides, const bool* cond,
           const int64_t* cond_strides, const T* a, const int64_t* a_strides, const T* b, const int64_t* b_strides);

}  // namespace vlp::cpu
