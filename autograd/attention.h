// Differentiable scaled-dot-product attention:
//   out = dropout(softmax(scale * q k^T + bias + masks)) v
// q [B, H, Tq, D], k and v [B, H, Tk, D] (v may have its own last dim Dv).
#pragma once
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace vlp {

struct AttentionOptions {
  Tensor bias;              // additive, broadcastable to [B, H, Tq, Tk] (T5 position bias); differentiable
  Tensor key_padding_mask;  // [B, Tk], nonzero = attend, zero = masked out
  bool causal = false;      // query i attends to keys j <= i + (Tk - Tq)
  double dropout_p = 0.0;   // on the attention probabilities, training only
  bool training = true;
  double scale = -1.0;      // < 0: 1/sqrt(D); T5 uses 1.0
  Generator* generator = nullptr;
};

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options = {});

}  // namespace vlp
