// VL-T5 and VL-BART (Cho et al., ICML 2021; as used by VL-Adapter, spec/peft.md §2.2-2.3, §2.11, §2.13):
// a T5 or BART encoder-decoder whose encoder reads [text; visual] where every visual token i is
//
//     e_i = N_f(W_f v_i + c_f) + N_p(W_p [b_i; a_i] + c_p) + E_img[img_id_i] + E_tok[V - 1 - obj_id_i]
//
// with b_i = (x1, x2, y1, y2), a_i = (x2 - x1)(y2 - y1), N = LayerNorm (BART) or bias-free RMSNorm (T5),
// E_img a trainable 2 x d table and E_tok the backbone's shared token embedding (read, never owned here).
// The visual tokens enter through EncoderInput::appended_embeds, so they get no position embedding, come
// after BART's layernorm_embedding and every T5 relative-position pair involving one of them gets bias 0.
//
// Parameter names: the backbone's own (transformers' names, so PEFT targets and checkpoints match), plus
// visual_embedding.feat_embedding.{0 = W_f, 1 = N_f}, visual_embedding.absolute_vis_pos_embedding.{0, 1},
// visual_embedding.img_order_embedding (the original VL-T5 names).
//
// Optional vision tower (VLSeq2SeqConfig::vision set): a ViT encoder without pooler (models/vit.h, HF ViTModel
// layout) owned as the child "vision_model" ("vision_model.embeddings.patch_embeddings.projection.weight", ...).
// The model then reads images (VisualInput::pixels) instead of features: v_i are the tower's final-LayerNorm
// patch tokens, CLS dropped, so the visual tokens are the grid_h x grid_w patches in row-major order, the
// same token layout as precomputed grid features (`extract-features --mode patches`); the CLS token still takes
// part in the tower's attention. The visual embedding's feature width is the tower's hidden size.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include "models/bart.h"
#include "models/generate.h"
#include "models/t5.h"
#include "models/vit.h"

namespace vlp {

// Visual tokens of a batch: `feats` for a model without a vision tower, `pixels` for one with a tower.
struct VisualInput {
  Tensor feats;    // [B, N, F] region or grid features (model without vision tower)
  Tensor boxes;    // [B, N, 4] (x1, x2, y1, y2) in [0, 1]; undefined = all zero (grid features)
  Tensor img_ids;  // [B, N] I64 image order (0, or 0/1 for NLVR2's two images); undefined = 0
  Tensor obj_ids;  // [B, N] I64 object order; undefined = 0..N/n_images-1 within each image
  Tensor mask;     // [B, N] 1 = valid; undefined = all valid
  int64_t n_images = 1;  // images per example (NLVR2: 2), used for the default img_ids / obj_ids
  // [B * n_images, C, H, W] images, an example's images consecutive (model with vision tower): the tower's
  // N = n_images * grid_h * grid_w patch tokens are the features. Last, so positional initialisers keep working.
  Tensor pixels;
};

// Default image-order and object-order ids for N tokens split evenly over n_images images: img_id = the
// image a token belongs to, obj_id = its index inside that image. Both [B, N] I64.
Tensor default_img_ids(int64_t B, int64_t N, int64_t n_images);
Tensor default_obj_ids(int64_t B, int64_t N, int64_t n_images);

struct VisualEmbedding : Module {
  bool rms;                    // T5: RMSNorm, BART: LayerNorm
  Module feat_embedding, absolute_vis_pos_embedding;
  Linear feat_proj, pos_proj;  // registered as feat_embedding.0 / absolute_vis_pos_embedding.0
  std::unique_ptr<LayerNorm> feat_ln, pos_ln;
  std::unique_ptr<RMSNorm> feat_rms, pos_rms;
  Embedding img_order_embedding;  // [2, d]
  const Embedding* obj_order_embedding;  // the backbone's shared token embedding
  VisualEmbedding(int64_t feat_dim, int64_t d_model, bool rms_norm, double eps, const Embedding* shared);
  // [B, N, d] from the visual input (see the formula above).
  Tensor forward(const VisualInput& visual) const;
  const char* type_name() const override { return "VisualEmbedding"; }
};

struct VLSeq2SeqConfig {
  std::string backbone = "t5";  // "t5" | "bart"
  T5Config t5;
  BartConfig bart;
  int64_t feat_dim = 2048;  // ignored with a vision tower (its hidden_size is the feature width)
  std::optional<ViTConfig> vision;  // set: a ViT tower "vision_model" turns VisualInput::pixels into the features
};

struct VLSeq2Seq : Module {
  VLSeq2SeqConfig config;
  std::unique_ptr<T5ForConditionalGeneration> t5;      // exactly one of the two
  std::unique_ptr<BartForConditionalGeneration> bart;
  std::unique_ptr<VisualEmbedding> visual_embedding;
  std::unique_ptr<ViTModel> vision_model;  // the vision tower (config.vision set), no pooler
  explicit VLSeq2Seq(const VLSeq2SeqConfig& config);

  Module& backbone() { return t5 ? static_cast<Module&>(*t5) : static_cast<Module&>(*bart); }
  // This model lists the backbone's children as its own (so names follow the original VL-T5 / VL-BART
  // checkpoints). PEFT adds children to the backbone later (prompt tables "peft_shared.<name>", adapter
  // state); call this after peft::add_adapter(backbone(), ...) so they are listed here too.
  void adopt_backbone_children();
  const Embedding& shared() const { return t5 ? t5->shared : bart->model.shared; }
  int64_t vocab_size() const { return t5 ? config.t5.vocab_size : config.bart.vocab_size; }
  int64_t d_model() const { return t5 ? config.t5.d_model : config.bart.d_model; }
  int64_t pad_token_id() const;
  // The visual tokens [B, N, d] of a batch (through the vision tower when there is one); undefined when the
  // input has neither feats nor pixels. An error names the field when the input does not fit the model.
  Tensor visual_embeds(const VisualInput& visual, const ForwardContext& ctx = {}) const;

  // Encoder over [text; visual] (prompts, when an input adapter adds them, go first).
  EncoderOutput encode(const Tensor& input_ids, const Tensor& attention_mask, const VisualInput& visual,
                       const ForwardContext& ctx = {}) const;
  // Teacher-forced forward; loss = mean over labelled tokens (labels -100 ignored), as transformers.
  Seq2SeqOutput forward(const Tensor& input_ids, const Tensor& attention_mask, const VisualInput& visual,
                        const Tensor& labels, const ForwardContext& ctx = {}) const;
  GenerationOutput generate(const Tensor& input_ids, const Tensor& attention_mask, const VisualInput& visual,
                            const GenerationOptions& options = {}, const ForwardContext& ctx = {}) const;
  const char* type_name() const override { return "VLSeq2Seq"; }
};

// VL-Adapter's VQA loss (spec §2.11): per example the mean token cross-entropy over labelled target
// tokens times its weight (the sampled answer's soft score; 1 for GQA / NLVR2 / captions), then the mean
// over the batch. logits [B, L, V], labels [B, L] (-100 ignored), weights [B] F32 or undefined (all 1).
Tensor weighted_seq2seq_loss(const Tensor& logits, const Tensor& labels, const Tensor& weights);

}  // namespace vlp
