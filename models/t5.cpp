#include "models/t5.h"

#include <cmath>
#include <string>

#include "runtime/trace.h"

namespace vlp {

// ---- attention and feed-forward ----

T5Attention::T5Attention(const T5Config& config, bool has_relative_attention_bias)
    : q(config.d_model, config.inner_dim(), false),
      k(config.d_model, config.inner_dim(), false),
      v(config.d_model, config.inner_dim(), false),
      o(config.inner_dim(), config.d_model, false),
      heads(config.num_heads),
      dropout(config.dropout_rate) {
  register_module("q", &q);
  register_module("k", &k);
  register_module("v", &v);
  register_module("o", &o);
  if (has_relative_attention_bias) {
    relative_attention_bias = std::make_unique<Embedding>(config.relative_attention_num_buckets, config.num_heads);
    register_module("relative_attention_bias", relative_attention_bias.get());
  }
  register_module("attn_site", &attn_site);
}

Tensor T5Attention::forward(const Tensor& x, const Tensor& kv_source, const Tensor& key_mask, bool causal,
                            const std::function<Tensor(int64_t, int64_t)>& bias, KVCache* cache,
                            const ForwardContext& ctx) const {
  TraceRange range("t5.attention");
  const bool cross = kv_source.defined();
  AttentionState s;
  s.q = split_heads(q.forward(x, ctx), heads);
  if (cross && cache && !cache->empty()) {
    std::tie(s.k, s.v) = cache->get();  // the encoder output was projected at the first step
  } else {
    const Tensor& src = cross ? kv_source : x;
    s.k = split_heads(k.forward(src, ctx), heads);
    s.v = split_heads(v.forward(src, ctx), heads);
    if (cache) std::tie(s.k, s.v) = cache->append(s.k, s.v);
  }
  s.key_padding_mask = key_mask;
  AttentionSpec spec;
  spec.scale = 1.0;  // T5 folds the scaling into its initialisation
  spec.dropout = dropout;
  spec.causal = causal;
  spec.bias = bias;
  return o.forward(attend(x, s, attn_site, spec, ctx), ctx);
}

T5LayerSelfAttention::T5LayerSelfAttention(const T5Config& config, bool has_relative_attention_bias)
    : SelfAttention(config, has_relative_attention_bias), layer_norm(config.d_model, config.layer_norm_epsilon) {
  register_module("SelfAttention", &SelfAttention);
  register_module("layer_norm", &layer_norm);
}

T5LayerCrossAttention::T5LayerCrossAttention(const T5Config& config)
    : EncDecAttention(config, false), layer_norm(config.d_model, config.layer_norm_epsilon) {
  register_module("EncDecAttention", &EncDecAttention);
  register_module("layer_norm", &layer_norm);
}

T5DenseActDense::T5DenseActDense(const T5Config& config)
    : wo(config.d_ff, config.d_model, false), act(activation_by_name(config.dense_act_fn)), dropout(config.dropout_rate) {
  if (config.is_gated_act) {
    wi_0 = std::make_unique<Linear>(config.d_model, config.d_ff, false);
    wi_1 = std::make_unique<Linear>(config.d_model, config.d_ff, false);
    register_module("wi_0", wi_0.get());
    register_module("wi_1", wi_1.get());
  } else {
    wi = std::make_unique<Linear>(config.d_model, config.d_ff, false);
    register_module("wi", wi.get());
  }
  register_module("wo", &wo);
}

Tensor T5DenseActDense::forward(const Tensor& x, const ForwardContext& ctx) const {
  TraceRange range("t5.ff");
  Tensor h = wi ? act(wi->forward(x, ctx)) : act(wi_0->forward(x, ctx)) * wi_1->forward(x, ctx);
  return wo.forward(vlp::dropout(h, dropout, ctx), ctx);
}

T5LayerFF::T5LayerFF(const T5Config& config)
    : DenseReluDense(config), layer_norm(config.d_model, config.layer_norm_epsilon) {
  register_module("DenseReluDense", &DenseReluDense);
  register_module("layer_norm", &layer_norm);
}

T5Block::T5Block(const T5Config& config, bool is_decoder, bool has_relative_attention_bias)
    : self_attention(config, has_relative_attention_bias), feed_forward(config), dropout(config.dropout_rate) {
  register_module("layer", &layer);
  layer.register_module("0", &self_attention);
  if (is_decoder) {
    cross_attention = std::make_unique<T5LayerCrossAttention>(config);
    layer.register_module("1", cross_attention.get());
  }
  layer.register_module(is_decoder ? "2" : "1", &feed_forward);
  register_module("sa_site", &sa_site);
  if (is_decoder) {
    ca_site = std::make_unique<SublayerSite>();
    register_module("ca_site", ca_site.get());
  }
  register_module("ff_site", &ff_site);
}

// ---- stacks ----

T5Stack::T5Stack(const T5Config& config_, bool is_decoder_, const Embedding* embed_tokens_)
    : config(config_),
      is_decoder(is_decoder_),
      embed_tokens(embed_tokens_),
      final_layer_norm(config_.d_model, config_.layer_norm_epsilon) {
  register_module("block", &block);
  const int64_t layers = is_decoder ? config.decoder_layers() : config.num_layers;
  for (int64_t i = 0; i < layers; ++i) {
    blocks.push_back(std::make_unique<T5Block>(config, is_decoder, i == 0));
    block.register_module(std::to_string(i), blocks.back().get());
  }
  register_module("final_layer_norm", &final_layer_norm);
  register_module("input_site", &input_site);
}

Tensor T5Stack::run_blocks(Tensor hidden, const Tensor& key_mask, const std::function<Tensor(int64_t, int64_t)>& bias,
                           const EncoderOutput* encoder, DecoderCache* cache, const ForwardContext& ctx) const {
  Tensor enc_mask = encoder ? as_key_mask(encoder->mask) : Tensor();
  for (size_t i = 0; i < blocks.size(); ++i) {
    TraceRange range(is_decoder ? "t5.decoder.block" : "t5.encoder.block");
    const T5Block& b = *blocks[i];
    const T5LayerSelfAttention& sa = b.self_attention;
    Tensor x = sa.layer_norm.forward(hidden);
    Tensor out = sa.SelfAttention.forward(x, Tensor(), key_mask, is_decoder, bias,
                                          cache ? &cache->self_attn[i] : nullptr, ctx);
    hidden = hidden + sublayer_output(b.sa_site, x, out, b.dropout, ctx, hidden);
    if (is_decoder) {
      const T5LayerCrossAttention& ca = *b.cross_attention;
      x = ca.layer_norm.forward(hidden);
      out = ca.EncDecAttention.forward(x, encoder->hidden, enc_mask, false, nullptr,
                                       cache ? &cache->cross_attn[i] : nullptr, ctx);
      hidden = hidden + sublayer_output(*b.ca_site, x, out, b.dropout, ctx, hidden);
    }
    x = b.feed_forward.layer_norm.forward(hidden);
    out = b.feed_forward.DenseReluDense.forward(x, ctx);
    hidden = hidden + sublayer_output(b.ff_site, x, out, b.dropout, ctx, hidden);
  }
  return dropout(final_layer_norm.forward(hidden), config.dropout_rate, ctx);
}

namespace {

// The relative position bias of a stack's self-attention, computed once per forward and shared by its layers
// (as transformers passes it along). `appended` trailing positions (VL visual tokens) get bias 0.
std::function<Tensor(int64_t, int64_t)> shared_position_bias(const T5Config& config, const Embedding* table,
                                                            bool bidirectional, int64_t appended) {
  auto cached = std::make_shared<Tensor>();
  return [&config, table, bidirectional, appended, cached](int64_t q_len, int64_t k_len) -> Tensor {
    if (cached->defined() && cached->size(2) == q_len && cached->size(3) == k_len) return *cached;
    const int64_t tq = q_len - appended, tk = k_len - appended;
    Tensor bias = t5_position_bias(table->weight, tq, tk, tk - tq, bidirectional, config.relative_attention_num_buckets,
                                   config.relative_attention_max_distance);
    if (appended > 0) {
      const int64_t H = bias.size(1);
      Device dev = bias.device();
      bias = concat({bias, zeros({1, H, tq, appended}, bias.dtype(), dev)}, 3);
      bias = concat({bias, zeros({1, H, appended, k_len}, bias.dtype(), dev)}, 2);
    }
    *cached = bias;
    return bias;
  };
}

}  // namespace

EncoderOutput T5Stack::encode(const EncoderInput& input, const ForwardContext& ctx) const {
  VLP_CHECK(!is_decoder, "T5Stack::encode called on the decoder");
  VLP_CHECK(input.input_ids.defined() != input.inputs_embeds.defined(),
            "T5 encoder: pass exactly one of input_ids and inputs_embeds");
  Tensor embeds = input.inputs_embeds.defined() ? input.inputs_embeds : embed_tokens->forward(input.input_ids);
  const int64_t B = embeds.size(0);
  Tensor mask = input.attention_mask;
  if (!input_site.adapters.empty()) {
    if (!mask.defined()) mask = ones({B, embeds.size(1)}, DType::I64, embeds.device());
    embeds = input_site.forward(embeds, mask, ctx);
  }
  int64_t appended = 0;
  if (input.appended_embeds.defined()) {
    appended = input.appended_embeds.size(1);
    mask = concat_masks(mask, embeds.size(1), input.appended_mask, appended, B, embeds.device());
    embeds = concat({embeds, input.appended_embeds}, 1);
  }
  const Embedding* table = blocks[0]->self_attention.SelfAttention.relative_attention_bias.get();
  auto bias = shared_position_bias(config, table, true, appended);
  Tensor hidden = dropout(embeds, config.dropout_rate, ctx);
  return {run_blocks(hidden, as_key_mask(mask), bias, nullptr, nullptr, ctx), mask};
}

Tensor T5Stack::decode(const Tensor& ids, const Tensor& embeds_in, const Tensor& mask_in, const EncoderOutput& encoder,
                       DecoderCache* cache, const ForwardContext& ctx) const {
  VLP_CHECK(is_decoder, "T5Stack::decode called on the encoder");
  VLP_CHECK(ids.defined() != embeds_in.defined(), "T5 decoder: pass exactly one of decoder ids and embeds");
  VLP_CHECK(encoder.defined(), "T5 decoder: needs the encoder output");
  Tensor embeds = embeds_in.defined() ? embeds_in : embed_tokens->forward(ids);
  const int64_t past = cache ? cache->past_length() : 0;
  Tensor mask = mask_in;
  if (!input_site.adapters.empty() && past == 0) {
    if (!mask.defined()) mask = ones({embeds.size(0), embeds.size(1)}, DType::I64, embeds.device());
    embeds = input_site.forward(embeds, mask, ctx);
  }
  if (mask.defined())
    VLP_CHECK(mask.dim() == 2 && mask.size(1) == past + embeds.size(1), "T5 decoder: attention mask ",
              shape_str(mask.shape()), " must cover the cached and new positions (", past + embeds.size(1), ")");
  if (cache && cache->self_attn.empty()) {
    cache->self_attn.resize(blocks.size());
    cache->cross_attn.resize(blocks.size());
  }
  const Embedding* table = blocks[0]->self_attention.SelfAttention.relative_attention_bias.get();
  auto bias = shared_position_bias(config, table, false, 0);
  Tensor hidden = dropout(embeds, config.dropout_rate, ctx);
  return run_blocks(hidden, as_key_mask(mask), bias, &encoder, cache, ctx);
}

// ---- model ----

T5ForConditionalGeneration::T5ForConditionalGeneration(const T5Config& config_)
    : config(config_),
      shared(config_.vocab_size, config_.d_model),
      encoder(config_, false, &shared),
      decoder(config_, true, &shared) {
  register_module("shared", &shared);
  register_module("encoder", &encoder);
  register_module("decoder", &decoder);
  if (!config.tie_word_embeddings) {
    lm_head = std::make_unique<Linear>(config.d_model, config.vocab_size, false);
    register_module("lm_head", lm_head.get());
  }
}

int64_t T5ForConditionalGeneration::decoder_start_token_id() const {
  VLP_CHECK(config.tokens.decoder_start_token_id.has_value(),
            "T5: the config has no \"decoder_start_token_id\" (T5 checkpoints use the pad id, 0)");
  return *config.tokens.decoder_start_token_id;
}

Tensor T5ForConditionalGeneration::lm_logits(const Tensor& decoder_hidden) const {
  Tensor h = config.scale_decoder_outputs ? decoder_hidden * (1.0 / std::sqrt(double(config.d_model))) : decoder_hidden;
  return lm_head ? lm_head->forward(h) : linear(h, shared.weight);
}

Seq2SeqOutput T5ForConditionalGeneration::forward(const Seq2SeqInput& input, const ForwardContext& ctx) const {
  Seq2SeqOutput out;
  out.encoder = input.encoder_output.defined() ? input.encoder_output : encoder.encode(input.encoder, ctx);
  Tensor dec_ids = input.decoder_input_ids;
  if (!dec_ids.defined() && !input.decoder_inputs_embeds.defined()) {
    VLP_CHECK(input.labels.defined(), "T5: pass decoder_input_ids, decoder_inputs_embeds or labels");
    VLP_CHECK(config.tokens.pad_token_id.has_value(), "T5: the config has no \"pad_token_id\"");
    dec_ids = shift_tokens_right(input.labels, *config.tokens.pad_token_id, decoder_start_token_id());
  }
  out.decoder_hidden =
      decoder.decode(dec_ids, input.decoder_inputs_embeds, input.decoder_attention_mask, out.encoder, nullptr, ctx);
  out.logits = lm_logits(out.decoder_hidden);
  if (input.labels.defined()) out.loss = seq2seq_lm_loss(out.logits, input.labels);
  return out;
}

}  // namespace vlp
