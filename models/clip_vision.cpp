#include "models/clip_vision.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/trace.h"

namespace vlp {

namespace {

using json = nlohmann::json;

int64_t required_int(const json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  VLP_CHECK(it != j.end(), source, ": required key '", key, "' is missing");
  VLP_CHECK(it->is_number_integer() && it->get<int64_t>() > 0, source, ": '", key,
            "' must be a positive integer, got ", it->dump());
  return it->get<int64_t>();
}

template <class T>
T optional(const json& j, const char* key, T fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    VLP_FAIL(source, ": '", key, "' has the wrong type: ", it->dump());
  }
}


}  // namespace

// ---- config ----

CLIPVisionConfig parse_clip_vision_config(const std::string& text, const std::string& source) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    VLP_FAIL(source, ": not valid JSON: ", e.what());
  }
  VLP_CHECK(root.is_object(), source, ": a config must be a JSON object");
  std::string model_type = optional<std::string>(root, "model_type", "clip_vision_model", source);
  const json* j = &root;
  std::string where = source;
  if (model_type == "clip") {
    auto it = root.find("vision_config");
    VLP_CHECK(it != root.end() && it->is_object(), source, ": a CLIPConfig needs a 'vision_config' object");
    j = &*it;
    where = source + ": vision_config";
  } else {
    VLP_CHECK(model_type == "clip_vision_model", source, ": model_type '", model_type,
              "' is not a CLIP config (expected \"clip\" or \"clip_vision_model\")");
  }
  CLIPVisionConfig c;
  c.hidden_size = required_int(*j, "hidden_size", where);
  c.intermediate_size = required_int(*j, "intermediate_size", where);
  c.num_hidden_layers = required_int(*j, "num_hidden_layers", where);
  c.num_attention_heads = required_int(*j, "num_attention_heads", where);
  c.image_size = required_int(*j, "image_size", where);
  c.patch_size = required_int(*j, "patch_size", where);
  c.num_channels = optional<int64_t>(*j, "num_channels", 3, where);
  c.hidden_act = optional<std::string>(*j, "hidden_act", "quick_gelu", where);
  c.layer_norm_eps = optional<double>(*j, "layer_norm_eps", 1e-5, where);
  c.attention_dropout = optional<double>(*j, "attention_dropout", 0.0, where);
  // CLIPModel sizes visual_projection by its own projection_dim; a vision config carries one for
  // CLIPVisionModelWithProjection.
  c.projection_dim = model_type == "clip" ? optional<int64_t>(root, "projection_dim", 512, source)
                                          : optional<int64_t>(*j, "projection_dim", 512, where);
  VLP_CHECK(c.projection_dim > 0, source, ": projection_dim must be positive, got ", c.projection_dim);
  VLP_CHECK(c.hidden_size % c.num_attention_heads == 0, where, ": hidden_size ", c.hidden_size,
            " is not divisible by num_attention_heads ", c.num_attention_heads);
  VLP_CHECK(c.image_size % c.patch_size == 0, where, ": image_size ", c.image_size,
            " is not divisible by patch_size ", c.patch_size);
  activation_by_name(c.hidden_act, where + ": hidden_act");
  return c;
}

CLIPVisionConfig read_clip_vision_config(const std::string& path) {
  std::string file = path;
  if (std::ifstream(path + "/config.json").good()) file = path + "/config.json";
  std::ifstream f(file, std::ios::binary);
  VLP_CHECK(f.good(), "read_clip_vision_config: cannot open ", file);
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_clip_vision_config(ss.str(), file);
}

// ---- modules ----

CLIPVisionEmbeddings::CLIPVisionEmbeddings(const CLIPVisionConfig& c)
    : patch_embedding(c.num_channels, c.hidden_size, c.patch_size, false),
      position_embedding(1 + c.grid_size() * c.grid_size(), c.hidden_size) {
  class_embedding = empty({c.hidden_size});
  normal_(class_embedding, 0.0, 1.0 / std::sqrt(double(c.hidden_size)));
  register_parameter("class_embedding", &class_embedding);
  register_module("patch_embedding", &patch_embedding);
  register_module("position_embedding", &position_embedding);
}

CLIPAttention::CLIPAttention(const CLIPVisionConfig& c)
    : k_proj(c.hidden_size, c.hidden_size),
      v_proj(c.hidden_size, c.hidden_size),
      q_proj(c.hidden_size, c.hidden_size),
      out_proj(c.hidden_size, c.hidden_size) {
  register_module("k_proj", &k_proj);
  register_module("v_proj", &v_proj);
  register_module("q_proj", &q_proj);
  register_module("out_proj", &out_proj);
  register_module("attn_site", &attn_site);
}

CLIPMLP::CLIPMLP(const CLIPVisionConfig& c)
    : fc1(c.hidden_size, c.intermediate_size),
      fc2(c.intermediate_size, c.hidden_size),
      act(activation_by_name(c.hidden_act, "CLIPVisionConfig.hidden_act")) {
  register_module("fc1", &fc1);
  register_module("fc2", &fc2);
}

CLIPEncoderLayer::CLIPEncoderLayer(const CLIPVisionConfig& c)
    : self_attn(c),
      layer_norm1(c.hidden_size, c.layer_norm_eps),
      mlp(c),
      layer_norm2(c.hidden_size, c.layer_norm_eps),
      heads(c.num_attention_heads),
      attention_dropout(c.attention_dropout) {
  register_module("self_attn", &self_attn);
  register_module("layer_norm1", &layer_norm1);
  register_module("mlp", &mlp);
  register_module("layer_norm2", &layer_norm2);
  register_module("sa_site", &sa_site);
  register_module("ff_site", &ff_site);
  register_module("input_site", &input_site);
}

Tensor CLIPEncoderLayer::forward(const Tensor& x, const Tensor& key_mask, const ForwardContext& ctx) const {
  TraceRange range("clip.layer");
  // CLIP has no hidden dropout: the sublayer outputs go to their sites as they are.
  Tensor a_in = layer_norm1.forward(x);
  Tensor a = self_attn.out_proj.forward(vision_self_attention(a_in, self_attn.q_proj, self_attn.k_proj,
                                                              self_attn.v_proj, heads, attention_dropout, key_mask,
                                                              self_attn.attn_site, ctx),
                                        ctx);
  Tensor h = x + sublayer_output(sa_site, a_in, a, 0.0, ctx, x);
  Tensor m_in = layer_norm2.forward(h);
  return h + sublayer_output(ff_site, m_in, mlp.forward(m_in, ctx), 0.0, ctx, h);
}

CLIPEncoder::CLIPEncoder(const CLIPVisionConfig& c) {
  register_module("layers", &layers_module);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(std::make_unique<CLIPEncoderLayer>(c));
    layers_module.register_module(std::to_string(i), layers.back().get());
  }
  register_module("input_site", &input_site);
}

Tensor CLIPEncoder::forward(const Tensor& hidden, Tensor& mask, const ForwardContext& ctx) const {
  Tensor h = run_input_site(input_site, hidden, mask, ctx);
  for (const auto& l : layers) {
    h = run_input_site(l->input_site, h, mask, ctx);
    h = l->forward(h, attention_key_mask(mask), ctx);
  }
  return h;
}

CLIPVisionTransformer::CLIPVisionTransformer(const CLIPVisionConfig& c)
    : embeddings(c),
      pre_layrnorm(c.hidden_size, c.layer_norm_eps),
      encoder(c),
      post_layernorm(c.hidden_size, c.layer_norm_eps) {
  register_module("embeddings", &embeddings);
  register_module("pre_layrnorm", &pre_layrnorm);
  register_module("encoder", &encoder);
  register_module("post_layernorm", &post_layernorm);
}

CLIPVisionModel::CLIPVisionModel(const CLIPVisionConfig& c, bool with_projection) : config(c), vision_model(c) {
  register_module("vision_model", &vision_model);
  if (with_projection) {
    visual_projection = std::make_unique<Linear>(c.hidden_size, c.projection_dim, false);
    register_module("visual_projection", visual_projection.get());
  }
}

VisionOutput CLIPVisionModel::forward(const Tensor& pixel_values, const ForwardContext& ctx,
                                      bool interpolate_pos_encoding) const {
  const CLIPVisionEmbeddings& emb = vision_model.embeddings;
  VLP_CHECK(pixel_values.dim() == 4 && pixel_values.size(1) == config.num_channels,
            "CLIPVisionModel: pixel_values must be [B, ", config.num_channels, ", H, W], got ",
            shape_str(pixel_values.shape()));
  const int64_t B = pixel_values.size(0), H = pixel_values.size(2), W = pixel_values.size(3);
  Tensor patches = emb.patch_embedding.forward(to(pixel_values, emb.patch_embedding.weight.dtype()));
  const int64_t D = patches.size(2);
  Tensor tokens = concat({expand(view(emb.class_embedding, {1, 1, D}), {B, 1, D}), patches}, 1);
  tokens = add_position_embeddings(tokens, unsqueeze(emb.position_embedding.weight, 0), H, W, config.patch_size,
                                   config.image_size, config.image_size, interpolate_pos_encoding, "CLIPVisionModel");
  Tensor mask;
  VisionOutput out;
  out.grid_h = H / config.patch_size;
  out.grid_w = W / config.patch_size;
  out.last_hidden_state = vision_model.encoder.forward(vision_model.pre_layrnorm.forward(tokens), mask, ctx);
  out.pooler_output = vision_model.post_layernorm.forward(select(out.last_hidden_state, 1, 0));
  if (visual_projection) out.image_embeds = visual_projection->forward(out.pooler_output, ctx);
  return out;
}

// ---- checkpoints ----

CheckpointRules checkpoint_rules(const CLIPVisionModel& model) {
  CheckpointRules r;
  r.ignore_unexpected = {R"(^text_model\.)", R"(^text_projection\.)", R"(^logit_scale$)", R"(\.position_ids$)"};
  if (!model.visual_projection) r.ignore_unexpected.push_back(R"(^visual_projection\.)");
  return r;
}

StateDictReport load_checkpoint(CLIPVisionModel& model, const std::vector<std::pair<std::string, Tensor>>& tensors,
                                bool strict) {
  return load_checkpoint(static_cast<Module&>(model), tensors, checkpoint_rules(model), strict);
}

StateDictReport load_checkpoint(CLIPVisionModel& model, const std::string& path, bool strict) {
  return load_checkpoint(static_cast<Module&>(model), path, checkpoint_rules(model), strict);
}

std::unique_ptr<CLIPVisionModel> load_clip_vision_model(const std::string& directory, bool with_projection) {
  auto model = std::make_unique<CLIPVisionModel>(read_clip_vision_config(directory), with_projection);
  load_checkpoint(*model, directory);
  return model;
}

int64_t clip_vision_num_parameters(const CLIPVisionConfig& c, bool with_projection) {
  const int64_t D = c.hidden_size, F = c.intermediate_size, P = c.patch_size;
  int64_t n = D + D * c.num_channels * P * P + (1 + c.grid_size() * c.grid_size()) * D;  // embeddings
  n += 2 * 2 * D;                                                                       // pre / post norms
  const int64_t layer = 4 * (D * D + D) + 2 * 2 * D + D * F + F + F * D + D;
  n += c.num_hidden_layers * layer;
  return with_projection ? n + D * c.projection_dim : n;
}

}  // namespace vlp
