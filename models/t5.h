// T5 (Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer",
// JMLR 2020) as transformers' T5ForConditionalGeneration, v1.0 and v1.1 from the config:
//   - pre-LN blocks with RMSNorm (no mean subtraction, no bias), bias-free projections, no attention scaling;
//   - relative position buckets learned in block 0 of each stack (bidirectional in the encoder, causal in
//     the decoder) and shared by its layers; no position bias in cross-attention;
//   - feed-forward wi -> relu -> wo (v1.0) or gated gelu_new(wi_0) * wi_1 -> wo (v1.1);
//   - lm_head tied to `shared` with the decoder output scaled by d_model^-0.5 (v1.0), or its own weight and
//     no scaling (v1.1: tie_word_embeddings false).
//
// Parameter names (exactly transformers'): shared, {encoder,decoder}.block.N.layer.0.SelfAttention.{q,k,v,o},
// {...}.block.0.layer.0.SelfAttention.relative_attention_bias, {...}.block.N.layer.0.layer_norm,
// decoder.block.N.layer.1.EncDecAttention.{q,k,v,o} and .layer.1.layer_norm, the feed-forward
// block.N.layer.{1 encoder | 2 decoder}.DenseReluDense.{wi | wi_0, wi_1, wo} and .layer_norm,
// {encoder,decoder}.final_layer_norm, lm_head (v1.1).
//
// Adaptation sites (models/site.h), S = encoder | decoder:
//   S.input_site                          token embeddings entering the stack (prompt positions get
//                                         relative positions like tokens; decoder: first call only)
//   S.block.N.layer.0.SelfAttention.attn_site, decoder.block.N.layer.1.EncDecAttention.attn_site
//   S.block.N.sa_site, decoder.block.N.ca_site, S.block.N.ff_site
//                                         after self-attention, cross-attention, feed-forward; input is the
//                                         normalised sublayer input, output the sublayer output
#pragma once
#include <memory>
#include <vector>

#include "models/attention.h"
#include "models/config.h"
#include "models/seq2seq.h"

namespace vlp {

struct T5Attention : Module {
  Linear q, k, v, o;
  std::unique_ptr<Embedding> relative_attention_bias;  // [num_buckets, heads], block 0 self-attention only
  AttentionSite attn_site;
  int64_t heads;
  double dropout;
  T5Attention(const T5Config& config, bool has_relative_attention_bias);
  // x [B, T, D] normalised input; kv_source [B, S, D] for cross-attention (undefined = self); `bias` the
  // stack's shared position bias (self-attention) or empty.
  Tensor forward(const Tensor& x, const Tensor& kv_source, const Tensor& key_mask, bool causal,
                 const std::function<Tensor(int64_t, int64_t)>& bias, KVCache* cache,
                 const ForwardContext& ctx) const;
  const char* type_name() const override { return "T5Attention"; }
};

struct T5LayerSelfAttention : Module {
  T5Attention SelfAttention;
  RMSNorm layer_norm;
  T5LayerSelfAttention(const T5Config& config, bool has_relative_attention_bias);
};

struct T5LayerCrossAttention : Module {
  T5Attention EncDecAttention;
  RMSNorm layer_norm;
  explicit T5LayerCrossAttention(const T5Config& config);
};

// wi -> act -> dropout -> wo, or act(wi_0) * wi_1 -> dropout -> wo when gated.
struct T5DenseActDense : Module {
  std::unique_ptr<Linear> wi, wi_0, wi_1;
  Linear wo;
  ActivationFn act;
  double dropout;
  explicit T5DenseActDense(const T5Config& config);
  Tensor forward(const Tensor& x, const ForwardContext& ctx) const;
};

struct T5LayerFF : Module {
  T5DenseActDense DenseReluDense;
  RMSNorm layer_norm;
  explicit T5LayerFF(const T5Config& config);
};

struct T5Block : Module {
  Module layer;  // "0" self-attention, "1" cross-attention (decoder), then feed-forward
  T5LayerSelfAttention self_attention;
  std::unique_ptr<T5LayerCrossAttention> cross_attention;
  T5LayerFF feed_forward;
  SublayerSite sa_site, ff_site;
  std::unique_ptr<SublayerSite> ca_site;  // decoder only
  double dropout;
  T5Block(const T5Config& config, bool is_decoder, bool has_relative_attention_bias);
};

struct T5Stack : Module {
  T5Config config;
  bool is_decoder;
  const Embedding* embed_tokens;  // the model's `shared` (not registered here: one parameter, one name)
  Module block;                   // children "0", "1", ...
  std::vector<std::unique_ptr<T5Block>> blocks;
  RMSNorm final_layer_norm;
  InputSite input_site;
  T5Stack(const T5Config& config, bool is_decoder, const Embedding* embed_tokens);

  EncoderOutput encode(const EncoderInput& input, const ForwardContext& ctx) const;
  // Decoder hidden states [B, L, D] for ids (or embeds) [B, L] after any cached steps.
  Tensor decode(const Tensor& ids, const Tensor& embeds, const Tensor& mask, const EncoderOutput& encoder,
                DecoderCache* cache, const ForwardContext& ctx) const;
  const char* type_name() const override { return "T5Stack"; }

 private:
  Tensor run_blocks(Tensor hidden, const Tensor& key_mask, const std::function<Tensor(int64_t, int64_t)>& bias,
                    const EncoderOutput* encoder, DecoderCache* cache, const ForwardContext& ctx) const;
};

struct T5ForConditionalGeneration : Module {
  T5Config config;
  Embedding shared;
  T5Stack encoder, decoder;
  std::unique_ptr<Linear> lm_head;  // v1.1 (untied); v1.0 uses shared.weight
  explicit T5ForConditionalGeneration(const T5Config& config);

  Seq2SeqOutput forward(const Seq2SeqInput& input, const ForwardContext& ctx = {}) const;
  EncoderOutput encode(const EncoderInput& input, const ForwardContext& ctx = {}) const {
    return encoder.encode(input, ctx);
  }
  // Decoder hidden states for new decoder ids [B, L] (the cache holds earlier steps).
  Tensor decode(const Tensor& decoder_ids, const Tensor& decoder_mask, const EncoderOutput& encoder_output,
                DecoderCache* cache, const ForwardContext& ctx) const {
    return decoder.decode(decoder_ids, Tensor(), decoder_mask, encoder_output, cache, ctx);
  }
  Tensor lm_logits(const Tensor& decoder_hidden) const;
  // decoder_start_token_id from the config; an error naming the key when the config has none.
  int64_t decoder_start_token_id() const;
  const char* type_name() const override { return "T5ForConditionalGeneration"; }
};

}  // namespace vlp
