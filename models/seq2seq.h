// What the encoder-decoder backbones (T5, BART) and their VL variants share: encoder inputs and outputs,
// decoder inputs, labels-to-decoder-inputs shifting and the LM loss, as transformers defines them.
#pragma once
#include "runtime/tensor.h"

namespace vlp {

// Inputs of an encoder stack. Exactly one of input_ids / inputs_embeds.
struct EncoderInput {
  Tensor input_ids;       // [B, T] I64
  Tensor inputs_embeds;   // [B, T, D], used as given (BART: no embedding scale, as transformers)
  Tensor attention_mask;  // [B, T], 1 = attend; undefined = all ones
  // Positions appended after the embedding stage, e.g. the visual tokens of VL-T5 / VL-BART: they get no
  // position embedding, come after BART's layernorm_embedding, and every T5 relative-position pair that
  // involves one of them gets bias 0. Embedding dropout applies to the whole sequence.
  Tensor appended_embeds;  // [B, N, D]
  Tensor appended_mask;    // [B, N]; undefined = all ones
};

struct EncoderOutput {
  Tensor hidden;  // [B, S, D]: final hidden states over every position (prompts, text, appended)
  Tensor mask;    // [B, S], 1 = valid; undefined = all valid
  bool defined() const { return hidden.defined(); }
};

struct Seq2SeqInput {
  EncoderInput encoder;
  EncoderOutput encoder_output;   // when defined, the encoder is not run again
  Tensor decoder_input_ids;       // [B, L]; undefined = shift_tokens_right(labels)
  Tensor decoder_inputs_embeds;   // [B, L, D] instead of ids
  Tensor decoder_attention_mask;  // [B, past + L]; undefined = causal mask only (as transformers)
  Tensor labels;                  // [B, L] I64, -100 ignored
};

struct Seq2SeqOutput {
  Tensor logits;          // [B, L, V]
  Tensor loss;            // mean cross-entropy over labels != -100; undefined without labels
  EncoderOutput encoder;  // what the decoder attended to
  Tensor decoder_hidden;  // [B, L, D] before the LM head
};

// transformers' shift_tokens_right / T5._shift_right: [start, ids[:-1]] with -100 replaced by the pad id.
Tensor shift_tokens_right(const Tensor& ids, int64_t pad_token_id, int64_t decoder_start_token_id);
// Mean cross-entropy of logits [B, L, V] against labels [B, L], ignoring -100 (computed in F32).
Tensor seq2seq_lm_loss(const Tensor& logits, const Tensor& labels);

// The mask of [a; b] along dim 1 from masks of a ([B, Ta]) and b ([B, Tb]), either undefined meaning all
// ones; undefined when both are. Returned as I64.
Tensor concat_masks(const Tensor& a, int64_t Ta, const Tensor& b, int64_t Tb, int64_t B, Device device);

}  // namespace vlp
