#include "models/bart.h"

#include <cmath>
#include <string>

#include "runtime/trace.h"

namespace vlp {

namespace {
constexpr int64_t kPositionOffset = 2;  // BART's learned positions start at row 2
}

BartAttention::BartAttention(int64_t d_model, int64_t heads_, double dropout_)
    : k_proj(d_model, d_model), v_proj(d_model, d_model), q_proj(d_model, d_model), out_proj(d_model, d_model),
      heads(heads_), dropout(dropout_) {
  register_module("k_proj", &k_proj);
  register_module("v_proj", &v_proj);
  register_module("q_proj", &q_proj);
  register_module("out_proj", &out_proj);
  register_module("attn_site", &attn_site);
}

Tensor BartAttention::forward(const Tensor& x, const Tensor& kv_source, const Tensor& key_mask, bool causal,
                              KVCache* cache, const ForwardContext& ctx) const {
  TraceRange range("bart.attention");
  const bool cross = kv_source.defined();
  AttentionState s;
  s.q = split_heads(q_proj.forward(x, ctx), heads);
  if (cross && cache && !cache->empty()) {
    std::tie(s.k, s.v) = cache->get();
  } else {
    const Tensor& src = cross ? kv_source : x;
    s.k = split_heads(k_proj.forward(src, ctx), heads);
    s.v = split_heads(v_proj.forward(src, ctx), heads);
    if (cache) std::tie(s.k, s.v) = cache->append(s.k, s.v);
  }
  s.key_padding_mask = key_mask;
  AttentionSpec spec;  // scale 1/sqrt(d_head)
  spec.dropout = dropout;
  spec.causal = causal;
  return out_proj.forward(attend(x, s, attn_site, spec, ctx), ctx);
}

BartLayer::BartLayer(const BartConfig& c, bool is_decoder)
    : self_attn(c.d_model, is_decoder ? c.decoder_attention_heads : c.encoder_attention_heads, c.attention_dropout),
      self_attn_layer_norm(c.d_model),
      fc1(c.d_model, is_decoder ? c.decoder_ffn_dim : c.encoder_ffn_dim),
      fc2(is_decoder ? c.decoder_ffn_dim : c.encoder_ffn_dim, c.d_model),
      final_layer_norm(c.d_model),
      act(activation_by_name(c.activation_function)),
      dropout(c.dropout),
      activation_dropout(c.activation_dropout) {
  register_module("self_attn", &self_attn);
  register_module("self_attn_layer_norm", &self_attn_layer_norm);
  if (is_decoder) {
    encoder_attn = std::make_unique<BartAttention>(c.d_model, c.decoder_attention_heads, c.attention_dropout);
    encoder_attn_layer_norm = std::make_unique<LayerNorm>(c.d_model);
    register_module("encoder_attn", encoder_attn.get());
    register_module("encoder_attn_layer_norm", encoder_attn_layer_norm.get());
  }
  register_module("fc1", &fc1);
  register_module("fc2", &fc2);
  register_module("final_layer_norm", &final_layer_norm);
  register_module("sa_site", &sa_site);
  if (is_decoder) {
    ca_site = std::make_unique<SublayerSite>();
    register_module("ca_site", ca_site.get());
  }
  register_module("ff_site", &ff_site);
}

Tensor BartLayer::forward(const Tensor& x, const Tensor& key_mask, const Tensor& encoder_hidden,
                          const Tensor& encoder_mask, DecoderCache* cache, size_t i, const ForwardContext& ctx) const {
  TraceRange range("bart.layer");
  const bool decoder = encoder_attn != nullptr;
  Tensor out = self_attn.forward(x, Tensor(), key_mask, decoder, cache ? &cache->self_attn[i] : nullptr, ctx);
  Tensor h = self_attn_layer_norm.forward(x + sublayer_output(sa_site, x, out, dropout, ctx));
  if (decoder) {
    out = encoder_attn->forward(h, encoder_hidden, encoder_mask, false, cache ? &cache->cross_attn[i] : nullptr, ctx);
    h = encoder_attn_layer_norm->forward(h + sublayer_output(*ca_site, h, out, dropout, ctx));
  }
  out = fc2.forward(vlp::dropout(act(fc1.forward(h, ctx)), activation_dropout, ctx), ctx);
  return final_layer_norm.forward(h + sublayer_output(ff_site, h, out, dropout, ctx));
}

// ---- stacks ----

BartStack::BartStack(const BartConfig& config_, bool is_decoder_, const Embedding* embed_tokens_)
    : config(config_),
      is_decoder(is_decoder_),
      embed_tokens(embed_tokens_),
      embed_scale(config_.scale_embedding ? std::sqrt(double(config_.d_model)) : 1.0),
      embed_positions(config_.max_position_embeddings + kPositionOffset, config_.d_model),
      layernorm_embedding(config_.d_model) {
  register_module("embed_positions", &embed_positions);
  register_module("layers", &layers);
  const int64_t n = is_decoder ? config.decoder_layers : config.encoder_layers;
  for (int64_t i = 0; i < n; ++i) {
    blocks.push_back(std::make_unique<BartLayer>(config, is_decoder));
    layers.register_module(std::to_string(i), blocks.back().get());
  }
  register_module("layernorm_embedding", &layernorm_embedding);
  register_module("input_site", &input_site);
}

Tensor BartStack::embed(const Tensor& ids, const Tensor& embeds, int64_t past) const {
  VLP_CHECK(ids.defined() != embeds.defined(), "BART ", is_decoder ? "decoder" : "encoder",
            ": pass exactly one of ids and embeds");
  Tensor tokens = embeds.defined() ? embeds : embed_tokens->forward(ids);
  if (!embeds.defined() && config.tokens.pad_token_id && GradMode::enabled() && embed_tokens->weight.requires_grad()) {
    // nn.Embedding(padding_idx = pad): lookups of the pad id pass no gradient to the table.
    const int64_t pad = *config.tokens.pad_token_id;
    std::vector<double> v = to_vector(ids);
    std::vector<uint8_t> is_pad(v.size());
    bool any = false;
    for (size_t i = 0; i < v.size(); ++i) any |= (is_pad[i] = int64_t(v[i]) == pad);
    if (any) {
      Shape mask_shape = ids.shape();
      mask_shape.push_back(1);
      tokens = where(from_data(is_pad, mask_shape, tokens.device()), tokens.detach(), tokens);
    }
  }
  if (!embeds.defined() && embed_scale != 1.0) tokens = tokens * embed_scale;
  const int64_t T = tokens.size(1);
  VLP_CHECK(past + T <= config.max_position_embeddings, "BART: ", past + T,
            " positions exceed max_position_embeddings = ", config.max_position_embeddings);
  std::vector<int64_t> pos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = past + t + kPositionOffset;
  return tokens + embed_positions.forward(from_data(pos, {T}, tokens.device()));
}

EncoderOutput BartStack::encode(const EncoderInput& input, const ForwardContext& ctx) const {
  VLP_CHECK(!is_decoder, "BartStack::encode called on the decoder");
  Tensor hidden = embed(input.input_ids, input.inputs_embeds, 0);
  const int64_t B = hidden.size(0);
  Tensor mask = input.attention_mask;
  if (!input_site.adapters.empty()) {
    if (!mask.defined()) mask = ones({B, hidden.size(1)}, DType::I64, hidden.device());
    hidden = input_site.forward(hidden, mask, ctx);
  }
  hidden = layernorm_embedding.forward(hidden);
  if (input.appended_embeds.defined()) {
    mask = concat_masks(mask, hidden.size(1), input.appended_mask, input.appended_embeds.size(1), B, hidden.device());
    hidden = concat({hidden, input.appended_embeds}, 1);
  }
  hidden = dropout(hidden, config.dropout, ctx);
  Tensor key_mask = as_key_mask(mask);
  for (size_t i = 0; i < blocks.size(); ++i) hidden = blocks[i]->forward(hidden, key_mask, Tensor(), Tensor(), nullptr, i, ctx);
  return {hidden, mask};
}

Tensor BartStack::decode(const Tensor& ids, const Tensor& embeds, const Tensor& mask_in, const EncoderOutput& encoder,
                         DecoderCache* cache, const ForwardContext& ctx) const {
  VLP_CHECK(is_decoder, "BartStack::decode called on the encoder");
  VLP_CHECK(encoder.defined(), "BART decoder: needs the encoder output");
  const int64_t past = cache ? cache->past_length() : 0;
  // Prefix-tuning keys count as past positions (transformers gives the tokens positions after a prefilled cache).
  const int64_t prefix = blocks.empty() ? 0 : blocks[0]->self_attn.attn_site.prefix_length();
  Tensor hidden = embed(ids, embeds, prefix + past);
  Tensor mask = mask_in;
  if (!input_site.adapters.empty() && past == 0) {
    if (!mask.defined()) mask = ones({hidden.size(0), hidden.size(1)}, DType::I64, hidden.device());
    hidden = input_site.forward(hidden, mask, ctx);
  }
  if (mask.defined())
    VLP_CHECK(mask.dim() == 2 && mask.size(1) == past + hidden.size(1), "BART decoder: attention mask ",
              shape_str(mask.shape()), " must cover the cached and new positions (", past + hidden.size(1), ")");
  hidden = dropout(layernorm_embedding.forward(hidden), config.dropout, ctx);
  if (cache && cache->self_attn.empty()) {
    cache->self_attn.resize(blocks.size());
    cache->cross_attn.resize(blocks.size());
  }
  Tensor key_mask = as_key_mask(mask), enc_mask = as_key_mask(encoder.mask);
  for (size_t i = 0; i < blocks.size(); ++i)
    hidden = blocks[i]->forward(hidden, key_mask, encoder.hidden, enc_mask, cache, i, ctx);
  return hidden;
}

// ---- model ----

BartModel::BartModel(const BartConfig& config)
    : shared(config.vocab_size, config.d_model), encoder(config, false, &shared), decoder(config, true, &shared) {
  register_module("shared", &shared);
  register_module("encoder", &encoder);
  register_module("decoder", &decoder);
}

BartForConditionalGeneration::BartForConditionalGeneration(const BartConfig& config_)
    : config(config_), model(config_) {
  register_module("model", &model);
  final_logits_bias = zeros({1, config.vocab_size});
  register_buffer("final_logits_bias", &final_logits_bias);
}

int64_t BartForConditionalGeneration::decoder_start_token_id() const {
  VLP_CHECK(config.tokens.decoder_start_token_id.has_value(), "BART: the config has no \"decoder_start_token_id\"");
  return *config.tokens.decoder_start_token_id;
}

Tensor BartForConditionalGeneration::lm_logits(const Tensor& decoder_hidden) const {
  return linear(decoder_hidden, model.shared.weight, reshape(final_logits_bias, {-1}));
}

Seq2SeqOutput BartForConditionalGeneration::forward(const Seq2SeqInput& input, const ForwardContext& ctx) const {
  Seq2SeqOutput out;
  Tensor dec_ids = input.decoder_input_ids;
  if (!dec_ids.defined() && !input.decoder_inputs_embeds.defined()) {
    const Tensor& source = input.labels.defined() ? input.labels : input.encoder.input_ids;
    VLP_CHECK(source.defined(), "BART: pass decoder_input_ids, decoder_inputs_embeds, labels or input_ids");
    VLP_CHECK(config.tokens.pad_token_id.has_value(), "BART: the config has no \"pad_token_id\"");
    dec_ids = shift_tokens_right(source, *config.tokens.pad_token_id, decoder_start_token_id());
  }
  out.encoder = input.encoder_output.defined() ? input.encoder_output : model.encoder.encode(input.encoder, ctx);
  out.decoder_hidden =
      model.decoder.decode(dec_ids, input.decoder_inputs_embeds, input.decoder_attention_mask, out.encoder, nullptr, ctx);
  out.logits = lm_logits(out.decoder_hidden);
  if (input.labels.defined()) out.loss = seq2seq_lm_loss(out.logits, input.labels);
  return out;
}

}  // namespace vlp
