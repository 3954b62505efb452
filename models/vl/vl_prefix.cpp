// GPT-2 with a visual prefix and the encoder classifier (see vl_prefix.h).
#include "models/vl/vl_prefix.h"

#include "autograd/ops.h"
#include "runtime/error.h"
#include "runtime/rng.h"

namespace vlp {

GPT2WithVisualPrefix::GPT2WithVisualPrefix(const GPT2Config& config, int64_t vdim) : visual_dim(vdim) {
  gpt2 = std::make_unique<GPT2LMHeadModel>(config);
  for (const auto& [name, child] : gpt2->children()) register_module(name, child);
  if (vdim != config.n_embd) {
    visual_projection = std::make_unique<Linear>(vdim, config.n_embd);
    register_module("visual_projection", visual_projection.get());
  }
}

Tensor GPT2WithVisualPrefix::visual_token(const Tensor& pooled, const ForwardContext& ctx) const {
  VLP_CHECK(pooled.dim() == 2 && pooled.size(1) == visual_dim, "GPT2WithVisualPrefix: pooled must be [B, ",
            visual_dim, "]");
  Tensor v = to(pooled, gpt2->transformer.wte.weight.dtype());
  if (visual_projection) v = visual_projection->forward(v, ctx);
  return unsqueeze(v, 1);
}

CausalLMOutput GPT2WithVisualPrefix::forward(const Tensor& pooled, const Tensor& input_ids,
                                             const Tensor& attention_mask, const Tensor& labels,
                                             const ForwardContext& ctx) const {
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  GPT2Input in;
  in.inputs_embeds = concat({visual_token(pooled, ctx), gpt2->transformer.wte.forward(input_ids)}, 1);
  if (attention_mask.defined()) in.attention_mask = concat_masks(Tensor(), 1, attention_mask, T, B, input_ids.device());
  if (labels.defined())
    in.labels = concat({full({B, 1}, -100.0, DType::I64, labels.device()), to(labels, DType::I64)}, 1);
  return gpt2->forward(in, ctx);
}

GenerationOutput GPT2WithVisualPrefix::generate(const Tensor& pooled, const Tensor& prompt_ids,
                                                const GenerationOptions& options, const ForwardContext& ctx) const {
  GPT2Input in;
  Tensor v = visual_token(pooled, ctx);
  in.inputs_embeds = prompt_ids.defined() ? concat({v, gpt2->transformer.wte.forward(prompt_ids)}, 1) : v;
  return vlp::generate(*gpt2, in, options, ctx);
}

VLEncoderClassifier::VLEncoderClassifier(const VLSeq2SeqConfig& cfg, int64_t n_answers)
    : config(cfg),
      dense(cfg.backbone == "t5" ? cfg.t5.d_model : cfg.bart.d_model,
            2 * (cfg.backbone == "t5" ? cfg.t5.d_model : cfg.bart.d_model)),
      out_proj(2 * (cfg.backbone == "t5" ? cfg.t5.d_model : cfg.bart.d_model), n_answers),
      layer_norm(2 * (cfg.backbone == "t5" ? cfg.t5.d_model : cfg.bart.d_model)) {
  if (cfg.backbone == "t5") {
    t5 = std::make_unique<T5ForConditionalGeneration>(cfg.t5);
    for (const auto& [name, child] : t5->children()) register_module(name, child);
  } else if (cfg.backbone == "bart") {
    bart = std::make_unique<BartForConditionalGeneration>(cfg.bart);
    for (const auto& [name, child] : bart->children()) register_module(name, child);
  } else {
    VLP_FAIL("VLEncoderClassifier: backbone '", cfg.backbone, "' is not one of t5, bart");
  }
  if (cfg.feat_dim != d_model()) {
    visual_projection = std::make_unique<Linear>(cfg.feat_dim, d_model());
    register_module("visual_projection", visual_projection.get());
  }
  classifier.register_module("0", &dense);
  classifier.register_module("1", &layer_norm);
  classifier.register_module("2", &out_proj);
  register_module("classifier", &classifier);
}

EncoderOutput VLEncoderClassifier::encode(const Tensor& visual, const Tensor& input_ids, const Tensor& attention_mask,
                                          const ForwardContext& ctx) const {
  VLP_CHECK(visual.dim() == 2 && visual.size(1) == config.feat_dim, "VLEncoderClassifier: visual must be [B, ",
            config.feat_dim, "]");
  const Embedding& shared = t5 ? t5->shared : bart->model.shared;
  Tensor v = to(visual, shared.weight.dtype());
  if (visual_projection) v = visual_projection->forward(v, ctx);
  Tensor text = shared.forward(input_ids);
  if (bart && config.bart.scale_embedding) text = mul(text, std::sqrt(double(config.bart.d_model)));
  EncoderInput in;
  in.inputs_embeds = concat({unsqueeze(v, 1), text}, 1);
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  if (attention_mask.defined()) in.attention_mask = concat_masks(Tensor(), 1, attention_mask, T, B, input_ids.device());
  return t5 ? t5->encode(in, ctx) : bart->encode(in, ctx);
}

Tensor VLEncoderClassifier::head(const Tensor& pooled) const {
  return out_proj.forward(gelu(layer_norm.forward(dense.forward(pooled))));
}

Tensor VLEncoderClassifier::forward(const Tensor& visual, const Tensor& input_ids, const Tensor& attention_mask,
                                    const ForwardContext& ctx) const {
  EncoderOutput enc = encode(visual, input_ids, attention_mask, ctx);
  return head(select(enc.hidden, 1, 0));
}

Tensor soft_score_bce(const Tensor& logits, const Tensor& scores) {
  return binary_cross_entropy_with_logits(to(logits, DType::F32), to(scores, DType::F32), Reduction::Mean);
}

}  // namespace vlp
