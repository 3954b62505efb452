// GPT-2 (Radford et al., "Language Models are Unsupervised Multitask Learners", 2019) as transformers'
// GPT2LMHeadModel: learned token and position embeddings, pre-LN blocks of causal self-attention (fused QKV
// Conv1D) and an MLP, a final LayerNorm, and the LM head tied to the token embedding. Every size comes from
// the config, so gpt2, gpt2-medium, -large and -xl are the same code.
//
// Parameter names (exactly transformers'): transformer.wte, transformer.wpe, transformer.h.N.ln_1,
// transformer.h.N.attn.c_attn, transformer.h.N.attn.c_proj, transformer.h.N.ln_2, transformer.h.N.mlp.c_fc,
// transformer.h.N.mlp.c_proj, transformer.ln_f; lm_head.weight only when tie_word_embeddings is false.
//
// Adaptation sites (models/site.h):
//   transformer.input_site       token embeddings (+ token types) before positions are added; prompts inserted
//                                here receive positions like tokens (as PEFT prompt tuning does), and only on
//                                the first call of a decoding run (an empty cache)
//   transformer.h.N.attn.attn_site   inside the self-attention block
//   transformer.h.N.sa_site      after the attention (input: ln_1(x); output: c_proj + dropout)
//   transformer.h.N.ff_site      after the MLP (input: ln_2(h); output: c_proj + dropout)
#pragma once
#include <memory>
#include <vector>

#include "models/attention.h"
#include "models/config.h"

namespace vlp {

struct GPT2Attention : Module {
  Linear c_attn, c_proj;   // Conv1D layout ([in, out])
  AttentionSite attn_site;
  int64_t heads;
  AttentionSpec spec;
  double resid_pdrop;
  GPT2Attention(const GPT2Config& config, int64_t layer_index);
  // x [B, T, D] (already ln_1), key mask [B, past + T] (Bool) or undefined.
  Tensor forward(const Tensor& x, const Tensor& key_mask, KVCache* cache, const ForwardContext& ctx) const;
  const char* type_name() const override { return "GPT2Attention"; }
};

struct GPT2MLP : Module {
  Linear c_fc, c_proj;
  ActivationFn act;
  double resid_pdrop;
  explicit GPT2MLP(const GPT2Config& config);
  Tensor forward(const Tensor& x, const ForwardContext& ctx) const;  // up to the last projection, no dropout
  const char* type_name() const override { return "GPT2MLP"; }
};

struct GPT2Block : Module {
  LayerNorm ln_1;
  GPT2Attention attn;
  LayerNorm ln_2;
  GPT2MLP mlp;
  SublayerSite sa_site, ff_site;
  GPT2Block(const GPT2Config& config, int64_t layer_index);
  Tensor forward(const Tensor& x, const Tensor& key_mask, KVCache* cache, const ForwardContext& ctx) const;
  const char* type_name() const override { return "GPT2Block"; }
};

// Inputs of one forward. Exactly one of input_ids / inputs_embeds.
struct GPT2Input {
  Tensor input_ids;       // [B, T] I64 (new tokens only when decoding with a cache)
  Tensor inputs_embeds;   // [B, T, D] instead of ids
  Tensor attention_mask;  // [B, past + T], 1 = attend; undefined = all ones
  Tensor position_ids;    // [B, T] or [1, T]; undefined = past .. past + T - 1
  Tensor token_type_ids;  // [B, T], embedded with wte (as transformers does); optional
  Tensor labels;          // [B, T]: loss of predicting token t+1 from position t; -100 ignored
};

struct GPT2Model : Module {
  GPT2Config config;
  Embedding wte, wpe;
  Module h;  // children "0", "1", ...
  std::vector<std::unique_ptr<GPT2Block>> blocks;
  LayerNorm ln_f;
  InputSite input_site;
  explicit GPT2Model(const GPT2Config& config);
  // Final hidden states [B, T', D] (T' = T plus any positions the input site inserted). The mask actually
  // used (after the input site) is written to *mask_out when given.
  Tensor forward(const GPT2Input& input, DecoderCache* cache, const ForwardContext& ctx,
                 Tensor* mask_out = nullptr) const;
  const char* type_name() const override { return "GPT2Model"; }
};

struct CausalLMOutput {
  Tensor logits;  // [B, T, V]
  Tensor loss;    // scalar mean cross-entropy over non-ignored shifted labels; undefined without labels
  Tensor hidden;  // final hidden states [B, T, D]
};

struct GPT2LMHeadModel : Module {
  GPT2Config config;
  GPT2Model transformer;
  std::unique_ptr<Linear> lm_head;  // only when the config unties it; else logits = h wte^T
  explicit GPT2LMHeadModel(const GPT2Config& config);
  CausalLMOutput forward(const GPT2Input& input, const ForwardContext& ctx = {}, DecoderCache* cache = nullptr) const;
  Tensor lm_logits(const Tensor& hidden) const;
  const char* type_name() const override { return "GPT2LMHeadModel"; }
};

// transformers' causal LM loss: labels shifted left by one (position t predicts label t+1), -100 ignored,
// mean over the remaining tokens. logits [B, T, V], labels [B, T].
Tensor causal_lm_loss(const Tensor& logits, const Tensor& labels);

}  // namespace vlp
