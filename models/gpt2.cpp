#include "models/gpt2.h"

#include <cmath>
#include <string>

#include "runtime/trace.h"

namespace vlp {

namespace {

// Position ids past .. past + T - 1 as [1, T].
Tensor positions_from(int64_t past, int64_t T, Device device) {
  std::vector<int64_t> p(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) p[size_t(t)] = past + t;
  return from_data(p, {1, T}, device);
}

// Labels shifted left by one position, the last one ignored: what position t must predict.
Tensor shift_labels_left(const Tensor& labels) {
  const int64_t B = labels.size(0), T = labels.size(1);
  std::vector<double> in = to_vector(labels);
  std::vector<int64_t> out(size_t(B * T), -100);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t + 1 < T; ++t) out[size_t(b * T + t)] = int64_t(in[size_t(b * T + t + 1)]);
  return from_data(out, {B * T}, labels.device());
}

}  // namespace

Tensor causal_lm_loss(const Tensor& logits, const Tensor& labels) {
  VLP_CHECK(logits.dim() == 3 && labels.dim() == 2 && labels.size(0) == logits.size(0) &&
                labels.size(1) == logits.size(1),
            "causal_lm_loss: logits [B, T, V] and labels [B, T] expected, got ", shape_str(logits.shape()), " and ",
            shape_str(labels.shape()));
  Tensor flat = reshape(logits, {-1, logits.size(2)});
  return cross_entropy(to(flat, DType::F32), shift_labels_left(labels));
}

// ---- blocks ----

GPT2Attention::GPT2Attention(const GPT2Config& config, int64_t layer_index)
    : c_attn(config.n_embd, 3 * config.n_embd, true, true),
      c_proj(config.n_embd, config.n_embd, true, true),
      heads(config.n_head),
      resid_pdrop(config.resid_pdrop) {
  register_module("c_attn", &c_attn);
  register_module("c_proj", &c_proj);
  register_module("attn_site", &attn_site);
  double scale = config.scale_attn_weights ? 1.0 / std::sqrt(double(config.n_embd / config.n_head)) : 1.0;
  if (config.scale_attn_by_inverse_layer_idx) scale /= double(layer_index + 1);
  spec.scale = scale;
  spec.dropout = config.attn_pdrop;
  spec.causal = true;
}

Tensor GPT2Attention::forward(const Tensor& x, const Tensor& key_mask, KVCache* cache,
                              const ForwardContext& ctx) const {
  TraceRange range("gpt2.attention");
  const int64_t D = c_proj.out_features();
  Tensor qkv = c_attn.forward(x, ctx);  // [B, T, 3D]: q | k | v
  AttentionState s;
  s.q = split_heads(narrow(qkv, 2, 0, D), heads);
  s.k = split_heads(narrow(qkv, 2, D, D), heads);
  s.v = split_heads(narrow(qkv, 2, 2 * D, D), heads);
  if (cache) std::tie(s.k, s.v) = cache->append(s.k, s.v);
  s.key_padding_mask = key_mask;
  return c_proj.forward(attend(x, s, attn_site, spec, ctx), ctx);
}

GPT2MLP::GPT2MLP(const GPT2Config& config)
    : c_fc(config.n_embd, config.inner_dim(), true, true),
      c_proj(config.inner_dim(), config.n_embd, true, true),
      act(activation_by_name(config.activation_function)),
      resid_pdrop(config.resid_pdrop) {
  register_module("c_fc", &c_fc);
  register_module("c_proj", &c_proj);
}

Tensor GPT2MLP::forward(const Tensor& x, const ForwardContext& ctx) const {
  TraceRange range("gpt2.mlp");
  return c_proj.forward(act(c_fc.forward(x, ctx)), ctx);
}

GPT2Block::GPT2Block(const GPT2Config& config, int64_t layer_index)
    : ln_1(config.n_embd, config.layer_norm_epsilon),
      attn(config, layer_index),
      ln_2(config.n_embd, config.layer_norm_epsilon),
      mlp(config) {
  register_module("ln_1", &ln_1);
  register_module("attn", &attn);
  register_module("ln_2", &ln_2);
  register_module("mlp", &mlp);
  register_module("sa_site", &sa_site);
  register_module("ff_site", &ff_site);
}

Tensor GPT2Block::forward(const Tensor& x, const Tensor& key_mask, KVCache* cache, const ForwardContext& ctx) const {
  TraceRange range("gpt2.block");
  Tensor a_in = ln_1.forward(x);
  Tensor h = x + sublayer_output(sa_site, a_in, attn.forward(a_in, key_mask, cache, ctx), attn.resid_pdrop, ctx, x);
  Tensor m_in = ln_2.forward(h);
  return h + sublayer_output(ff_site, m_in, mlp.forward(m_in, ctx), mlp.resid_pdrop, ctx, h);
}

// ---- model ----

GPT2Model::GPT2Model(const GPT2Config& config_)
    : config(config_),
      wte(config_.vocab_size, config_.n_embd),
      wpe(config_.n_positions, config_.n_embd),
      ln_f(config_.n_embd, config_.layer_norm_epsilon) {
  register_module("wte", &wte);
  register_module("wpe", &wpe);
  register_module("h", &h);
  for (int64_t i = 0; i < config.n_layer; ++i) {
    blocks.push_back(std::make_unique<GPT2Block>(config, i));
    h.register_module(std::to_string(i), blocks.back().get());
  }
  register_module("ln_f", &ln_f);
  register_module("input_site", &input_site);
}

Tensor GPT2Model::forward(const GPT2Input& input, DecoderCache* cache, const ForwardContext& ctx,
                          Tensor* mask_out) const {
  VLP_CHECK(input.input_ids.defined() != input.inputs_embeds.defined(),
            "GPT2Model: pass exactly one of input_ids and inputs_embeds");
  Tensor embeds = input.inputs_embeds.defined() ? input.inputs_embeds : wte.forward(input.input_ids);
  const int64_t B = embeds.size(0), T = embeds.size(1);
  const int64_t past = cache ? cache->past_length() : 0;
  Tensor mask = input.attention_mask;
  if (mask.defined())
    VLP_CHECK(mask.dim() == 2 && mask.size(0) == B && mask.size(1) == past + T, "GPT2Model: attention_mask ",
              shape_str(mask.shape()), " must be [B, past + T] = [", B, ", ", past + T, "]");
  if (!input_site.adapters.empty() && past == 0) {
    if (!mask.defined()) mask = ones({B, T}, DType::I64, embeds.device());
    embeds = input_site.forward(embeds, mask, ctx);
  }
  const int64_t T2 = embeds.size(1);
  // Prefix-tuning keys count as past positions (transformers gives the tokens positions after a prefilled cache).
  const int64_t prefix = blocks.empty() ? 0 : blocks[0]->attn.attn_site.prefix_length();
  VLP_CHECK(prefix + past + T2 <= config.n_positions, "GPT2Model: ", prefix + past + T2, " positions exceed n_positions = ",
            config.n_positions);
  Tensor position_ids = input.position_ids.defined() && T2 == T ? input.position_ids
                                                                 : positions_from(prefix + past, T2, embeds.device());
  // Given positions count real tokens (generate derives them from the padding mask); PEFT prepends the prefix's
  // ones to that mask, so they start after the prefix too.
  if (prefix > 0 && input.position_ids.defined() && T2 == T)
  {
    std::vector<int64_t> shifted;
    for (double p : to_vector(position_ids)) shifted.push_back(int64_t(p) + prefix);
    position_ids = from_data<int64_t>(shifted, position_ids.shape(), position_ids.device());
  }
  Tensor hidden = embeds + wpe.forward(position_ids);
  if (input.token_type_ids.defined()) {
    VLP_CHECK(T2 == T, "GPT2Model: token_type_ids cannot be combined with an input site that inserts positions");
    hidden = hidden + wte.forward(input.token_type_ids);
  }
  hidden = dropout(hidden, config.embd_pdrop, ctx);
  if (cache && cache->self_attn.empty()) cache->self_attn.resize(size_t(config.n_layer));
  Tensor key_mask = as_key_mask(mask);
  for (size_t i = 0; i < blocks.size(); ++i)
    hidden = blocks[i]->forward(hidden, key_mask, cache ? &cache->self_attn[i] : nullptr, ctx);
  if (mask_out) *mask_out = mask;
  return ln_f.forward(hidden);
}

GPT2LMHeadModel::GPT2LMHeadModel(const GPT2Config& config_) : config(config_), transformer(config_) {
  register_module("transformer", &transformer);
  if (!config.tie_word_embeddings) {
    lm_head = std::make_unique<Linear>(config.n_embd, config.vocab_size, false);
    register_module("lm_head", lm_head.get());
  }
}

Tensor GPT2LMHeadModel::lm_logits(const Tensor& hidden) const {
  return lm_head ? lm_head->forward(hidden) : linear(hidden, transformer.wte.weight);
}

CausalLMOutput GPT2LMHeadModel::forward(const GPT2Input& input, const ForwardContext& ctx, DecoderCache* cache) const {
  CausalLMOutput out;
  out.hidden = transformer.forward(input, cache, ctx);
  out.logits = lm_logits(out.hidden);
  if (input.labels.defined()) {
    Tensor labels = input.labels;
    const int64_t inserted = out.logits.size(1) - labels.size(1);
    if (inserted > 0)  // positions the input site prepended are not predicted (as PEFT pads labels with -100)
      labels = concat({full({labels.size(0), inserted}, -100, labels.dtype(), labels.device()), labels}, 1);
    out.loss = causal_lm_loss(out.logits, labels);
  }
  return out;
}

}  // namespace vlp
