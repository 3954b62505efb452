// The CLIP vision tower (Radford et al.) as Hugging Face's CLIPVisionModel / CLIPVisionModelWithProjection, with
// the checkpoint names of the published models ("vision_model.encoder.layers.0.self_attn.q_proj.weight",
// "visual_projection.weight"), so model.safetensors files of either class, or of a whole CLIPModel, load by name.
// Class embedding, bias-free patch convolution, learned positions (bicubically resampled for other resolutions),
// pre_layrnorm (sic) before the pre-LN encoder, quick_gelu MLP; the last hidden state is the encoder output (no
// final norm), pooled = post_layernorm(CLS), image embeds = visual_projection(pooled).
//
// Adaptation sites (models/site.h), under "vision_model.":
//   encoder.input_site                    the embeddings after pre_layrnorm, entering layer 0: shallow VPT inserts
//                                         its prompts after CLS here
//   encoder.layers.N.input_site           the hidden states entering layer N: VPT-deep replaces its prompt slots
//                                         here for N >= 1
//   encoder.layers.N.self_attn.attn_site  q, k, v of the self-attention (prefix tuning)
//   encoder.layers.N.sa_site, .ff_site    after the attention and after the MLP, with the sublayer input (the
//                                         LayerNorm output) and output, before the residual add
//   every projection is a Linear: self_attn.{q,k,v,out}_proj, mlp.fc1, mlp.fc2, and visual_projection
// As in ViT (models/vit.h), inserted positions come after CLS and the patch tokens stay last.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/vit.h"

namespace vlp {

// HF CLIPVisionConfig. read_clip_vision_config accepts a CLIPVisionConfig file (model_type "clip_vision_model")
// or a whole CLIPConfig (model_type "clip"), whose vision_config it reads and whose top-level projection_dim
// sizes visual_projection (as CLIPModel does). Shape keys are required; the rest default as transformers.
struct CLIPVisionConfig {
  int64_t hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0, num_attention_heads = 0;  // required
  int64_t image_size = 0, patch_size = 0;                                                           // required
  int64_t num_channels = 3;
  int64_t projection_dim = 512;
  std::string hidden_act = "quick_gelu";
  double layer_norm_eps = 1e-5;
  double attention_dropout = 0.0;

  int64_t grid_size() const { return image_size / patch_size; }
};

CLIPVisionConfig read_clip_vision_config(const std::string& path);  // config.json or a directory holding one
CLIPVisionConfig parse_clip_vision_config(const std::string& json_text, const std::string& source);

struct CLIPVisionEmbeddings : Module {
  Tensor class_embedding;  // [D]
  PatchConv patch_embedding;
  Embedding position_embedding;  // [1 + n, D]
  explicit CLIPVisionEmbeddings(const CLIPVisionConfig& config);
};

struct CLIPAttention : Module {
  Linear k_proj, v_proj, q_proj, out_proj;
  AttentionSite attn_site;
  explicit CLIPAttention(const CLIPVisionConfig& config);
};

struct CLIPMLP : Module {
  Linear fc1, fc2;
  ActivationFn act;
  explicit CLIPMLP(const CLIPVisionConfig& config);
  Tensor forward(const Tensor& x, const ForwardContext& ctx) const { return fc2.forward(act(fc1.forward(x, ctx)), ctx); }
};

struct CLIPEncoderLayer : Module {
  CLIPAttention self_attn;
  LayerNorm layer_norm1;
  CLIPMLP mlp;
  LayerNorm layer_norm2;
  SublayerSite sa_site, ff_site;
  InputSite input_site;
  int64_t heads;
  double attention_dropout;
  explicit CLIPEncoderLayer(const CLIPVisionConfig& config);
  Tensor forward(const Tensor& x, const Tensor& key_mask, const ForwardContext& ctx) const;
};

struct CLIPEncoder : Module {
  Module layers_module;  // registered as "layers": children "0", "1", ...
  std::vector<std::unique_ptr<CLIPEncoderLayer>> layers;
  InputSite input_site;
  explicit CLIPEncoder(const CLIPVisionConfig& config);
  Tensor forward(const Tensor& hidden, Tensor& mask, const ForwardContext& ctx) const;
};

// HF CLIPVisionTransformer ("vision_model").
struct CLIPVisionTransformer : Module {
  CLIPVisionEmbeddings embeddings;
  LayerNorm pre_layrnorm;
  CLIPEncoder encoder;
  LayerNorm post_layernorm;
  explicit CLIPVisionTransformer(const CLIPVisionConfig& config);
};

// CLIPVisionModelWithProjection (with_projection) or CLIPVisionModel.
struct CLIPVisionModel : Module {
  CLIPVisionConfig config;
  CLIPVisionTransformer vision_model;
  std::unique_ptr<Linear> visual_projection;  // [projection_dim, D], no bias

  explicit CLIPVisionModel(const CLIPVisionConfig& config, bool with_projection = true);
  // pixel_values [B, C, H, W] (converted to the weights' dtype); H = W = image_size unless interpolate_pos_encoding.
  // Returns last_hidden_state, pooler_output and (with the projection) image_embeds.
  VisionOutput forward(const Tensor& pixel_values, const ForwardContext& ctx = {},
                       bool interpolate_pos_encoding = false) const;
  const char* type_name() const override { return "CLIPVisionModel"; }
};

// Checkpoints of CLIPVisionModel(WithProjection) or of a whole CLIPModel: the text tower, text_projection,
// logit_scale and position_ids buffers are ignored (and visual_projection when the model has none); anything else
// missing, unexpected or mis-shaped is, with strict, named in one error and nothing is copied.
CheckpointRules checkpoint_rules(const CLIPVisionModel& model);
StateDictReport load_checkpoint(CLIPVisionModel& model, const std::string& path, bool strict = true);
StateDictReport load_checkpoint(CLIPVisionModel& model, const std::vector<std::pair<std::string, Tensor>>& tensors,
                                bool strict = true);
// config.json + weights from a directory, as from_pretrained(directory).
std::unique_ptr<CLIPVisionModel> load_clip_vision_model(const std::string& directory, bool with_projection = true);

// Parameters transformers counts for CLIPVisionModelWithProjection (or CLIPVisionModel) of this config.
int64_t clip_vision_num_parameters(const CLIPVisionConfig& config, bool with_projection = true);

}  // namespace vlp
