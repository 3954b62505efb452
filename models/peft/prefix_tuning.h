// Prefix tuning (Li & Liang, 2021; spec/peft.md §4.13): learned keys and values prepended in self-attention.
// The encoder output [num_virtual_tokens, num_layers * 2 * token_dim] is read per layer as one column block
// of keys and the next of values, split into heads (HF's past_key_values layout). With prefix_projection the
// table is [n, token_dim] through Linear(d, encoder_hidden_size) Tanh Linear(encoder_hidden_size,
// num_layers * 2 * d). Real tokens keep positions after the prefix, as in HF (the prefix counts as past):
// AttentionAdapter::prefix_length tells the backbone (GPT-2 and BART learned positions, T5 relative ones).
//
// Where the prefixes go, as HF PEFT 0.21.2 does it:
//   - GPT-2 (decoder-only, num_transformer_submodules 1): every self-attention, layer l reads key block 2l and
//     value block 2l + 1;
//   - T5 and BART (SEQ_2_SEQ_LM, num_transformer_submodules 2): only the decoder's self-attention. HF
//     duplicates the 2L blocks to 4L, cuts them into L groups of (self key, self value, cross key, cross
//     value) and then drops the cross-attention part (the cross-attention cache is emptied, so cross-attention
//     reads the encoder output alone); the encoder gets no prefix. Decoder layer l thus reads key block
//     (4l mod 2L) and value block (4l mod 2L) + 1, and half of the table's blocks are never read. L is the
//     config's num_layers (transformers' num_hidden_layers: T5 num_layers, BART encoder_layers) and must equal
//     the decoder's layer count.
// The attention mask of the prefixed attention gets n ones in front (when the call has a padding mask).
//
// VLPEFT_PREFIX_TUNING (project type, spec §4.13: encoder and cross-attention prefixes as adapter-hub/adapters
// offers them): one key block and one value block per prefixed attention, in the order encoder self-attention
// layers, decoder self-attention layers, decoder cross-attention layers (only the enabled locations), site k
// reading blocks 2k and 2k + 1 of a table [n, S * 2 * d] (S sites), or of E [n, d] through
// Linear(d, encoder_hidden_size) Tanh Linear(encoder_hidden_size, S * 2 * d) with prefix_projection. Fields:
// num_virtual_tokens, locations (list of "encoder", "decoder", "cross"; default all three on T5 / BART,
// "decoder" on GPT-2), prefix_projection (false), encoder_hidden_size (d), use_gating (false: UniPELT's gate,
// gate.h, one per prefixed attention on that attention's input, scaling its prefix keys and values). Prefix
// keys count as past positions wherever the backbone has a notion of it (BART / GPT-2 decoder positions
// start after them; T5's relative bias puts them before the queries); BART's encoder positions are
// unchanged. The file keeps the table and the MLP ("prompt_encoder.embedding.weight",
// "prompt_encoder.transform.{0,2}.{weight,bias}").
#pragma once
#include <memory>

#include "models/peft/gate.h"
#include "models/peft/prompt_tuning.h"

namespace vlp::peft {

struct PrefixAdapter : AttentionAdapter {
  PromptEncoder* encoder;
  int64_t key_block, count, heads;  // keys are column block key_block, values key_block + 1
  std::unique_ptr<TokenGate> gate;  // use_gating (VLPEFT_PREFIX_TUNING): keys and values times g(x)
  PrefixAdapter(PromptEncoder* e, int64_t key_block_, int64_t n, int64_t h)
      : encoder(e), key_block(key_block_), count(n), heads(h) {}
  // UniPELT's gate on the attention input (one shared output for keys and values, as adapters' default
  // shared_gating): W_g ~ N(0, 0.02), nn.Linear's bias init.
  void add_gate(int64_t d, Generator& gen);
  void before(AttentionState& state, const ForwardContext& ctx) override;
  int64_t prefix_length() const override { return count; }
  const char* type_name() const override { return "PrefixAdapter"; }
};

void attach_prefix_tuning(AttachContext& ctx);
void attach_vl_prefix_tuning(AttachContext& ctx);

}  // namespace vlp::peft
