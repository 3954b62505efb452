// ViT (Dosovitskiy et al.) as Hugging Face's ViTModel / ViTForImageClassification, with the checkpoint names of
// the published models ("vit.encoder.layer.0.attention.attention.query.weight", ...), so model.safetensors files
// load by name. Pre-LN encoder, exact GELU, CLS token, learned position embeddings (bicubically resampled for other
// resolutions, as transformers' interpolate_pos_encoding), tanh pooler.
//
// Adaptation sites (models/site.h), named by module path (prefix "vit." inside ViTForImageClassification):
//   encoder.input_site                   the embeddings [CLS; patches] + positions, before layer 0: shallow VPT
//                                        inserts its prompts after CLS here
//   encoder.layer.N.input_site           the hidden states entering layer N (after the previous layer; for N = 0
//                                        what encoder.input_site returned): VPT-deep inserts P_1 at
//                                        encoder.input_site and replaces the prompt slots by P_N here for N >= 1
//   encoder.layer.N.attention.attn_site  q, k, v of the self-attention (prefix tuning)
//   encoder.layer.N.sa_site, .ff_site    after the attention and after the MLP, called with the sublayer input
//                                        (the LayerNorm output) and the sublayer output after its dropout (before
//                                        it when the site sets before_dropout), before the residual add
//   every projection is a Linear: attention.attention.{query,key,value}, attention.output.dense,
//   intermediate.dense, output.dense, pooler.dense, classifier (LoRA and the other LinearAdapters)
// Input sites may insert positions after CLS (their attention mask [B, T] is then honoured as a key padding mask);
// the patch tokens stay the last grid_h * grid_w positions of the output.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/attention.h"
#include "models/checkpoint.h"
#include "models/config.h"
#include "models/module.h"
#include "models/site.h"

namespace vlp {

// HF ViTConfig (config.json, model_type "vit"). The shape keys are required; the rest default as transformers.
struct ViTConfig {
  int64_t hidden_size = 0, num_hidden_layers = 0, num_attention_heads = 0, intermediate_size = 0;  // required
  int64_t image_size = 0, patch_size = 0;  // required; image_size may be [h, w] in the file
  int64_t image_height = 0, image_width = 0;  // derived from image_size
  int64_t num_channels = 3;
  std::string hidden_act = "gelu";
  double hidden_dropout_prob = 0.0, attention_probs_dropout_prob = 0.0;
  double layer_norm_eps = 1e-12;
  bool qkv_bias = true;
  int64_t pooler_output_size = 0;  // 0 = hidden_size
  std::string pooler_act = "tanh";
  // Classifier width: the size of id2label when present, else the num_labels key, else 2 (transformers' rule).
  int64_t num_labels = 2;
  std::vector<std::string> architectures;

  int64_t pooler_size() const { return pooler_output_size > 0 ? pooler_output_size : hidden_size; }
  int64_t grid_height() const { return image_height / patch_size; }
  int64_t grid_width() const { return image_width / patch_size; }
};

// `path` is a config.json file or a directory holding one.
ViTConfig read_vit_config(const std::string& path);
ViTConfig parse_vit_config(const std::string& json_text, const std::string& source);

// ---- pieces shared with the CLIP vision tower ----

// A stride = kernel convolution over P x P patches: weight [D, C, P, P], bias [D] or none.
struct PatchConv : Module {
  Tensor weight, bias;
  PatchConv(int64_t channels, int64_t dim, int64_t patch, bool with_bias);
  int64_t patch_size() const { return weight.size(2); }
  Tensor forward(const Tensor& images) const { return patch_embed(images, weight, bias); }  // [B, gh*gw, D]
  const char* type_name() const override { return "Conv2d"; }
};

// The resampling matrix [out, in] of PyTorch's bicubic interpolate (align_corners false, no antialiasing,
// a = -0.75, border indices clamped): row i holds the weights of output i over the inputs.
Tensor bicubic_resample_matrix(int64_t in_size, int64_t out_size, DType dtype = DType::F32);

// transformers' interpolate_pos_encoding: position embeddings [1, 1 + n*n, D] (CLS first, then an n x n grid)
// -> [1, 1 + gh*gw, D], the grid resampled bicubically to gh x gw; the embeddings themselves when the grid already
// has gh*gw positions and the image is square (transformers' condition). Differentiable.
Tensor interpolate_position_embeddings(const Tensor& position_embeddings, int64_t grid_h, int64_t grid_w,
                                       bool square_image);

// Adds position embeddings [1, 1 + n, D] to [CLS; patches] tokens [B, 1 + gh*gw, D], resampling them when
// `interpolate`; without it the image must have the configured size (an error naming both sizes otherwise).
Tensor add_position_embeddings(const Tensor& tokens, const Tensor& position_embeddings, int64_t image_h,
                               int64_t image_w, int64_t patch, int64_t config_h, int64_t config_w, bool interpolate,
                               const char* model);

// Multi-head self-attention over [B, T, D] with separate q/k/v projections, through the block's AttentionSite
// (models/attention.h attend()); returns the merged heads before the output projection. key_mask is [B, T]
// (nonzero = attend) or undefined.
Tensor vision_self_attention(const Tensor& x, const Linear& q, const Linear& k, const Linear& v, int64_t heads,
                             double attention_dropout, const Tensor& key_mask, const AttentionSite& site,
                             const ForwardContext& ctx);

// Runs an input site when it holds adapters, keeping the mask [B, T] (I64, 1 = attend) in step; returns the
// (possibly longer) hidden states.
Tensor run_input_site(const InputSite& site, const Tensor& hidden, Tensor& mask, const ForwardContext& ctx);
// The key padding mask for attention: undefined while every position is attended (no masking cost), the mask
// itself once an input site has masked some position out.
Tensor attention_key_mask(const Tensor& mask);

// What a vision tower returns.
struct VisionOutput {
  Tensor last_hidden_state;  // [B, T, D]: CLS, any inserted prompts, then the grid_h * grid_w patch tokens
  Tensor pooler_output;      // [B, D'] (ViT: tanh pooler; CLIP: post_layernorm(CLS)); undefined without a pooler
  Tensor image_embeds;       // CLIP's visual_projection(pooler_output); undefined otherwise
  int64_t grid_h = 0, grid_w = 0;
  // The patch tokens [B, grid_h * grid_w, D], row-major over the grid (a view).
  Tensor patch_tokens() const;
};

// ---- ViT ----

struct ViTEmbeddings : Module {
  Tensor cls_token;            // [1, 1, D]
  Tensor position_embeddings;  // [1, 1 + n, D]
  Module patch_embeddings;     // holds "projection"
  PatchConv projection;
  explicit ViTEmbeddings(const ViTConfig& config);
};

struct ViTAttention : Module {
  Module attention, output;  // HF's ViTSelfAttention ("attention.attention") and ViTSelfOutput
  Linear query, key, value, dense;
  AttentionSite attn_site;
  explicit ViTAttention(const ViTConfig& config);
};

struct ViTLayer : Module {
  LayerNorm layernorm_before;
  ViTAttention attention;
  LayerNorm layernorm_after;
  Module intermediate, output;  // "intermediate.dense", "output.dense"
  Linear intermediate_dense, output_dense;
  SublayerSite sa_site, ff_site;
  InputSite input_site;
  int64_t heads;
  double hidden_dropout, attention_dropout;
  ActivationFn act;
  explicit ViTLayer(const ViTConfig& config);
  Tensor forward(const Tensor& x, const Tensor& key_mask, const ForwardContext& ctx) const;
};

struct ViTEncoder : Module {
  Module layer;  // children "0", "1", ...
  std::vector<std::unique_ptr<ViTLayer>> layers;
  InputSite input_site;
  explicit ViTEncoder(const ViTConfig& config);
  // Input sites may lengthen the sequence; `mask` follows them.
  Tensor forward(const Tensor& hidden, Tensor& mask, const ForwardContext& ctx) const;
};

struct ViTPooler : Module {
  Linear dense;
  ActivationFn act;
  explicit ViTPooler(const ViTConfig& config);
  Tensor forward(const Tensor& cls, const ForwardContext& ctx) const { return act(dense.forward(cls, ctx)); }
};

// HF ViTModel. Parameter names carry no prefix ("embeddings.cls_token", "pooler.dense.weight").
struct ViTModel : Module {
  ViTConfig config;
  ViTEmbeddings embeddings;
  ViTEncoder encoder;
  LayerNorm layernorm;
  std::unique_ptr<ViTPooler> pooler;  // absent inside ViTForImageClassification

  explicit ViTModel(const ViTConfig& config, bool add_pooling_layer = true);
  // pixel_values [B, C, H, W] (converted to the weights' dtype). H and W must be the configured image size unless
  // interpolate_pos_encoding, and must divide by the patch size.
  VisionOutput forward(const Tensor& pixel_values, const ForwardContext& ctx = {},
                       bool interpolate_pos_encoding = false) const;
  const char* type_name() const override { return "ViTModel"; }
};

// HF ViTForImageClassification: "vit." + ViTModel without pooler, and "classifier" on the final CLS state.
struct ViTForImageClassification : Module {
  ViTConfig config;
  ViTModel vit;
  Linear classifier;
  explicit ViTForImageClassification(const ViTConfig& config);
  struct Output {
    Tensor logits;  // [B, num_labels]
    VisionOutput vit;
  };
  Output forward(const Tensor& pixel_values, const ForwardContext& ctx = {},
                 bool interpolate_pos_encoding = false) const;
  const char* type_name() const override { return "ViTForImageClassification"; }
};

// ---- checkpoints (models/checkpoint.h) ----

// transformers' loading rules: a bare ViTModel takes the "vit.*" tensors of a classification checkpoint (its
// classifier is ignored); a ViTForImageClassification takes a ViTModel checkpoint (names without "vit.", its pooler
// ignored) and keeps its own classifier when the checkpoint has none (a new head, as from_pretrained does).
CheckpointRules checkpoint_rules(const ViTModel& model);
CheckpointRules checkpoint_rules(const ViTForImageClassification& model);
// A checkpoint (file, index or directory) or its tensors into the model. With strict, every missing, unexpected
// or mis-shaped tensor is named in one error and nothing is copied.
StateDictReport load_checkpoint(ViTModel& model, const std::string& path, bool strict = true);
StateDictReport load_checkpoint(ViTForImageClassification& model, const std::string& path, bool strict = true);
StateDictReport load_checkpoint(ViTModel& model, const std::vector<std::pair<std::string, Tensor>>& tensors,
                                bool strict = true);
StateDictReport load_checkpoint(ViTForImageClassification& model,
                                const std::vector<std::pair<std::string, Tensor>>& tensors, bool strict = true);
// config.json + weights from a directory, as from_pretrained(directory).
std::unique_ptr<ViTModel> load_vit_model(const std::string& directory, bool add_pooling_layer = true);
std::unique_ptr<ViTForImageClassification> load_vit_for_image_classification(const std::string& directory);

// Parameters transformers counts for the model a config describes (ViTModel with pooler, or
// ViTForImageClassification when `classification`), without building it.
int64_t vit_num_parameters(const ViTConfig& config, bool classification);

}  // namespace vlp
