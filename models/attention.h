// Multi-head attention shared by the text backbones (GPT-2, T5, BART): self, cross and causal attention
// over scaled_dot_product_attention, T5's relative position buckets (bidirectional and causal), and the
// key/value cache used while decoding.
//
// A backbone projects q, k and v with its own Linear layers (fused in GPT-2's c_attn, separate in T5 and
// BART), splits heads as views, and calls attend(): the block's AttentionSite may prepend keys/values
// (prefix tuning) before the scores are computed and may add to the output (adaption prompt) after them.
#pragma once
#include <functional>
#include <utility>
#include <vector>

#include "models/module.h"
#include "models/site.h"

namespace vlp {

// [B, T, H*D] -> [B, H, T, D], a view (no copy) whenever the last dim is contiguous.
Tensor split_heads(const Tensor& x, int64_t heads);
// [B, H, T, D] -> [B, T, H*D] (one copy: the heads become interleaved).
Tensor merge_heads(const Tensor& x);

// Keys and values one attention block keeps across decoding steps, [B, H, T, D]. Self-attention appends
// each step's keys and values; cross-attention stores the projected encoder output once. Outside autograd
// the cache grows in place inside a buffer with spare capacity (appending copies only the new step);
// when the new keys require grad it concatenates instead, so gradients still flow.
struct KVCache {
  Tensor k, v;         // buffers [B, H, capacity, D] (or exactly [B, H, length, D])
  int64_t length = 0;  // valid positions along dim 2
  bool empty() const { return length == 0; }
  // Appends k_new / v_new ([B, H, T, D]) and returns everything cached so far.
  std::pair<Tensor, Tensor> append(const Tensor& k_new, const Tensor& v_new);
  std::pair<Tensor, Tensor> get() const;
  // Keeps the given rows (I64 indices into dim 0): beam search reordering.
  void reorder(const Tensor& rows);
  void clear() { *this = KVCache(); }
};

// The caches of a decoder stack, one per layer, created on first use.
struct DecoderCache {
  std::vector<KVCache> self_attn, cross_attn;
  int64_t past_length() const { return self_attn.empty() ? 0 : self_attn[0].length; }
  // Keeps the given rows of every self-attention cache; and of the cross-attention caches when
  // `cross` (beams of one example share one encoder output, so generate() leaves those alone).
  void reorder(const Tensor& rows, bool cross = true);
  void clear() { self_attn.clear(), cross_attn.clear(); }
};

// What an attention block needs besides q, k and v.
struct AttentionSpec {
  double scale = -1.0;     // on q k^T: < 0 means 1/sqrt(d_head) (GPT-2, BART); T5 uses 1
  double dropout = 0.0;    // on the attention probabilities, active only with ctx.training
  bool causal = false;     // query i sees keys j <= i + (Tk - Tq), i.e. the cache and itself
  // Additive position bias for Tq queries over Tk keys ([1, H, Tq, Tk], T5), or empty. Called after the
  // site's before(), so prefixes are included in Tk.
  std::function<Tensor(int64_t q_len, int64_t k_len)> bias;
};

// Attention of one block: state.q [B, H, Tq, D], state.k / state.v [B, H, Tk, D] (cache included),
// state.key_padding_mask [B, Tk] or undefined. `x` is the block input handed to the site. Returns the
// merged heads [B, Tq, H*D], before the output projection.
Tensor attend(const Tensor& x, AttentionState state, const AttentionSite& site, const AttentionSpec& spec,
              const ForwardContext& ctx);

// Dropout active only with ctx.training, drawn from ctx.generator.
Tensor dropout(const Tensor& x, double p, const ForwardContext& ctx);

// A sublayer's contribution to the residual stream: Drop(output) through the SublayerSite, in the order the
// site asks for (site.before_dropout: Drop(site(input, output)); otherwise site(input, Drop(output))).
// Pre-LN blocks pass `residual`, the stream before the sublayer's norm (SublayerSite::forward).
Tensor sublayer_output(const SublayerSite& site, const Tensor& input, const Tensor& output, double p,
                       const ForwardContext& ctx, const Tensor& residual = Tensor());

// A 0/1 padding mask [B, T] (any integer or bool dtype) as Bool, for attention; undefined stays undefined.
Tensor as_key_mask(const Tensor& mask);

// ---- T5 relative positions ----

// The bucket of a relative position (memory position - query position), exactly as T5 (Mesh TensorFlow and
// transformers) computes it: half the buckets exact, the rest logarithmic up to max_distance, positive and
// negative distances in separate halves when bidirectional (encoder), only the past when not (decoder).
// The logarithm is evaluated in float32 as transformers does, so bucket boundaries agree.
int64_t t5_relative_position_bucket(int64_t relative_position, bool bidirectional, int64_t num_buckets,
                                    int64_t max_distance);
// The bias [1, H, q_len, k_len] for queries at positions query_offset + i and keys at j, read from the
// learned table [num_buckets, H] (differentiable in the table).
Tensor t5_position_bias(const Tensor& table, int64_t q_len, int64_t k_len, int64_t query_offset, bool bidirectional,
                        int64_t num_buckets, int64_t max_distance);

}  // namespace vlp
