// BART (Lewis et al., "BART: Denoising Sequence-to-Sequence Pre-training for Natural Language Generation,
// Translation, and Comprehension", ACL 2020) as transformers' BartForConditionalGeneration: post-LN encoder
// and decoder layers, learned positions with offset 2, layernorm_embedding, token embeddings scaled by
// sqrt(d_model) when scale_embedding, the activation from the config, the LM head tied to model.shared plus
// the final_logits_bias buffer. As in transformers, the token embedding passes no gradient through lookups of
// the pad id (nn.Embedding's padding_idx).
//
// Parameter names (exactly transformers'): model.shared, model.{encoder,decoder}.embed_positions,
// model.{encoder,decoder}.layernorm_embedding, model.{encoder,decoder}.layers.N.self_attn.{q,k,v,out}_proj,
// .self_attn_layer_norm, .fc1, .fc2, .final_layer_norm, model.decoder.layers.N.encoder_attn.{q,k,v,out}_proj
// and .encoder_attn_layer_norm; the buffer final_logits_bias [1, vocab].
//
// Adaptation sites (models/site.h), S = model.encoder | model.decoder:
//   S.input_site   token + position embeddings before layernorm_embedding (prompts get no position
//                  embedding, as VL-Adapter's BART; decoder: first call only)
//   S.layers.N.self_attn.attn_site, model.decoder.layers.N.encoder_attn.attn_site
//   S.layers.N.sa_site, model.decoder.layers.N.ca_site, S.layers.N.ff_site
//                  inside LN(x + site(x, Drop(sublayer(x)))): input is the layer's input x
#pragma once
#include <memory>
#include <vector>

#include "models/attention.h"
#include "models/config.h"
#include "models/seq2seq.h"

namespace vlp {

struct BartAttention : Module {
  Linear k_proj, v_proj, q_proj, out_proj;
  AttentionSite attn_site;
  int64_t heads;
  double dropout;
  BartAttention(int64_t d_model, int64_t heads, double dropout);
  // kv_source undefined = self-attention.
  Tensor forward(const Tensor& x, const Tensor& kv_source, const Tensor& key_mask, bool causal, KVCache* cache,
                 const ForwardContext& ctx) const;
  const char* type_name() const override { return "BartAttention"; }
};

struct BartLayer : Module {
  BartAttention self_attn;
  LayerNorm self_attn_layer_norm;
  std::unique_ptr<BartAttention> encoder_attn;         // decoder only
  std::unique_ptr<LayerNorm> encoder_attn_layer_norm;  // decoder only
  Linear fc1, fc2;
  LayerNorm final_layer_norm;
  SublayerSite sa_site, ff_site;
  std::unique_ptr<SublayerSite> ca_site;               // decoder only
  ActivationFn act;
  double dropout, activation_dropout;
  BartLayer(const BartConfig& config, bool is_decoder);
  // encoder_hidden undefined for encoder layers.
  Tensor forward(const Tensor& x, const Tensor& key_mask, const Tensor& encoder_hidden, const Tensor& encoder_mask,
                 DecoderCache* cache, size_t layer_index, const ForwardContext& ctx) const;
  const char* type_name() const override { return "BartLayer"; }
};

struct BartStack : Module {
  BartConfig config;
  bool is_decoder;
  const Embedding* embed_tokens;  // model.shared (registered there only)
  double embed_scale;
  Embedding embed_positions;      // [max_position_embeddings + 2, d]
  Module layers;                  // children "0", "1", ...
  std::vector<std::unique_ptr<BartLayer>> blocks;
  LayerNorm layernorm_embedding;
  InputSite input_site;
  BartStack(const BartConfig& config, bool is_decoder, const Embedding* embed_tokens);

  EncoderOutput encode(const EncoderInput& input, const ForwardContext& ctx) const;
  Tensor decode(const Tensor& ids, const Tensor& embeds, const Tensor& mask, const EncoderOutput& encoder,
                DecoderCache* cache, const ForwardContext& ctx) const;
  const char* type_name() const override { return "BartStack"; }

 private:
  // Token embeddings (scaled) plus learned positions past .. past + T - 1.
  Tensor embed(const Tensor& ids, const Tensor& embeds, int64_t past) const;
};

struct BartModel : Module {
  Embedding shared;
  BartStack encoder, decoder;
  explicit BartModel(const BartConfig& config);
};

struct BartForConditionalGeneration : Module {
  BartConfig config;
  BartModel model;
  Tensor final_logits_bias;  // buffer [1, vocab]
  explicit BartForConditionalGeneration(const BartConfig& config);

  // Without decoder inputs and labels the decoder reads shift_tokens_right(input_ids), as transformers does.
  Seq2SeqOutput forward(const Seq2SeqInput& input, const ForwardContext& ctx = {}) const;
  EncoderOutput encode(const EncoderInput& input, const ForwardContext& ctx = {}) const {
    return model.encoder.encode(input, ctx);
  }
  Tensor decode(const Tensor& decoder_ids, const Tensor& decoder_mask, const EncoderOutput& encoder_output,
                DecoderCache* cache, const ForwardContext& ctx) const {
    return model.decoder.decode(decoder_ids, Tensor(), decoder_mask, encoder_output, cache, ctx);
  }
  Tensor lm_logits(const Tensor& decoder_hidden) const;
  int64_t decoder_start_token_id() const;
  const char* type_name() const override { return "BartForConditionalGeneration"; }
};

}  // namespace vlp
