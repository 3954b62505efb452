// ViT against transformers (tests/fixtures/models/vit, made by tools/reference/make_vision_model_fixtures.py):
// outputs, pooled output, classifier logits and every parameter's gradient of tiny random models, the
// interpolated-position case, checkpoint loading rules and errors, the adaptation sites, parameter counts of the
// published configurations.
#include <algorithm>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "models/checkpoint.h"
#include "runtime/safetensors.h"
#include "models/vit.h"

namespace vlp {
namespace {

const std::string kFixtures = std::string(VLP_SOURCE_DIR) + "/tests/fixtures/models/vit";
const std::string kConfigs = std::string(VLP_SOURCE_DIR) + "/configs/hf";

using TensorMap = std::map<std::string, Tensor>;

TensorMap read_fixture(const std::string& dir) {
  TensorMap m;
  for (auto& [name, t] : load_safetensors(dir + "/fixture.safetensors").tensors) m[name] = t;
  return m;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : to_vector(t)) m = std::max(m, std::abs(v));
  return m;
}

// |a - b| <= rel * (|b| + max|b|): relative to each element, and to the tensor's scale near zero.
::testing::AssertionResult close_to(const Tensor& a, const Tensor& b, double rel) {
  return test::all_close(a, b, rel, rel * max_abs(b));
}

// sum over outputs X of probe.X * X, as the reference script defines the loss.
Tensor probe_loss(const TensorMap& f, const std::string& prefix, const std::vector<std::pair<std::string, Tensor>>& outs) {
  Tensor loss;
  for (const auto& [key, value] : outs) {
    Tensor term = sum(mul(value, f.at(prefix + "probe." + key)));
    loss = loss.defined() ? add(loss, term) : term;
  }
  return loss;
}

// Every parameter's gradient against grad.<name> (all of them must be in the fixture, unless only_embeddings),
// within 1e-4 of each element and of the tensor's scale. The key bias's gradient is zero in exact arithmetic
// (softmax ignores a constant added to a row of scores): both sides are float noise, checked to be tiny.
void expect_grads(const Module& model, const TensorMap& f, const std::string& prefix, bool only_embeddings = false) {
  double largest = 0;
  for (const auto& [k, v] : f)
    if (k.rfind(prefix + "grad.", 0) == 0) largest = std::max(largest, max_abs(v));
  int checked = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    auto it = f.find(prefix + "grad." + name);
    if (only_embeddings && it == f.end()) continue;
    ASSERT_TRUE(it != f.end()) << "no reference gradient for " << name;
    ASSERT_TRUE(p.grad().defined()) << name << " got no gradient";
    if (name.size() > 8 && name.compare(name.size() - 8, 8, "key.bias") == 0) {
      EXPECT_LE(max_abs(p.grad()), 1e-6 * largest) << name;
      EXPECT_LE(max_abs(it->second), 1e-6 * largest) << name;
    } else {
      EXPECT_TRUE(close_to(p.grad(), it->second, 1e-4)) << name;
    }
    ++checked;
  }
  int expected = 0;
  for (const auto& [k, v] : f) expected += k.rfind(prefix + "grad.", 0) == 0;
  EXPECT_EQ(checked, expected);
}

TEST(ViTConfig, ReadsPublishedConfigs) {
  ViTConfig c = read_vit_config(kConfigs + "/vit-base-patch16-224.json");
  EXPECT_EQ(c.hidden_size, 768);
  EXPECT_EQ(c.num_hidden_layers, 12);
  EXPECT_EQ(c.num_attention_heads, 12);
  EXPECT_EQ(c.intermediate_size, 3072);
  EXPECT_EQ(c.image_height, 224);
  EXPECT_EQ(c.image_width, 224);
  EXPECT_EQ(c.patch_size, 16);
  EXPECT_EQ(c.num_labels, 1000);
  EXPECT_EQ(c.layer_norm_eps, 1e-12);
  EXPECT_EQ(c.hidden_act, "gelu");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_EQ(c.grid_height(), 14);
  ViTConfig in21k = read_vit_config(kConfigs + "/vit-base-patch16-224-in21k.json");
  EXPECT_EQ(in21k.num_labels, 2);  // transformers' default; ViTModel has no classifier
  EXPECT_EQ(in21k.pooler_size(), 768);
  // id2label sets num_labels; a directory finds its config.json.
  ViTConfig cls = read_vit_config(kFixtures + "/classifier");
  EXPECT_EQ(cls.num_labels, 5);
  EXPECT_FALSE(cls.qkv_bias);
  EXPECT_EQ(cls.layer_norm_eps, 1e-6);
  ViTConfig base = read_vit_config(kFixtures + "/base");
  EXPECT_EQ(base.hidden_dropout_prob, 0.1);
  EXPECT_EQ(base.attention_probs_dropout_prob, 0.1);
}

TEST(ViTConfig, ErrorsNameTheKey) {
  auto fails_with = [](const std::string& text, const std::string& needle) {
    try {
      parse_vit_config(text, "test.json");
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      return;
    }
    ADD_FAILURE() << "no error for " << text;
  };
  const std::string shapes = R"("hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, )"
                             R"("intermediate_size": 64, "patch_size": 8)";
  fails_with("{" + shapes + "}", "image_size");
  fails_with(R"({"num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "patch_size": 8,
                 "image_size": 32})", "hidden_size");
  fails_with("{" + shapes + R"(, "image_size": 30})", "not divisible by patch_size");
  fails_with("{" + shapes + R"(, "image_size": 32, "hidden_act": "mish2"})", "hidden_act");
  fails_with("{" + shapes + R"(, "image_size": 32, "model_type": "clip"})", "model_type");
  fails_with("{" + shapes + R"(, "image_size": "big"})", "image_size");
  fails_with("{not json", "not valid JSON");
  ViTConfig rect = parse_vit_config("{" + shapes + R"(, "image_size": [32, 48]})", "rect");
  EXPECT_EQ(rect.image_height, 32);
  EXPECT_EQ(rect.image_width, 48);
  EXPECT_EQ(rect.grid_width(), 6);
}

TEST(ViT, ParameterCountsEqualTransformers) {
  std::ifstream f(kFixtures + "/param_counts.json");
  auto counts = nlohmann::json::parse(f);
  ViTConfig cls = read_vit_config(kConfigs + "/vit-base-patch16-224.json");
  ViTConfig in21k = read_vit_config(kConfigs + "/vit-base-patch16-224-in21k.json");
  EXPECT_EQ(vit_num_parameters(cls, true), counts["vit-base-patch16-224"].get<int64_t>());
  EXPECT_EQ(vit_num_parameters(in21k, false), counts["vit-base-patch16-224-in21k"].get<int64_t>());
  // The modules themselves hold that many (the full-size model is built once: about 0.35 GB).
  EXPECT_EQ(ViTForImageClassification(cls).num_parameters(), counts["vit-base-patch16-224"].get<int64_t>());
  // And the formula agrees with the modules on the fixtures' shapes.
  ViTConfig tiny = read_vit_config(kFixtures + "/classifier");
  EXPECT_EQ(ViTForImageClassification(tiny).num_parameters(), vit_num_parameters(tiny, true));
  EXPECT_EQ(ViTModel(tiny).num_parameters(), vit_num_parameters(tiny, false));
}

TEST(ViT, BaseMatchesTransformers) {
  auto model = load_vit_model(kFixtures + "/base");
  TensorMap f = read_fixture(kFixtures + "/base");
  model->set_requires_grad(true);
  VisionOutput out = model->forward(f.at("pixel_values"));
  EXPECT_EQ(out.grid_h, 4);
  EXPECT_EQ(out.grid_w, 4);
  EXPECT_TRUE(close_to(out.last_hidden_state, f.at("last_hidden_state"), 1e-5));
  EXPECT_TRUE(close_to(out.pooler_output, f.at("pooler_output"), 1e-5));
  EXPECT_EQ(out.patch_tokens().shape(), (Shape{2, 16, 24}));
  Tensor loss = probe_loss(f, "", {{"last_hidden_state", out.last_hidden_state}, {"pooler_output", out.pooler_output}});
  EXPECT_TRUE(close_to(reshape(loss, {1}), f.at("loss"), 1e-5));
  backward(loss);
  expect_grads(*model, f, "");
}

TEST(ViT, InterpolatedPositionsMatchTransformers) {
  auto model = load_vit_model(kFixtures + "/base");
  TensorMap f = read_fixture(kFixtures + "/base");
  const Tensor& pixels = f.at("interp.pixel_values");  // 48 x 40: a 6 x 5 grid from a 4 x 4 table
  try {
    model->forward(pixels);
    ADD_FAILURE() << "a 48x40 image was accepted without interpolate_pos_encoding";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("48*40"), std::string::npos) << e.what();
  }
  model->set_requires_grad(true);
  VisionOutput out = model->forward(pixels, {}, true);
  EXPECT_EQ(out.grid_h, 6);
  EXPECT_EQ(out.grid_w, 5);
  EXPECT_TRUE(close_to(out.last_hidden_state, f.at("interp.last_hidden_state"), 1e-5));
  EXPECT_TRUE(close_to(out.pooler_output, f.at("interp.pooler_output"), 1e-5));
  Tensor loss = probe_loss(f, "interp.", {{"last_hidden_state", out.last_hidden_state},
                                          {"pooler_output", out.pooler_output}});
  EXPECT_TRUE(close_to(reshape(loss, {1}), f.at("interp.loss"), 1e-5));
  backward(loss);
  expect_grads(*model, f, "interp.", true);
}

TEST(ViT, BicubicResampleMatrix) {
  // Same size: the identity. Rows always sum to 1 (the kernel is a partition of unity).
  EXPECT_TRUE(test::values_are(bicubic_resample_matrix(3, 3), {1, 0, 0, 0, 1, 0, 0, 0, 1}, 1e-7));
  Tensor m = bicubic_resample_matrix(4, 7, DType::F64);
  std::vector<double> v = to_vector(m);
  for (int i = 0; i < 7; ++i) {
    double s = 0;
    for (int j = 0; j < 4; ++j) s += v[size_t(i * 4 + j)];
    EXPECT_NEAR(s, 1.0, 1e-12) << "row " << i;
  }
  // Upsampling 2 -> 4: output 0 sits at source -0.25 (t = 0.75 from index -1, clamped to 0), output 1 at 0.25.
  // PyTorch's kernel (a = -0.75) at t = 0.25: weights -0.10546875, 0.87890625, 0.26171875, -0.03515625.
  Tensor up = bicubic_resample_matrix(2, 4, DType::F64);
  EXPECT_TRUE(test::values_are(narrow(up, 0, 1, 1), {-0.10546875 + 0.87890625, 0.26171875 - 0.03515625}, 1e-7));
}

TEST(ViT, ClassifierMatchesTransformers) {
  auto model = load_vit_for_image_classification(kFixtures + "/classifier");
  TensorMap f = read_fixture(kFixtures + "/classifier");
  EXPECT_FALSE(model->vit.pooler);
  EXPECT_FALSE(model->vit.encoder.layers[0]->attention.query.bias.defined());  // qkv_bias false
  model->set_requires_grad(true);
  auto out = model->forward(f.at("pixel_values"));
  EXPECT_TRUE(close_to(out.logits, f.at("logits"), 1e-5));
  Tensor loss = cross_entropy(out.logits, f.at("labels"));
  EXPECT_TRUE(close_to(reshape(loss, {1}), f.at("loss"), 1e-5));
  backward(loss);
  expect_grads(*model, f, "");
}

TEST(ViT, CheckpointPrefixRules) {
  // A bare ViTModel (no pooler) from the classification checkpoint: the "vit." part loads, the head is ignored,
  // and it computes the same hidden states as the classifier's backbone.
  auto cls = load_vit_for_image_classification(kFixtures + "/classifier");
  ViTModel bare(cls->config, false);
  StateDictReport r = load_checkpoint(bare, kFixtures + "/classifier");
  EXPECT_TRUE(r.ok()) << r.describe();
  TensorMap f = read_fixture(kFixtures + "/classifier");
  EXPECT_TRUE(test::all_close(bare.forward(f.at("pixel_values")).last_hidden_state,
                              cls->forward(f.at("pixel_values")).vit.last_hidden_state, 0, 0));

  // A classifier from the (unprefixed) base checkpoint: the pooler is ignored, the new head keeps its values.
  ViTForImageClassification fresh(read_vit_config(kFixtures + "/base"));
  Tensor head_before = clone(fresh.classifier.weight);
  r = load_checkpoint(fresh, kFixtures + "/base");
  EXPECT_EQ(r.missing.size(), 0u) << r.describe();
  EXPECT_TRUE(test::all_close(fresh.classifier.weight, head_before, 0, 0));
  auto base = load_vit_model(kFixtures + "/base");
  EXPECT_TRUE(test::all_close(fresh.vit.embeddings.position_embeddings, base->embeddings.position_embeddings, 0, 0));
}

TEST(ViT, CheckpointErrorsNameTheTensor) {
  auto tensors = read_checkpoint(kFixtures + "/base");
  auto expect_error = [&](std::vector<std::pair<std::string, Tensor>> ts, const std::vector<std::string>& needles) {
    ViTModel model(read_vit_config(kFixtures + "/base"));
    Tensor before = clone(model.embeddings.cls_token);
    try {
      load_checkpoint(model, ts);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
    EXPECT_TRUE(test::all_close(model.embeddings.cls_token, before, 0, 0)) << "a failed load copied tensors";
  };
  auto without = [&](const std::string& name) {
    auto ts = tensors;
    ts.erase(std::remove_if(ts.begin(), ts.end(), [&](const auto& p) { return p.first == name; }), ts.end());
    return ts;
  };
  expect_error(without("encoder.layer.1.attention.attention.key.weight"),
               {"missing", "encoder.layer.1.attention.attention.key.weight"});
  auto wrong = tensors;
  for (auto& [name, t] : wrong)
    if (name == "embeddings.position_embeddings") t = zeros({1, 5, 24});
  expect_error(wrong, {"embeddings.position_embeddings", "[1, 5, 24]", "[1, 17, 24]"});
  auto extra = tensors;
  extra.push_back({"encoder.layer.2.output.dense.weight", zeros({24, 48})});
  expect_error(extra, {"unexpected", "encoder.layer.2.output.dense.weight"});
  // Several problems: all of them in one message.
  auto both = without("layernorm.bias");
  both.push_back({"encoder.layer.9.output.dense.bias", zeros({24})});
  expect_error(both, {"layernorm.bias", "encoder.layer.9.output.dense.bias"});
  // Not strict: the report lists the problem and the rest loads.
  ViTModel model(read_vit_config(kFixtures + "/base"));
  StateDictReport r = load_checkpoint(model, without("pooler.dense.bias"), false);
  ASSERT_EQ(r.missing.size(), 1u);
  EXPECT_EQ(r.missing[0], "pooler.dense.bias");
}

TEST(ViT, SiteNames) {
  ViTForImageClassification model(read_vit_config(kFixtures + "/classifier"));
  std::map<std::string, std::string> types;
  for (auto& [name, m] : model.named_modules()) types[name] = m->type_name();
  for (const char* name : {"vit.encoder.input_site", "vit.encoder.layer.0.input_site", "vit.encoder.layer.1.input_site"})
    EXPECT_EQ(types[name], "InputSite") << name;
  for (const char* name : {"vit.encoder.layer.0.sa_site", "vit.encoder.layer.0.ff_site", "vit.encoder.layer.1.ff_site"})
    EXPECT_EQ(types[name], "SublayerSite") << name;
  EXPECT_EQ(types["vit.encoder.layer.1.attention.attn_site"], "AttentionSite");
  for (const char* name : {"vit.encoder.layer.0.attention.attention.query", "vit.encoder.layer.0.attention.attention.key",
                           "vit.encoder.layer.0.attention.attention.value", "vit.encoder.layer.0.attention.output.dense",
                           "vit.encoder.layer.0.intermediate.dense", "vit.encoder.layer.0.output.dense", "classifier"})
    EXPECT_EQ(types[name], "Linear") << name;
  EXPECT_EQ(types["vit.embeddings.patch_embeddings.projection"], "Conv2d");
  // Sites hold no parameters of their own: the state dict is exactly the checkpoint's.
  auto names = model.named_parameters();
  EXPECT_EQ(names.size(), read_checkpoint(kFixtures + "/classifier").size());
}

// Sublayer adapters that cancel their sublayer: the residual stream then carries the embeddings unchanged.
struct ZeroSublayer : SublayerAdapter {
  int calls = 0;
  Shape input_shape;
  Tensor forward(const Tensor& input, const Tensor& output, const ForwardContext&) override {
    ++calls;
    input_shape = input.shape();
    return mul(output, 0.0);
  }
};

TEST(ViT, SublayerSitesActOnEveryLayer) {
  auto model = load_vit_model(kFixtures + "/base");
  TensorMap f = read_fixture(kFixtures + "/base");
  std::vector<std::shared_ptr<ZeroSublayer>> adapters;
  for (auto& layer : model->encoder.layers)
    for (SublayerSite* site : {&layer->sa_site, &layer->ff_site}) {
      adapters.push_back(std::make_shared<ZeroSublayer>());
      attach_adapter(*site, "zero", adapters.back());
    }
  const Tensor& pixels = f.at("pixel_values");
  VisionOutput out = model->forward(pixels);
  for (auto& a : adapters) {
    EXPECT_EQ(a->calls, 1);
    EXPECT_EQ(a->input_shape, (Shape{2, 17, 24}));
  }
  // Expected: layernorm([cls; patches] + positions).
  const ViTEmbeddings& e = model->embeddings;
  Tensor tokens = concat({expand(e.cls_token, {2, 1, 24}), patch_embed(pixels, e.projection.weight, e.projection.bias)}, 1);
  Tensor expected = model->layernorm.forward(tokens + e.position_embeddings);
  EXPECT_TRUE(test::all_close(out.last_hidden_state, expected, 1e-5, 1e-5));
  // Detached, the model is the pretrained one again.
  for (auto& layer : model->encoder.layers)
    for (SublayerSite* site : {&layer->sa_site, &layer->ff_site}) detach_adapter(*site, "zero");
  EXPECT_TRUE(close_to(model->forward(pixels).last_hidden_state, f.at("last_hidden_state"), 1e-5));
}

// Shallow VPT: p prompt tokens inserted after CLS, with a mask. Masked out (mask 0), they leave every other
// position exactly as without them; attended, they change the outputs.
struct InsertPrompts : InputAdapter {
  Tensor prompts;  // [p, D]
  bool masked;
  InsertPrompts(Tensor p, bool m) : prompts(std::move(p)), masked(m) {}
  Tensor forward(const Tensor& embeds, Tensor& mask, const ForwardContext&) override {
    const int64_t B = embeds.size(0), T = embeds.size(1), p = prompts.size(0), D = embeds.size(2);
    Tensor out = concat({narrow(embeds, 1, 0, 1), expand(unsqueeze(prompts, 0), {B, p, D}), narrow(embeds, 1, 1, T - 1)}, 1);
    Tensor pm = masked ? zeros({B, p}, DType::I64) : ones({B, p}, DType::I64);
    mask = concat({narrow(mask, 1, 0, 1), pm, narrow(mask, 1, 1, T - 1)}, 1);
    return out;
  }
};

// VPT-deep: replaces positions 1 .. p of a layer's input by its own prompts.
struct ReplacePrompts : InputAdapter {
  Tensor prompts;
  int calls = 0;
  explicit ReplacePrompts(Tensor p) : prompts(std::move(p)) {}
  Tensor forward(const Tensor& h, Tensor& mask, const ForwardContext&) override {
    ++calls;
    const int64_t B = h.size(0), T = h.size(1), p = prompts.size(0), D = h.size(2);
    return concat({narrow(h, 1, 0, 1), expand(unsqueeze(prompts, 0), {B, p, D}), narrow(h, 1, 1 + p, T - 1 - p)}, 1);
  }
};

TEST(ViT, InputSitesInsertAndReplacePrompts) {
  auto model = load_vit_model(kFixtures + "/base");
  TensorMap f = read_fixture(kFixtures + "/base");
  const Tensor& pixels = f.at("pixel_values");
  Tensor prompts = test::rand_input({3, 24}, 7, DType::F32, false);

  auto masked = std::make_shared<InsertPrompts>(prompts, true);
  attach_adapter(model->encoder.input_site, "vpt", masked);
  VisionOutput out = model->forward(pixels);
  ASSERT_EQ(out.last_hidden_state.shape(), (Shape{2, 20, 24}));
  Tensor ref = f.at("last_hidden_state");
  EXPECT_TRUE(close_to(select(out.last_hidden_state, 1, 0), select(ref, 1, 0), 1e-5));
  EXPECT_TRUE(close_to(out.patch_tokens(), narrow(ref, 1, 1, 16), 1e-5));
  EXPECT_TRUE(close_to(out.pooler_output, f.at("pooler_output"), 1e-5));
  detach_adapter(model->encoder.input_site, "vpt");

  auto shallow = std::make_shared<InsertPrompts>(prompts, false);
  attach_adapter(model->encoder.input_site, "vpt", shallow);
  VisionOutput attended = model->forward(pixels);
  EXPECT_FALSE(test::all_close(select(attended.last_hidden_state, 1, 0), select(ref, 1, 0), 1e-3, 1e-3));
  // Deep: layer 1's prompt slots replaced; the result differs again, and the prompts get gradients.
  Tensor deep_prompts = test::rand_input({3, 24}, 8, DType::F32, true);
  auto deep = std::make_shared<ReplacePrompts>(deep_prompts);
  attach_adapter(model->encoder.layers[1]->input_site, "vpt", deep);
  VisionOutput deep_out = model->forward(pixels);
  EXPECT_EQ(deep->calls, 1);
  EXPECT_EQ(deep_out.last_hidden_state.shape(), (Shape{2, 20, 24}));
  EXPECT_FALSE(test::all_close(deep_out.pooler_output, attended.pooler_output, 1e-3, 1e-3));
  backward(sum(deep_out.pooler_output));
  ASSERT_TRUE(deep_prompts.grad().defined());
  EXPECT_GT(max_abs(deep_prompts.grad()), 0.0);
}

// An attention adapter sees q, k, v split into heads [B, H, T, Dh] and may change the merged output.
struct RecordAttention : AttentionAdapter {
  Shape q_shape;
  void before(AttentionState& s, const ForwardContext&) override { q_shape = s.q.shape(); }
  Tensor after(const Tensor&, const AttentionState&, const Tensor& out, const ForwardContext&) override {
    return mul(out, 0.0);
  }
};

TEST(ViT, AttentionSiteSeesHeads) {
  auto model = load_vit_model(kFixtures + "/base");
  TensorMap f = read_fixture(kFixtures + "/base");
  auto rec = std::make_shared<RecordAttention>();
  attach_adapter(model->encoder.layers[0]->attention.attn_site, "rec", rec);
  VisionOutput out = model->forward(f.at("pixel_values"));
  EXPECT_EQ(rec->q_shape, (Shape{2, 4, 17, 6}));
  EXPECT_FALSE(test::all_close(out.last_hidden_state, f.at("last_hidden_state"), 1e-3, 1e-3));
}

TEST(ViT, FrozenForwardRecordsNothingAndDropoutOnlyInTraining) {
  auto model = load_vit_model(kFixtures + "/base");  // hidden and attention dropout 0.1
  TensorMap f = read_fixture(kFixtures + "/base");
  model->set_requires_grad(false);
  VisionOutput eval = model->forward(f.at("pixel_values"));
  EXPECT_FALSE(eval.last_hidden_state.requires_grad());
  ForwardContext train;
  train.training = true;
  Generator gen(3);
  train.generator = &gen;
  VisionOutput dropped = model->forward(f.at("pixel_values"), train);
  EXPECT_FALSE(test::all_close(dropped.last_hidden_state, eval.last_hidden_state, 1e-3, 1e-3));
  EXPECT_TRUE(close_to(eval.last_hidden_state, f.at("last_hidden_state"), 1e-5));
}

}  // namespace
}  // namespace vlp
