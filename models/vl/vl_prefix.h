// Two more VL model shapes (spec/peft.md §3.4, §3.5):
//   - GPT2WithVisualPrefix: a pooled image vector (e.g. ViT's pooler output) prepended to GPT-2's token
//     embeddings as position 0, unprojected when the widths agree, through a trainable Linear otherwise;
//     captioning loss over the text positions only; generation from the embeddings.
//   - VLEncoderClassifier: a T5 or BART encoder reading [x_R; token embeddings] (the visual vector first),
//     pooled = final hidden state at position 0, classifier Linear(d, 2d) -> LayerNorm -> GELU ->
//     Linear(2d, n_answers), loss = BCE with logits against soft scores, mean over batch x answers.
// Backbone parameters keep transformers' names (the backbone's children are registered at top level).
#pragma once
#include <memory>
#include "models/generate.h"
#include "models/gpt2.h"
#include "models/vl/vl_seq2seq.h"

namespace vlp {

struct GPT2WithVisualPrefix : Module {
  std::unique_ptr<GPT2LMHeadModel> gpt2;
  std::unique_ptr<Linear> visual_projection;  // only when visual_dim != n_embd
  int64_t visual_dim;
  GPT2WithVisualPrefix(const GPT2Config& config, int64_t visual_dim);
  // [B, 1, D]: the visual token.
  Tensor visual_token(const Tensor& pooled, const ForwardContext& ctx = {}) const;
  // pooled [B, Dv], input_ids [B, T], attention_mask [B, T] (undefined = all ones), labels [B, T] or
  // undefined. Logits cover [visual; text] (T + 1 positions); the loss is over the text labels.
  CausalLMOutput forward(const Tensor& pooled, const Tensor& input_ids, const Tensor& attention_mask,
                         const Tensor& labels, const ForwardContext& ctx = {}) const;
  // Generates after [visual; prompt] (prompt may be undefined: the visual token alone). Returns the
  // generated tokens only (transformers' rule for generation from embeddings).
  GenerationOutput generate(const Tensor& pooled, const Tensor& prompt_ids, const GenerationOptions& options = {},
                            const ForwardContext& ctx = {}) const;
  const char* type_name() const override { return "GPT2WithVisualPrefix"; }
};

struct VLEncoderClassifier : Module {
  VLSeq2SeqConfig config;
  std::unique_ptr<T5ForConditionalGeneration> t5;
  std::unique_ptr<BartForConditionalGeneration> bart;
  std::unique_ptr<Linear> visual_projection;  // only when feat_dim != d_model
  Module classifier;                          // "0" dense, "1" layer_norm, "2" out_proj
  Linear dense, out_proj;
  LayerNorm layer_norm;
  VLEncoderClassifier(const VLSeq2SeqConfig& config, int64_t n_answers);
  int64_t d_model() const { return t5 ? config.t5.d_model : config.bart.d_model; }
  // The encoder over [x_R; text]; visual [B, Dv].
  EncoderOutput encode(const Tensor& visual, const Tensor& input_ids, const Tensor& attention_mask,
                       const ForwardContext& ctx = {}) const;
  // Logits [B, n_answers] from the pooled position 0.
  Tensor forward(const Tensor& visual, const Tensor& input_ids, const Tensor& attention_mask,
                 const ForwardContext& ctx = {}) const;
  Tensor head(const Tensor& pooled) const;
  const char* type_name() const override { return "VLEncoderClassifier"; }
};

// BCE with logits against soft scores [B, A], mean over B x A (spec §3.5).
Tensor soft_score_bce(const Tensor& logits, const Tensor& scores);

}  // namespace vlp
