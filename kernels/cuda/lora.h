// The fused half of the LoRA path: y = base(x) + scale * B (A dropout(x)). The down-projection with its
// dropout is one kernel (the dropped activations are never stored: the mask is regenerated from Philox
// in the backward, with the element indices of a dropout over the contiguous [m, k] input, as the CPU's
// dropout uses); the up-projection is accumulated straight into the base GEMM's output with cuda::gemm
// (beta = 1, alpha = scale), so there is no extra pass over the activations.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/elementwise.h"

namespace vlp::cuda {

constexpr int64_t kLoraMaxRank = 64;

// h[i, r] = sum_j dropout(x)[i, j] * a[r, j] for x [m, k] (row stride ldx), a [rank, k] contiguous, h
// [m, rank] contiguous, all of dtype dt; dropout(x)[i, j] = x[i, j] / (1 - p) or 0 for element i * k + j
// of the Philox stream (seed, offset); p = 0 disables it. rank <= kLoraMaxRank.
void lora_down_dropout(EwDType dt, const void* x, int64_t ldx, const void* a, void* h, int64_t m, int64_t k,
                       int64_t rank, double p, uint64_t seed, uint64_t offset, cudaStream_t stream);

}  // namespace vlp::cuda
