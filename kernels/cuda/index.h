// Index kernels on the GPU, counterparts of kernels/cpu/{reduce,index}.h: max along a dim with its
// argmax and the scatter that is its backward, index_select (any dtype, a byte copy) and its
// deterministic accumulating backward index_add, gather along one dim (any dtype, a byte copy) and the
// deterministic scatter_add that is its backward. max/index_select/index_add arrays are contiguous
// [outer, n, inner]; gather/scatter_add walk the index's shape with per-operand strides. Indices are I64
// on the device and already checked to be in range (an index out of range is skipped, never
// dereferenced).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "kernels/cuda/elementwise.h"

namespace vlp::cuda {

// y[o, i] = max_j x[o, j, i], idx[o, i] = the first j reaching it (a NaN counts as the maximum).
void max_dim(EwDType dt, const void* x, void* y, int64_t* idx, int64_t outer, int64_t n, int64_t inner,
             cudaStream_t stream);
// dx[o, idx[o, i], i] += g[o, i]; dx [outer, n, inner] zeroed by the caller.
void scatter_dim(EwDType dt, const void* g, const int64_t* idx, void* dx, int64_t outer, int64_t n, int64_t inner,
                 cudaStream_t stream);
// out [outer, m, inner] = x [outer, n, inner] at rows index[0..m); elements of elem_size bytes (1, 2, 4, 8).
void index_select(int elem_size, const void* x, const int64_t* index, void* out, int64_t outer, int64_t n, int64_t m,
                  int64_t inner, cudaStream_t stream);
// dx [outer, n, inner] += g [outer, m, inner] at rows index[0..m); repeated rows summed in index order
// (the index is grouped on the host: one synchronisation), so the result is the same bits every run.
void index_add(EwDType dt, const void* g, const int64_t* index, void* dx, int64_t outer, int64_t n, int64_t m,
               int64_t inner, cudaStream_t stream);

// out[p] = x[p with coordinate dim replaced by index[p]] for every position p of `shape` (the index's
// shape, at most 8 dims), as cpu::gather: elements of elem_size bytes (1, 2, 4, 8) are copied, so any
// dtype works. out and index are contiguous; x has its own element strides and x_dim_size elements
// along dim (an index outside [0, x_dim_size) writes zero bytes).
void gather(int elem_size, const std::vector<int64_t>& shape, int64_t dim, const void* x, const int64_t* x_strides,
            int64_t x_dim_size, const int64_t* index, void* out, cudaStream_t stream);
// out[p with coordinate dim replaced by index[p]] += src[p] for every position p of `shape`, as
// cpu::scatter_add: index contiguous, out and src with their own element strides (out has out_dim_size
// elements along dim). Deterministic without atomics: the index is brought to the host (one
// synchronisation) and the positions grouped by target element (a stable sort), so each target adds its
// contributions in the index's row-major order starting from its old value, in float, the order of the
// serial CPU kernel (the same bits for F32).
void scatter_add(EwDType dt, const std::vector<int64_t>& shape, int64_t dim, void* out, const int64_t* out_strides,
                 int64_t out_dim_size, const int64_t* index, const void* src, const int64_t* src_strides,
                 cudaStream_t stream);

// The host half of scatter_add, exposed so that it can be tested without a GPU: positions p of `shape`
// (row-major) whose index (host memory) is in range, grouped by their target element offset in out.
// Target u (offsets in increasing order) adds src[src_offset[k]] for k in [start[u], start[u + 1]), in
// the index's row-major order.
struct ScatterPlan {
  std::vector<int64_t> target, start, src_offset;
};
ScatterPlan plan_scatter_add(const std::vector<int64_t>& shape, int64_t dim, const int64_t* out_strides,
                             int64_t out_dim_size, const int64_t* host_index, const int64_t* src_strides);

}  // namespace vlp::cuda
