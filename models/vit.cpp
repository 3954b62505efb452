#include "models/vit.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/trace.h"

namespace vlp {

namespace {

using json = nlohmann::json;

std::string read_text_file(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  VLP_CHECK(f.good(), what, ": cannot open ", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string config_file(const std::string& path) {
  std::ifstream probe(path + "/config.json");
  return probe.good() ? path + "/config.json" : path;
}

json parse_json(const std::string& text, const std::string& source) {
  try {
    json j = json::parse(text);
    VLP_CHECK(j.is_object(), source, ": a config must be a JSON object");
    return j;
  } catch (const json::parse_error& e) {
    VLP_FAIL(source, ": not valid JSON: ", e.what());
  }
}

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

// image_size / patch_size: an integer or [h, w].
std::pair<int64_t, int64_t> size_pair(const json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  VLP_CHECK(it != j.end(), source, ": required key '", key, "' is missing");
  if (it->is_number_integer() && it->get<int64_t>() > 0) return {it->get<int64_t>(), it->get<int64_t>()};
  VLP_CHECK(it->is_array() && it->size() == 2 && (*it)[0].is_number_integer() && (*it)[1].is_number_integer() &&
                (*it)[0].get<int64_t>() > 0 && (*it)[1].get<int64_t>() > 0,
            source, ": '", key, "' must be a positive integer or [height, width], got ", it->dump());
  return {(*it)[0].get<int64_t>(), (*it)[1].get<int64_t>()};
}

// Transformers' PyTorch bicubic kernel (a = -0.75): weights of the four inputs around a source position at
// fractional offset t from the left neighbour.
void cubic_weights(double t, double w[4]) {
  const double A = -0.75;
  auto near = [&](double x) { return ((A + 2) * x - (A + 3)) * x * x + 1; };         // |x| <= 1
  auto far = [&](double x) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; };  // 1 < |x| < 2
  w[0] = far(t + 1), w[1] = near(t), w[2] = near(1 - t), w[3] = far(2 - t);
}

}  // namespace

// ---- config ----

ViTConfig parse_vit_config(const std::string& text, const std::string& source) {
  json j = parse_json(text, source);
  std::string model_type = optional<std::string>(j, "model_type", "vit", source);
  VLP_CHECK(model_type == "vit", source, ": model_type '", model_type, "' is not a ViT config (expected \"vit\")");
  ViTConfig c;
  c.hidden_size = required_int(j, "hidden_size", source);
  c.num_hidden_layers = required_int(j, "num_hidden_layers", source);
  c.num_attention_heads = required_int(j, "num_attention_heads", source);
  c.intermediate_size = required_int(j, "intermediate_size", source);
  std::tie(c.image_height, c.image_width) = size_pair(j, "image_size", source);
  c.image_size = c.image_height;
  auto [ph, pw] = size_pair(j, "patch_size", source);
  VLP_CHECK(ph == pw, source, ": non-square patch_size [", ph, ", ", pw, "] is not supported");
  c.patch_size = ph;
  c.num_channels = optional<int64_t>(j, "num_channels", 3, source);
  c.hidden_act = optional<std::string>(j, "hidden_act", "gelu", source);
  c.hidden_dropout_prob = optional<double>(j, "hidden_dropout_prob", 0.0, source);
  c.attention_probs_dropout_prob = optional<double>(j, "attention_probs_dropout_prob", 0.0, source);
  c.layer_norm_eps = optional<double>(j, "layer_norm_eps", 1e-12, source);
  c.qkv_bias = optional<bool>(j, "qkv_bias", true, source);
  c.pooler_output_size = optional<int64_t>(j, "pooler_output_size", 0, source);
  c.pooler_act = optional<std::string>(j, "pooler_act", "tanh", source);
  if (auto it = j.find("id2label"); it != j.end() && it->is_object())
    c.num_labels = int64_t(it->size());
  else
    c.num_labels = optional<int64_t>(j, "num_labels", 2, source);
  c.architectures = optional<std::vector<std::string>>(j, "architectures", {}, source);

  VLP_CHECK(c.hidden_size % c.num_attention_heads == 0, source, ": hidden_size ", c.hidden_size,
            " is not divisible by num_attention_heads ", c.num_attention_heads);
  VLP_CHECK(c.image_height % c.patch_size == 0 && c.image_width % c.patch_size == 0, source, ": image_size ",
            c.image_height, "x", c.image_width, " is not divisible by patch_size ", c.patch_size);
  activation_by_name(c.hidden_act, source + ": hidden_act");
  activation_by_name(c.pooler_act, source + ": pooler_act");
  return c;
}

ViTConfig read_vit_config(const std::string& path) {
  std::string file = config_file(path);
  return parse_vit_config(read_text_file(file, "read_vit_config"), file);
}

// ---- shared pieces ----

PatchConv::PatchConv(int64_t channels, int64_t dim, int64_t patch, bool with_bias) {
  weight = empty({dim, channels, patch, patch});
  kaiming_uniform_(reshape(weight, {dim, channels * patch * patch}));
  register_parameter("weight", &weight);
  if (with_bias) {
    bias = zeros({dim});
    register_parameter("bias", &bias);
  }
}

Tensor bicubic_resample_matrix(int64_t in_size, int64_t out_size, DType dtype) {
  VLP_CHECK(in_size > 0 && out_size > 0, "bicubic_resample_matrix: sizes must be positive, got ", in_size, " -> ",
            out_size);
  std::vector<double> m(size_t(out_size * in_size), 0.0);
  // PyTorch computes the scale and source positions in float for float tensors; float here keeps the same
  // neighbours and offsets (the weights agree to rounding).
  const float scale = float(in_size) / float(out_size);
  for (int64_t i = 0; i < out_size; ++i) {
    const float src = scale * (float(i) + 0.5f) - 0.5f;  // align_corners false; not clamped for cubic
    const float left = std::floor(src);
    double w[4];
    cubic_weights(double(src - left), w);
    for (int k = 0; k < 4; ++k) {
      int64_t idx = std::min(std::max(int64_t(left) - 1 + k, int64_t(0)), in_size - 1);
      m[size_t(i * in_size + idx)] += w[k];
    }
  }
  return from_vector(m, {out_size, in_size}, dtype);
}

Tensor interpolate_position_embeddings(const Tensor& pos, int64_t grid_h, int64_t grid_w, bool square_image) {
  VLP_CHECK(pos.dim() == 3 && pos.size(0) == 1, "interpolate_position_embeddings: expected [1, 1 + n, D], got ",
            shape_str(pos.shape()));
  const int64_t n = pos.size(1) - 1, D = pos.size(2);
  if (n == grid_h * grid_w && square_image) return pos;
  const int64_t side = int64_t(std::llround(std::sqrt(double(n))));
  VLP_CHECK(side * side == n, "interpolate_position_embeddings: ", n,
            " patch positions do not form a square grid, so they cannot be resampled");
  Tensor cls = narrow(pos, 1, 0, 1);
  Tensor grid = reshape(narrow(pos, 1, 1, n), {side, side * D});
  // Rows then columns: out[i, j] = sum_{a, b} Mh[i, a] Mw[j, b] grid[a, b]. The matrices are built on the
  // host and moved to the embeddings' device.
  Tensor mh = convert(bicubic_resample_matrix(side, grid_h, pos.dtype()), pos.dtype(), pos.device());
  Tensor mw = convert(bicubic_resample_matrix(side, grid_w, pos.dtype()), pos.dtype(), pos.device());
  Tensor rows = reshape(matmul(mh, grid), {grid_h, side, D});
  Tensor both = matmul(mw, rows);  // [grid_h, grid_w, D]
  return concat({cls, reshape(both, {1, grid_h * grid_w, D})}, 1);
}

Tensor add_position_embeddings(const Tensor& tokens, const Tensor& position_embeddings, int64_t image_h,
                               int64_t image_w, int64_t patch, int64_t config_h, int64_t config_w, bool interpolate,
                               const char* model) {
  if (!interpolate) {
    VLP_CHECK(image_h == config_h && image_w == config_w, model, ": input image size (", image_h, "*", image_w,
              ") doesn't match the model (", config_h, "*", config_w,
              "); pass interpolate_pos_encoding to resample the position embeddings");
    return tokens + position_embeddings;
  }
  return tokens + interpolate_position_embeddings(position_embeddings, image_h / patch, image_w / patch,
                                                  image_h == image_w);
}

Tensor vision_self_attention(const Tensor& x, const Linear& q, const Linear& k, const Linear& v, int64_t heads,
                             double attention_dropout, const Tensor& key_mask, const AttentionSite& site,
                             const ForwardContext& ctx) {
  AttentionState state;
  state.q = split_heads(q.forward(x, ctx), heads);
  state.k = split_heads(k.forward(x, ctx), heads);
  state.v = split_heads(v.forward(x, ctx), heads);
  state.key_padding_mask = key_mask;
  AttentionSpec spec;  // scale 1/sqrt(d_head), bidirectional
  spec.dropout = attention_dropout;
  return attend(x, state, site, spec, ctx);
}

Tensor run_input_site(const InputSite& site, const Tensor& hidden, Tensor& mask, const ForwardContext& ctx) {
  if (site.adapters.empty()) return hidden;
  if (!mask.defined()) mask = ones({hidden.size(0), hidden.size(1)}, DType::I64, hidden.device());
  Tensor h = site.forward(hidden, mask, ctx);
  VLP_CHECK(mask.dim() == 2 && mask.size(0) == h.size(0) && mask.size(1) == h.size(1),
            "input site: the adapters returned hidden states ", shape_str(h.shape()), " but a mask of shape ",
            shape_str(mask.shape()));
  return h;
}

Tensor VisionOutput::patch_tokens() const {
  const int64_t n = grid_h * grid_w;
  return narrow(last_hidden_state, 1, last_hidden_state.size(1) - n, n);
}

Tensor attention_key_mask(const Tensor& mask) {
  if (!mask.defined()) return mask;
  for (double m : to_vector(mask))
    if (m == 0.0) return mask;
  return Tensor();
}

// ---- ViT ----

ViTEmbeddings::ViTEmbeddings(const ViTConfig& c)
    : projection(c.num_channels, c.hidden_size, c.patch_size, true) {
  cls_token = empty({1, 1, c.hidden_size});
  normal_(cls_token, 0.0, 0.02);
  position_embeddings = empty({1, 1 + c.grid_height() * c.grid_width(), c.hidden_size});
  normal_(position_embeddings, 0.0, 0.02);
  register_parameter("cls_token", &cls_token);
  register_parameter("position_embeddings", &position_embeddings);
  register_module("patch_embeddings", &patch_embeddings);
  patch_embeddings.register_module("projection", &projection);
}

ViTAttention::ViTAttention(const ViTConfig& c)
    : query(c.hidden_size, c.hidden_size, c.qkv_bias),
      key(c.hidden_size, c.hidden_size, c.qkv_bias),
      value(c.hidden_size, c.hidden_size, c.qkv_bias),
      dense(c.hidden_size, c.hidden_size) {
  register_module("attention", &attention);
  attention.register_module("query", &query);
  attention.register_module("key", &key);
  attention.register_module("value", &value);
  register_module("output", &output);
  output.register_module("dense", &dense);
  register_module("attn_site", &attn_site);
}

ViTLayer::ViTLayer(const ViTConfig& c)
    : layernorm_before(c.hidden_size, c.layer_norm_eps),
      attention(c),
      layernorm_after(c.hidden_size, c.layer_norm_eps),
      intermediate_dense(c.hidden_size, c.intermediate_size),
      output_dense(c.intermediate_size, c.hidden_size),
      heads(c.num_attention_heads),
      hidden_dropout(c.hidden_dropout_prob),
      attention_dropout(c.attention_probs_dropout_prob),
      act(activation_by_name(c.hidden_act, "ViTConfig.hidden_act")) {
  register_module("layernorm_before", &layernorm_before);
  register_module("attention", &attention);
  register_module("layernorm_after", &layernorm_after);
  register_module("intermediate", &intermediate);
  intermediate.register_module("dense", &intermediate_dense);
  register_module("output", &output);
  output.register_module("dense", &output_dense);
  register_module("sa_site", &sa_site);
  register_module("ff_site", &ff_site);
  register_module("input_site", &input_site);
}

Tensor ViTLayer::forward(const Tensor& x, const Tensor& key_mask, const ForwardContext& ctx) const {
  TraceRange range("vit.layer");
  Tensor a_in = layernorm_before.forward(x);
  Tensor a = attention.dense.forward(vision_self_attention(a_in, attention.query, attention.key, attention.value, heads,
                                                           attention_dropout, key_mask, attention.attn_site, ctx),
                                     ctx);
  Tensor h = x + sublayer_output(sa_site, a_in, a, hidden_dropout, ctx, x);
  Tensor m_in = layernorm_after.forward(h);
  Tensor m = output_dense.forward(act(intermediate_dense.forward(m_in, ctx)), ctx);
  return h + sublayer_output(ff_site, m_in, m, hidden_dropout, ctx, h);
}

ViTEncoder::ViTEncoder(const ViTConfig& c) {
  register_module("layer", &layer);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(std::make_unique<ViTLayer>(c));
    layer.register_module(std::to_string(i), layers.back().get());
  }
  register_module("input_site", &input_site);
}

Tensor ViTEncoder::forward(const Tensor& hidden, Tensor& mask, const ForwardContext& ctx) const {
  Tensor h = run_input_site(input_site, hidden, mask, ctx);
  for (const auto& l : layers) {
    h = run_input_site(l->input_site, h, mask, ctx);
    h = l->forward(h, attention_key_mask(mask), ctx);
  }
  return h;
}

ViTPooler::ViTPooler(const ViTConfig& c)
    : dense(c.hidden_size, c.pooler_size()), act(activation_by_name(c.pooler_act, "ViTConfig.pooler_act")) {
  register_module("dense", &dense);
}

ViTModel::ViTModel(const ViTConfig& c, bool add_pooling_layer)
    : config(c), embeddings(c), encoder(c), layernorm(c.hidden_size, c.layer_norm_eps) {
  register_module("embeddings", &embeddings);
  register_module("encoder", &encoder);
  register_module("layernorm", &layernorm);
  if (add_pooling_layer) {
    pooler = std::make_unique<ViTPooler>(c);
    register_module("pooler", pooler.get());
  }
}

VisionOutput ViTModel::forward(const Tensor& pixel_values, const ForwardContext& ctx,
                               bool interpolate_pos_encoding) const {
  const PatchConv& proj = embeddings.projection;
  VLP_CHECK(pixel_values.dim() == 4 && pixel_values.size(1) == config.num_channels, "ViTModel: pixel_values must be [B, ",
            config.num_channels, ", H, W], got ", shape_str(pixel_values.shape()));
  const int64_t B = pixel_values.size(0), H = pixel_values.size(2), W = pixel_values.size(3);
  Tensor patches = proj.forward(to(pixel_values, proj.weight.dtype()));  // [B, gh*gw, D]
  const int64_t D = patches.size(2);
  Tensor tokens = concat({expand(embeddings.cls_token, {B, 1, D}), patches}, 1);
  tokens = add_position_embeddings(tokens, embeddings.position_embeddings, H, W, config.patch_size,
                                   config.image_height, config.image_width, interpolate_pos_encoding, "ViTModel");
  tokens = dropout(tokens, config.hidden_dropout_prob, ctx);
  Tensor mask;
  VisionOutput out;
  out.grid_h = H / config.patch_size;
  out.grid_w = W / config.patch_size;
  out.last_hidden_state = layernorm.forward(encoder.forward(tokens, mask, ctx));
  if (pooler) out.pooler_output = pooler->forward(select(out.last_hidden_state, 1, 0), ctx);
  return out;
}

ViTForImageClassification::ViTForImageClassification(const ViTConfig& c)
    : config(c), vit(c, false), classifier(c.hidden_size, c.num_labels) {
  VLP_CHECK(c.num_labels > 0, "ViTForImageClassification: num_labels must be positive, got ", c.num_labels);
  register_module("vit", &vit);
  register_module("classifier", &classifier);
}

ViTForImageClassification::Output ViTForImageClassification::forward(const Tensor& pixel_values,
                                                                     const ForwardContext& ctx,
                                                                     bool interpolate_pos_encoding) const {
  Output out;
  out.vit = vit.forward(pixel_values, ctx, interpolate_pos_encoding);
  out.logits = classifier.forward(select(out.vit.last_hidden_state, 1, 0), ctx);
  return out;
}

// ---- checkpoints ----

CheckpointRules checkpoint_rules(const ViTModel& model) {
  CheckpointRules r;
  r.ignore_unexpected = {R"(^classifier\.)"};
  if (!model.pooler) r.ignore_unexpected.push_back(R"(^pooler\.)");
  return r;
}

CheckpointRules checkpoint_rules(const ViTForImageClassification&) {
  CheckpointRules r;
  r.base_model_prefix = "vit";
  r.ignore_unexpected = {R"(^(vit\.)?pooler\.)"};
  r.allow_missing = {"classifier.weight", "classifier.bias"};
  return r;
}

StateDictReport load_checkpoint(ViTModel& model, const std::vector<std::pair<std::string, Tensor>>& tensors,
                                bool strict) {
  // A classification checkpoint keeps the ViTModel under "vit."; take it from there.
  bool prefixed = false;
  for (const auto& [name, t] : tensors) prefixed = prefixed || name.rfind("vit.", 0) == 0;
  if (!prefixed) return load_checkpoint(static_cast<Module&>(model), tensors, checkpoint_rules(model), strict);
  std::vector<std::pair<std::string, Tensor>> renamed;
  for (const auto& [name, t] : tensors) renamed.push_back({name.rfind("vit.", 0) == 0 ? name.substr(4) : name, t});
  return load_checkpoint(static_cast<Module&>(model), renamed, checkpoint_rules(model), strict);
}

StateDictReport load_checkpoint(ViTForImageClassification& model,
                                const std::vector<std::pair<std::string, Tensor>>& tensors, bool strict) {
  return load_checkpoint(static_cast<Module&>(model), tensors, checkpoint_rules(model), strict);
}

StateDictReport load_checkpoint(ViTModel& model, const std::string& path, bool strict) {
  try {
    return load_checkpoint(model, read_checkpoint(path), strict);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

StateDictReport load_checkpoint(ViTForImageClassification& model, const std::string& path, bool strict) {
  try {
    return load_checkpoint(model, read_checkpoint(path), strict);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

std::unique_ptr<ViTModel> load_vit_model(const std::string& directory, bool add_pooling_layer) {
  auto model = std::make_unique<ViTModel>(read_vit_config(directory), add_pooling_layer);
  load_checkpoint(*model, directory);
  return model;
}

std::unique_ptr<ViTForImageClassification> load_vit_for_image_classification(const std::string& directory) {
  auto model = std::make_unique<ViTForImageClassification>(read_vit_config(directory));
  load_checkpoint(*model, directory);
  return model;
}

int64_t vit_num_parameters(const ViTConfig& c, bool classification) {
  const int64_t D = c.hidden_size, F = c.intermediate_size, P = c.patch_size;
  const int64_t positions = 1 + c.grid_height() * c.grid_width();
  int64_t n = D + positions * D + D * c.num_channels * P * P + D;  // cls, positions, projection (+ bias)
  const int64_t layer = 2 * 2 * D                                   // two LayerNorms
                        + 3 * (D * D + (c.qkv_bias ? D : 0))        // query, key, value
                        + D * D + D                                 // attention.output.dense
                        + D * F + F + F * D + D;                    // intermediate, output
  n += c.num_hidden_layers * layer + 2 * D;                         // + final layernorm
  if (classification) return n + D * c.num_labels + c.num_labels;
  return n + D * c.pooler_size() + c.pooler_size();
}

}  // namespace vlp
