// Image-to-token kernels on the GPU, counterparts of kernels/cpu/vision.h: adaptive max-pooling over a
// channels-last token grid with its argmax, and the deterministic backward. F32 and BF16 storage, compared
// in float. (patch_embed needs no kernel of its own: it is a strided copy into patches and a cuBLASLt
// GEMM, see autograd/vision.cpp.)
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/elementwise.h"

namespace vlp::cuda {

// x [B, H, W, C] contiguous -> y [B, oh, ow, C] and argmax [B, oh, ow, C] (I64: row * W + col of the first
// maximum of each window, PyTorch's adaptive windows, in row-major order; a NaN counts as the maximum).
void adaptive_max_pool_grid(EwDType dt, const void* x, void* y, int64_t* argmax, int64_t B, int64_t H, int64_t W,
                            int64_t C, int64_t oh, int64_t ow, cudaStream_t stream);
// dx [B, H, W, C] (fully overwritten) = the sum of dy over the output cells whose saved argmax is that
// input element. One thread per input element visits the few cells whose windows contain it, in row-major
// cell order (no atomics): the CPU kernel's order, the same bits for F32 on every run.
void adaptive_max_pool_grid_backward(EwDType dt, const void* dy, const int64_t* argmax, void* dx, int64_t B,
                                     int64_t H, int64_t W, int64_t C, int64_t oh, int64_t ow, cudaStream_t stream);

}  // namespace vlp::cuda
