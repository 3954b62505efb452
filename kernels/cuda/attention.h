// Fused scaled-dot-product attention on the GPU with the semantics of kernels/cpu/attention.h:
//   S = scale q k^T + bias, masked (key padding, causal: key j visible to query i when j <= i + Tk - Tq)
//   positions -inf; P = softmax_rows(S); Pd = P * keep / (1 - p) with keep from the Philox stream at flat
//   element (bh * Tq + i) * Tk + j (the CPU's indices, so the masks are identical); out = Pd v.
// The forward walks the keys in chunks of the block size with an online softmax (running max and sum,
// rescaled accumulators), so no [Tq, Tk] matrix is stored; it saves one float log-sum-exp per query row
// (-inf for a row with every key masked, whose output is 0). The backward recomputes P from q, k, the
// bias, the masks and lse: one kernel per query row for dq, one per key row for dk and dv (no atomics:
// deterministic). dbias, when wanted, goes through a [B, H, Tq, Tk] float scratch summed over the bias's
// broadcast batch/head dims by a third kernel.
// This is a straightforward block-per-row design, correct by construction rather than tuned: dot products
// are per thread over D, without tensor cores. F32 or BF16 storage, float math.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/elementwise.h"

namespace vlp::cuda {

struct AttentionArgs {
  EwDType dtype = EwDType::F32;  // q, k, v, bias, out, dout, dq, dk, dv, dbias
  int64_t B = 0, H = 0, Tq = 0, Tk = 0, D = 0, Dv = 0;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t q_strides[3] = {}, k_strides[3] = {}, v_strides[3] = {};  // batch, head, row; unit last-dim stride
  const void* bias = nullptr;                                       // additive, optional
  int64_t bias_strides[4] = {};                                     // b, h, i, j (0 broadcasts)
  const bool* key_keep = nullptr;                                   // [B, Tk], false = masked, optional
  bool causal = false;
  double scale = 1.0;
  double dropout_p = 0.0;
  uint64_t seed = 0, offset = 0;
};

// Largest head dims the kernels take (accumulators live in registers, 4 per thread of a 128-thread block).
constexpr int64_t kAttentionMaxHeadDim = 512;

// out [B, H, Tq, Dv] contiguous; lse [B, H, Tq] float.
void attention_forward(const AttentionArgs& a, void* out, float* lse, cudaStream_t stream);

// From dout [B, H, Tq, Dv] contiguous and the forward's out and lse: dq [B, H, Tq, D], dk [B, H, Tk, D],
// dv [B, H, Tk, Dv] contiguous (each optional), and dbias (optional) contiguous [dbias_B, dbias_H, Tq, Tk]
// with dbias_B in {1, B} and dbias_H in {1, H}: the bias gradient summed over the dims the bias broadcast.
void attention_backward(const AttentionArgs& a, const void* out, const float* lse, const void* dout, void* dq,
                        void* dk, void* dv, void* dbias, int64_t dbias_B, int64_t dbias_H, cudaStream_t stream);

// Which implementation attention_forward / attention_backward run (all write the same lse, so a backward
// can read what any of them wrote):
//   Rows        the block-per-row kernels of this file (attention_forward_rows / attention_backward_rows):
//               any dtype, mask, bias, dropout and head dim up to 512;
//   TensorCore  the tiled mma.sync kernels (attention_tc.h): BF16, head dims multiples of 8 up to 128,
//               aligned rows; a call they cannot take fails with a message naming the limit;
//   Cudnn       cuDNN's fused flash attention (attention_cudnn.h), for comparison: BF16 only, no dropout;
//               a call it cannot take fails with a message naming the limit;
//   Auto        TensorCore wherever it takes the call (attention_tc_supported and aligned buffers), else
//               Rows: the only choice that falls back, since it is not a comparison.
// Fixed choices never fall back (a silent fallback would fake a timing comparison). The selection starts
// from the environment variable VLP_ATTENTION = auto | rows | tensor_core | cudnn, read once on first use
// (another value is an error naming the variable and the allowed values); set_attention_impl overrides it
// for the whole process (tests, benchmarks).
enum class AttentionImpl { Auto, Rows, TensorCore, Cudnn };
AttentionImpl attention_impl();
void set_attention_impl(AttentionImpl impl);
// "auto" / "rows" / "tensor_core" / "cudnn" (also "" = auto); anything else throws std::runtime_error naming
// VLP_ATTENTION.
AttentionImpl parse_attention_impl(const char* value);
const char* attention_impl_name(AttentionImpl impl);

// The Rows implementation itself, whatever the selection.
void attention_forward_rows(const AttentionArgs& a, void* out, float* lse, cudaStream_t stream);
void attention_backward_rows(const AttentionArgs& a, const void* out, const float* lse, const void* dout, void* dq,
                             void* dk, void* dv, void* dbias, int64_t dbias_B, int64_t dbias_H, cudaStream_t stream);

}  // namespace vlp::cuda
