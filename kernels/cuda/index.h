// Index kernels on the GPU, counterparts of kernels/cpu/{reduce,index}.h: max along a dim with its
// argmax and the scatter that is its backward, index_select (any dtype, a byte copy) and its
// deterministic accumulating backward index_add. Arrays are contiguous [outer, n, inner]; indices I64 on
// the device and already checked to be in range (an index out of range is skipped, never dereferenced).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

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

}  // namespace vlp::cuda
