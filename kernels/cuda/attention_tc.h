// Tiled tensor-core flash attention for BF16 (FlashAttention-2 style): the same semantics and output
// contract as cuda::attention_forward / attention_backward (attention.h) — causal with the Tk - Tq offset,
// key padding, additive bias with broadcast strides, Philox dropout at the CPU's element indices
// (bh * Tq + i) * Tk + j, lse in natural log per query row (-inf for a fully masked row, whose output is
// 0) — computed with mma.sync m16n8k16 (bf16 in, fp32 accumulation, fp32 softmax statistics).
// Never run on a GPU yet (see kernels/cuda/README.md). Which implementation an op uses is decided by the
// caller: these functions only refuse arguments attention_tc_supported rejects.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/attention.h"

namespace vlp::cuda {

// True when the tensor-core kernels take these arguments: BF16; D == Dv, a multiple of 8, at most 128;
// q, k, v 16-byte aligned with batch/head/row strides multiples of 8 elements (a stride of a dim of size 1
// is ignored); dropout_p in [0, 1). Host-only: touches no device.
bool attention_tc_supported(const AttentionArgs& a);

// out [B, H, Tq, D] contiguous (4-byte aligned), lse [B, H, Tq] float.
void attention_forward_tc(const AttentionArgs& a, void* out, float* lse, cudaStream_t stream);

// As cuda::attention_backward: out and dout [B, H, Tq, D] contiguous (dout 16-byte aligned, out 4-byte),
// dq [B, H, Tq, D], dk and dv [B, H, Tk, D] contiguous (each optional, 4-byte aligned), dbias (optional)
// contiguous [dbias_B, dbias_H, Tq, Tk] with dbias_B in {1, B}, dbias_H in {1, H}. Deterministic: no atomics.
void attention_backward_tc(const AttentionArgs& a, const void* out, const float* lse, const void* dout, void* dq,
                           void* dk, void* dv, void* dbias, int64_t dbias_B, int64_t dbias_H, cudaStream_t stream);

}  // namespace vlp::cuda
