// Scaled-dot-product attention, flash-attention style: the forward keeps only the output and one
// log-sum-exp per query row; the backward recomputes each head's probabilities from q, k, the bias, the
// masks and the saved log-sum-exp, and regenerates the dropout mask from its Philox (seed, offset).
//
//   S = scale * q k^T + bias, masked positions = -inf       (per head, [Tq, Tk])
//   P = softmax_rows(S),  lse_i = log sum_j exp(S_ij)      (a row with every key masked: P = 0, lse = -inf)
//   Pd = P * keep / (1 - p)                                 (keep_ij: philox_uniform(flat index) >= p)
//   out = Pd v
#pragma once
#include <cstdint>

namespace vlp::cpu {

// Shapes and operands of one attention call. q [B, H, Tq, D], k [B, H, Tk, D], v [B, H, Tk, Dv], each
// with unit stride in its last dim and the given (batch, head, row) strides in elements (0 allowed for
// broadcast batch/head dims; the row stride must be at least the last dim unless there is one row).
template <class T>
struct AttentionArgs {
  int64_t B = 0, H = 0, Tq = 0, Tk = 0, D = 0, Dv = 0;
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  int64_t q_strides[3] = {}, k_strides[3] = {}, v_strides[3] = {};
  // Additive bias read at b*s[0] + h*s[1] + i*s[2] + j*s[3] (zero strides broadcast); may be null.
  const T* bias = nullptr;
  int64_t bias_strides[4] = {};
  // [B, Tk] contiguous, false = key masked out; may be null.
  const bool* key_keep = nullptr;
  bool causal = false;  // query i attends to keys j <= i + (Tk - Tq)
  double scale = 1.0;
  double dropout_p = 0.0;  // 0 = no dropout
  uint64_t seed = 0, offset = 0;
};

// out [B, H, Tq, Dv] and lse [B, H, Tq], both contiguous.
template <class T>
void attention_forward(const AttentionArgs<T>& args, T* out, T* lse);

// Gradients from dout [B, H, Tq, Dv] (contiguous) and the forward's out and lse. dq [B, H, Tq, D],
// dk [B, H, Tk, D] and dv [B, H, Tk, Dv] are written whole (contiguous); dbias is accumulated into (the
// caller zeroes it) at b*s[0] + h*s[1] + i*s[2] + j*s[3] with dbias_strides, zero strides summing over
// the bias's broadcast dims. Any of the four outputs may be null when not needed.
template <class T>
void attention_backward(const AttentionArgs<T>& args, const T* out, const T* lse, const T* dout, T* dq, T* dk,
                        T* dv, T* dbias, const int64_t* dbias_strides);

}  // namespace vlp::cpu
