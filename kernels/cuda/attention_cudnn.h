// Scaled-dot-product attention through cuDNN's fused flash-attention engine (cuDNN 9 backend graph API),
// with the contract of attention.h: same AttentionArgs, out [B, H, Tq, Dv] contiguous, lse [B, H, Tq] float
// (cuDNN's softmax "stats": max + log(sum exp) of the scaled, biased, masked scores, i.e. the natural-log
// LSE our kernels save), and the backward from out and lse. Selected with VLP_ATTENTION=cudnn (attention.h)
// to compare timings and results with our kernels; it never falls back to them.
//
// What it takes (cudnn_attention_check says why not, before touching the device):
//   BF16 storage (the fused engine computes from fp16/bf16; F32 is refused), head dims D and Dv multiples
//   of 8 up to 128; q/k/v with unit last stride, 16-byte aligned rows (strides multiples of 8 elements,
//   pointers 16-byte aligned) in any [B, H, T, D] / [B, T, H, D] order; no dropout (cuDNN's RNG would give
//   masks other than our Philox stream, so training with attention dropout stays on our kernels); causal
//   only with Tq == Tk (our mask is aligned bottom-right, which for Tq != Tk cuDNN only takes without bias
//   and padding); the additive bias [1 or B, 1 or H, Tq, Tk] with its gradient dbias in the same shape.
// Key padding (our key_keep is an arbitrary Bool [B, Tk] mask, not necessarily a prefix) is folded into
// the additive bias: a [B, 1 or H, Tq, Tk] BF16 scratch holding the bias (or 0) where the key is kept and
// -inf (the largest negative BF16 before cuDNN 9.10) where it is not, built on the stream with
// cuda::where; its gradient is summed over the batch into dbias when the user's bias had no batch dim.
// This costs one [B, H, Tq, Tk] write and read per call (and the same for dbias), but needs no host
// synchronisation and takes any mask. A query row whose keys are all masked is not supported (our kernels
// output 0 there; cuDNN's result is undefined): the tests never build one.
//
// Built plans are cached per shape and configuration (device, direction, sizes, strides, bias layout,
// causal, dbias); the workspace comes from the caching allocator on the call's stream; one cudnnHandle per
// device, created on first use (never at static initialisation), bound to the stream with cudnnSetStream.
// Every cuDNN status is checked; a failure throws std::runtime_error naming the call, cudnnGetErrorString
// and cuDNN's last error message. Plans use cuDNN's heuristics (mode A, then the fallback list); the
// backward without dbias accumulates dq with atomics in cuDNN (not bit-for-bit deterministic).
//
// Built without cuDNN (CMake did not find it; VLP_CUDNN_ROOT points CMake at an install), every entry
// point throws "built without cuDNN".
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/attention.h"

namespace vlp::cuda {

// True when this build links cuDNN.
bool cudnn_built();
// cudnnGetVersion() (e.g. 91900 for 9.19.0) of the loaded library, 0 when built without cuDNN.
int64_t cudnn_version();

// Throws std::runtime_error naming the first limit the call exceeds (see above); touches no device.
// backward: also checks the backward-only limits (Tq = Tk = 1; dbias layout and cuDNN version).
void cudnn_attention_check(const AttentionArgs& a, bool backward, const void* dbias = nullptr, int64_t dbias_B = 1,
                           int64_t dbias_H = 1);

void cudnn_attention_forward(const AttentionArgs& a, void* out, float* lse, cudaStream_t stream);
void cudnn_attention_backward(const AttentionArgs& a, const void* out, const float* lse, const void* dout, void* dq,
                              void* dk, void* dv, void* dbias, int64_t dbias_B, int64_t dbias_H,
                              cudaStream_t stream);

}  // namespace vlp::cuda
