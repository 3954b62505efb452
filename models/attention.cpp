#include "models/attention.h"

#include <algorithm>
#include <cmath>

namespace vlp {

Tensor split_heads(const Tensor& x, int64_t heads) {
  VLP_CHECK(x.dim() == 3 && x.size(2) % heads == 0, "split_heads: expected [B, T, H*D] with H = ", heads, ", got ",
            shape_str(x.shape()));
  return permute(view(x, {x.size(0), x.size(1), heads, x.size(2) / heads}), {0, 2, 1, 3});
}

Tensor merge_heads(const Tensor& x) {
  VLP_CHECK(x.dim() == 4, "merge_heads: expected [B, H, T, D], got ", shape_str(x.shape()));
  return reshape(transpose(x, 1, 2), {x.size(0), x.size(2), x.size(1) * x.size(3)});
}

// ---- KV cache ----

std::pair<Tensor, Tensor> KVCache::get() const {
  VLP_CHECK(!empty(), "KVCache: nothing cached yet");
  if (k.size(2) == length) return {k, v};
  return {narrow(k, 2, 0, length), narrow(v, 2, 0, length)};
}

std::pair<Tensor, Tensor> KVCache::append(const Tensor& k_new, const Tensor& v_new) {
  VLP_CHECK(k_new.dim() == 4 && v_new.dim() == 4, "KVCache: keys and values must be [B, H, T, D]");
  const int64_t n = k_new.size(2);
  if (GradMode::enabled() && (k_new.requires_grad() || v_new.requires_grad() || (k.defined() && k.requires_grad()))) {
    // Under autograd: concatenate (differentiable), no spare capacity.
    if (empty()) {
      k = k_new, v = v_new;
    } else {
      auto [k_old, v_old] = get();
      k = concat({k_old, k_new}, 2), v = concat({v_old, v_new}, 2);
    }
    length = k.size(2);
    return {k, v};
  }
  if (!empty()) {
    VLP_CHECK(k_new.size(0) == k.size(0) && k_new.size(1) == k.size(1) && k_new.size(3) == k.size(3) &&
                  v_new.size(3) == v.size(3),
              "KVCache: new keys ", shape_str(k_new.shape()), " do not match the cached ", shape_str(k.shape()));
  }
  if (empty() || length + n > k.size(2)) {
    // Grow geometrically so decoding T tokens copies O(T) rows, not O(T^2).
    const int64_t capacity = std::max<int64_t>(length + n, 2 * (empty() ? n : k.size(2)));
    Tensor k_buf = vlp::empty({k_new.size(0), k_new.size(1), capacity, k_new.size(3)}, k_new.dtype(), k_new.device());
    Tensor v_buf = vlp::empty({v_new.size(0), v_new.size(1), capacity, v_new.size(3)}, v_new.dtype(), v_new.device());
    if (!empty()) {
      auto [k_old, v_old] = get();
      copy_(as_strided(k_buf, k_old.shape(), k_buf.strides(), 0), k_old);
      copy_(as_strided(v_buf, v_old.shape(), v_buf.strides(), 0), v_old);
    }
    k = k_buf, v = v_buf;
  }
  copy_(as_strided(k, k_new.shape(), k.strides(), k.offset() + length * k.stride(2)), k_new.detach());
  copy_(as_strided(v, v_new.shape(), v.strides(), v.offset() + length * v.stride(2)), v_new.detach());
  length += n;
  return get();
}

void KVCache::reorder(const Tensor& rows) {
  if (empty()) return;
  k = index_select(k, 0, rows);
  v = index_select(v, 0, rows);
}

void DecoderCache::reorder(const Tensor& rows, bool cross) {
  for (auto& c : self_attn) c.reorder(rows);
  if (cross)
    for (auto& c : cross_attn) c.reorder(rows);
}

// ---- attention ----

Tensor dropout(const Tensor& x, double p, const ForwardContext& ctx) {
  if (!ctx.training || p <= 0.0) return x;
  return dropout(x, p, true, ctx.generator);
}

Tensor sublayer_output(const SublayerSite& site, const Tensor& input, const Tensor& output, double p,
                       const ForwardContext& ctx, const Tensor& residual) {
  if (site.adapters.empty()) return dropout(output, p, ctx);
  if (site.before_dropout) return dropout(site.forward(input, output, ctx, residual), p, ctx);
  return site.forward(input, dropout(output, p, ctx), ctx, residual);
}

Tensor as_key_mask(const Tensor& mask) {
  if (!mask.defined() || mask.dtype() == DType::Bool) return mask;
  VLP_CHECK(mask.dim() == 2, "attention mask must be [B, T], got ", shape_str(mask.shape()));
  return convert(mask, DType::Bool);
}

Tensor attend(const Tensor& x, AttentionState state, const AttentionSite& site, const AttentionSpec& spec,
              const ForwardContext& ctx) {
  const bool adapted = !site.adapters.empty();
  if (adapted) {
    state.input = x;
    site.before(state, ctx);
  }
  AttentionOptions options;
  options.key_padding_mask = state.key_padding_mask;
  options.causal = spec.causal;
  options.scale = spec.scale;
  options.training = ctx.training;
  options.dropout_p = ctx.training ? spec.dropout : 0.0;
  options.generator = ctx.generator;
  if (spec.bias) options.bias = spec.bias(state.q.size(2), state.k.size(2));
  Tensor out = merge_heads(scaled_dot_product_attention(state.q, state.k, state.v, options));
  return adapted ? site.after(x, state, out, ctx) : out;
}

// ---- T5 relative positions ----

int64_t t5_relative_position_bucket(int64_t relative_position, bool bidirectional, int64_t num_buckets,
                                    int64_t max_distance) {
  int64_t bucket = 0;
  int64_t n = relative_position;
  if (bidirectional) {
    num_buckets /= 2;
    if (n > 0) bucket += num_buckets;
    n = std::abs(n);
  } else {
    n = -std::min<int64_t>(n, 0);
  }
  const int64_t max_exact = num_buckets / 2;
  if (n < max_exact) return bucket + n;
  // float32 arithmetic in transformers' order: log(n / max_exact) / log(max_distance / max_exact) * (nb - me),
  // truncated toward zero.
  const float ratio = float(n) / float(max_exact);
  const float denom = float(std::log(double(max_distance) / double(max_exact)));
  const float scaled = std::log(ratio) / denom * float(num_buckets - max_exact);
  const int64_t large = std::min<int64_t>(max_exact + int64_t(scaled), num_buckets - 1);
  return bucket + large;
}

Tensor t5_position_bias(const Tensor& table, int64_t q_len, int64_t k_len, int64_t query_offset, bool bidirectional,
                        int64_t num_buckets, int64_t max_distance) {
  VLP_CHECK(table.dim() == 2 && table.size(0) == num_buckets, "t5_position_bias: table must be [", num_buckets,
            ", heads], got ", shape_str(table.shape()));
  std::vector<int64_t> buckets(size_t(q_len * k_len));
  for (int64_t i = 0; i < q_len; ++i)
    for (int64_t j = 0; j < k_len; ++j)
      buckets[size_t(i * k_len + j)] =
          t5_relative_position_bucket(j - (i + query_offset), bidirectional, num_buckets, max_distance);
  Tensor ids = from_data(buckets, {q_len, k_len}, table.device());
  // [Tq, Tk, H] -> [1, H, Tq, Tk] as a view; attention reads the bias through its strides.
  return unsqueeze(permute(embedding(table, ids), {2, 0, 1}), 0);
}

}  // namespace vlp
