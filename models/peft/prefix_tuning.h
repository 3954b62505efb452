// Prefix tuning (Li & Liang, 2021; spec/peft.md §4.13): learned keys and values prepended in every
// self-attention layer. The encoder output [num_virtual_tokens, num_layers * 2 * token_dim] is read per
// layer l as keys = column block 2l, values = 2l + 1, split into heads (HF's past_key_values layout). With
// prefix_projection the table is [n, token_dim] through Linear(d, encoder_hidden_size) Tanh
// Linear(encoder_hidden_size, num_layers * 2 * d). Real tokens keep positions after the prefix, as in HF
// (the prefix counts as past): AttentionAdapter::prefix_length tells the backbone.
// Supported backbone: GPT-2. Encoder-decoders (HF puts the prefix in the decoder's self- and cross-attention
// caches) are refused.
#pragma once
#include "models/peft/prompt_tuning.h"

namespace vlp::peft {

struct PrefixAdapter : AttentionAdapter {
  PromptEncoder* encoder;
  int64_t layer, count, heads;
  PrefixAdapter(PromptEncoder* e, int64_t layer_, int64_t n, int64_t h) : encoder(e), layer(layer_), count(n), heads(h) {}
  void before(AttentionState& state, const ForwardContext& ctx) override;
  int64_t prefix_length() const override { return count; }
  const char* type_name() const override { return "PrefixAdapter"; }
};

void attach_prefix_tuning(AttachContext& ctx);

}  // namespace vlp::peft
