// The CLIP vision tower against transformers (tests/fixtures/models/clip_vision, made by
// tools/reference/make_vision_model_fixtures.py): last hidden state, pooled output, image embeds and every
// parameter's gradient; the interpolated-position case; loading from a whole CLIPModel checkpoint; errors;
// sites; the parameter count of clip-vit-base-patch32.
#include <algorithm>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "models/checkpoint.h"
#include "runtime/safetensors.h"
#include "models/clip_vision.h"

namespace vlp {
namespace {

const std::string kFixture = std::string(VLP_SOURCE_DIR) + "/tests/fixtures/models/clip_vision";
const std::string kConfigs = std::string(VLP_SOURCE_DIR) + "/configs/hf";

using TensorMap = std::map<std::string, Tensor>;

TensorMap read_fixture() {
  TensorMap m;
  for (auto& [name, t] : load_safetensors(kFixture + "/fixture.safetensors").tensors) m[name] = t;
  return m;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : to_vector(t)) m = std::max(m, std::abs(v));
  return m;
}

::testing::AssertionResult close_to(const Tensor& a, const Tensor& b, double rel) {
  return test::all_close(a, b, rel, rel * max_abs(b));
}

// The reference loss: sum over outputs X of probe.X * X; then every gradient the fixture holds under `prefix`.
void check_case(CLIPVisionModel& model, const TensorMap& f, const std::string& prefix, bool interpolate) {
  model.set_requires_grad(true);
  for (auto& p : model.parameters()) p.set_grad(Tensor());
  VisionOutput out = model.forward(f.at(prefix + "pixel_values"), {}, interpolate);
  EXPECT_TRUE(close_to(out.last_hidden_state, f.at(prefix + "last_hidden_state"), 1e-5));
  EXPECT_TRUE(close_to(out.pooler_output, f.at(prefix + "pooler_output"), 1e-5));
  EXPECT_TRUE(close_to(out.image_embeds, f.at(prefix + "image_embeds"), 1e-5));
  Tensor loss = add(add(sum(mul(out.last_hidden_state, f.at(prefix + "probe.last_hidden_state"))),
                        sum(mul(out.pooler_output, f.at(prefix + "probe.pooler_output")))),
                    sum(mul(out.image_embeds, f.at(prefix + "probe.image_embeds"))));
  EXPECT_TRUE(close_to(reshape(loss, {1}), f.at(prefix + "loss"), 1e-5));
  backward(loss);
  double largest = 0;
  int expected = 0, checked = 0;
  for (const auto& [k, v] : f)
    if (k.rfind(prefix + "grad.", 0) == 0) largest = std::max(largest, max_abs(v)), ++expected;
  for (const auto& [name, p] : model.named_parameters()) {
    auto it = f.find(prefix + "grad." + name);
    if (it == f.end()) {
      EXPECT_FALSE(prefix.empty()) << "no reference gradient for " << name;
      continue;
    }
    ASSERT_TRUE(p.grad().defined()) << name;
    // Within 1e-4 of each element and of the tensor's scale; the key bias's exact gradient is zero (softmax
    // ignores a constant added to a row of scores), so both sides are float noise, checked to be tiny.
    if (name.find("k_proj.bias") != std::string::npos) {
      EXPECT_LE(max_abs(p.grad()), 1e-6 * largest) << name;
      EXPECT_LE(max_abs(it->second), 1e-6 * largest) << name;
    } else {
      EXPECT_TRUE(close_to(p.grad(), it->second, 1e-4)) << name;
    }
    ++checked;
  }
  EXPECT_EQ(checked, expected);
}

TEST(CLIPVisionConfig, ReadsCLIPConfigAndVisionConfig) {
  CLIPVisionConfig c = read_clip_vision_config(kConfigs + "/clip-vit-base-patch32.json");  // a whole CLIPConfig
  EXPECT_EQ(c.hidden_size, 768);
  EXPECT_EQ(c.intermediate_size, 3072);
  EXPECT_EQ(c.num_hidden_layers, 12);
  EXPECT_EQ(c.num_attention_heads, 12);
  EXPECT_EQ(c.image_size, 224);
  EXPECT_EQ(c.patch_size, 32);
  EXPECT_EQ(c.projection_dim, 512);
  EXPECT_EQ(c.hidden_act, "quick_gelu");
  EXPECT_EQ(c.layer_norm_eps, 1e-5);
  EXPECT_EQ(c.grid_size(), 7);
  CLIPVisionConfig tiny = read_clip_vision_config(kFixture);  // clip_vision_model
  EXPECT_EQ(tiny.hidden_size, 24);
  EXPECT_EQ(tiny.projection_dim, 16);
  EXPECT_EQ(tiny.attention_dropout, 0.1);
  // The top-level projection_dim of a CLIPConfig wins over the vision config's.
  CLIPVisionConfig top = parse_clip_vision_config(
      R"({"model_type": "clip", "projection_dim": 64, "vision_config": {"hidden_size": 32, "intermediate_size": 64,
          "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 16,
          "projection_dim": 8}})",
      "top");
  EXPECT_EQ(top.projection_dim, 64);
}

TEST(CLIPVisionConfig, ErrorsNameTheKey) {
  auto fails_with = [](const std::string& text, const std::string& needle) {
    try {
      parse_clip_vision_config(text, "test.json");
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      return;
    }
    ADD_FAILURE() << "no error for " << text;
  };
  fails_with(R"({"model_type": "clip"})", "vision_config");
  fails_with(R"({"model_type": "clip", "vision_config": {"hidden_size": 32}})", "vision_config: required key "
                                                                                 "'intermediate_size'");
  fails_with(R"({"model_type": "vit", "hidden_size": 32})", "model_type");
  fails_with(R"({"hidden_size": 30, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                 "image_size": 32, "patch_size": 16})", "not divisible by num_attention_heads");
  fails_with(R"({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                 "image_size": 32, "patch_size": 16, "hidden_act": "gelu9"})", "hidden_act");
}

TEST(CLIPVision, ParameterCountEqualsTransformers) {
  std::ifstream f(kFixture + "/param_counts.json");
  auto counts = nlohmann::json::parse(f);
  CLIPVisionConfig c = read_clip_vision_config(kConfigs + "/clip-vit-base-patch32.json");
  const int64_t expected = counts["clip-vit-base-patch32"].get<int64_t>();
  EXPECT_EQ(clip_vision_num_parameters(c), expected);
  EXPECT_EQ(CLIPVisionModel(c).num_parameters(), expected);
  CLIPVisionConfig tiny = read_clip_vision_config(kFixture);
  EXPECT_EQ(CLIPVisionModel(tiny, false).num_parameters(), clip_vision_num_parameters(tiny, false));
}

TEST(CLIPVision, MatchesTransformers) {
  auto model = load_clip_vision_model(kFixture);
  TensorMap f = read_fixture();
  check_case(*model, f, "", false);
}

TEST(CLIPVision, InterpolatedPositionsMatchTransformers) {
  auto model = load_clip_vision_model(kFixture);
  TensorMap f = read_fixture();
  EXPECT_THROW(model->forward(f.at("interp.pixel_values")), Error);
  check_case(*model, f, "interp.", true);
}

TEST(CLIPVision, LoadsFromAWholeCLIPCheckpoint) {
  auto tensors = read_checkpoint(kFixture);
  auto whole = tensors;
  whole.push_back({"text_model.embeddings.token_embedding.weight", zeros({10, 8})});
  whole.push_back({"text_model.encoder.layers.0.self_attn.q_proj.weight", zeros({8, 8})});
  whole.push_back({"text_projection.weight", zeros({16, 8})});
  whole.push_back({"logit_scale", zeros({})});
  whole.push_back({"vision_model.embeddings.position_ids", zeros({1, 17}, DType::I64)});
  CLIPVisionModel model(read_clip_vision_config(kFixture));
  StateDictReport r = load_checkpoint(model, whole);
  EXPECT_TRUE(r.ok()) << r.describe();
  TensorMap f = read_fixture();
  EXPECT_TRUE(close_to(model.forward(f.at("pixel_values")).image_embeds, f.at("image_embeds"), 1e-5));
  // Without the projection: visual_projection is ignored, the pooled output is the same.
  CLIPVisionModel bare(read_clip_vision_config(kFixture), false);
  r = load_checkpoint(bare, whole);
  EXPECT_TRUE(r.ok()) << r.describe();
  VisionOutput out = bare.forward(f.at("pixel_values"));
  EXPECT_FALSE(out.image_embeds.defined());
  EXPECT_TRUE(close_to(out.pooler_output, f.at("pooler_output"), 1e-5));
}

TEST(CLIPVision, CheckpointErrorsNameTheTensor) {
  auto tensors = read_checkpoint(kFixture);
  auto expect_error = [&](const std::vector<std::pair<std::string, Tensor>>& ts, const std::vector<std::string>& needles) {
    CLIPVisionModel model(read_clip_vision_config(kFixture));
    Tensor before = clone(model.vision_model.embeddings.class_embedding);
    try {
      load_checkpoint(model, ts);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
    EXPECT_TRUE(test::all_close(model.vision_model.embeddings.class_embedding, before, 0, 0));
  };
  auto missing = tensors;
  missing.erase(std::remove_if(missing.begin(), missing.end(),
                               [](const auto& p) { return p.first == "visual_projection.weight"; }),
                missing.end());
  expect_error(missing, {"missing", "visual_projection.weight"});
  auto wrong = tensors;
  for (auto& [name, t] : wrong)
    if (name == "vision_model.encoder.layers.1.mlp.fc1.weight") t = zeros({48, 12});
  expect_error(wrong, {"vision_model.encoder.layers.1.mlp.fc1.weight", "[48, 12]", "[48, 24]"});
  auto patch_bias = tensors;  // CLIP's patch convolution has no bias
  patch_bias.push_back({"vision_model.embeddings.patch_embedding.bias", zeros({24})});
  expect_error(patch_bias, {"unexpected", "vision_model.embeddings.patch_embedding.bias"});
}

TEST(CLIPVision, SitesAndNames) {
  CLIPVisionModel model(read_clip_vision_config(kFixture));
  std::map<std::string, std::string> types;
  for (auto& [name, m] : model.named_modules()) types[name] = m->type_name();
  EXPECT_EQ(types["vision_model.encoder.input_site"], "InputSite");
  EXPECT_EQ(types["vision_model.encoder.layers.1.input_site"], "InputSite");
  EXPECT_EQ(types["vision_model.encoder.layers.0.sa_site"], "SublayerSite");
  EXPECT_EQ(types["vision_model.encoder.layers.0.ff_site"], "SublayerSite");
  EXPECT_EQ(types["vision_model.encoder.layers.0.self_attn.attn_site"], "AttentionSite");
  for (const char* name : {"q_proj", "k_proj", "v_proj", "out_proj"})
    EXPECT_EQ(types[std::string("vision_model.encoder.layers.1.self_attn.") + name], "Linear") << name;
  EXPECT_EQ(types["vision_model.encoder.layers.1.mlp.fc1"], "Linear");
  EXPECT_EQ(types["vision_model.encoder.layers.1.mlp.fc2"], "Linear");
  EXPECT_EQ(types["visual_projection"], "Linear");
  EXPECT_EQ(model.named_parameters().size(), read_checkpoint(kFixture).size());
}

// Shallow VPT on CLIP: prompts inserted after CLS at the encoder input (after pre_layrnorm); masked out they change
// nothing, attended they change the pooled output, and they receive gradients.
struct InsertPrompts : InputAdapter {
  Tensor prompts;
  bool masked;
  Shape seen;
  InsertPrompts(Tensor p, bool m) : prompts(std::move(p)), masked(m) {}
  Tensor forward(const Tensor& embeds, Tensor& mask, const ForwardContext&) override {
    seen = embeds.shape();
    const int64_t B = embeds.size(0), T = embeds.size(1), p = prompts.size(0), D = embeds.size(2);
    Tensor pm = masked ? zeros({B, p}, DType::I64) : ones({B, p}, DType::I64);
    mask = concat({narrow(mask, 1, 0, 1), pm, narrow(mask, 1, 1, T - 1)}, 1);
    return concat({narrow(embeds, 1, 0, 1), expand(unsqueeze(prompts, 0), {B, p, D}), narrow(embeds, 1, 1, T - 1)}, 1);
  }
};

TEST(CLIPVision, InputSiteInsertsPrompts) {
  auto model = load_clip_vision_model(kFixture);
  TensorMap f = read_fixture();
  model->set_requires_grad(false);
  Tensor prompts = test::rand_input({2, 24}, 11, DType::F32, true);
  auto masked = std::make_shared<InsertPrompts>(prompts, true);
  attach_adapter(model->vision_model.encoder.input_site, "vpt", masked);
  VisionOutput out = model->forward(f.at("pixel_values"));
  EXPECT_EQ(masked->seen, (Shape{2, 17, 24}));
  EXPECT_EQ(out.last_hidden_state.shape(), (Shape{2, 19, 24}));
  EXPECT_TRUE(close_to(out.image_embeds, f.at("image_embeds"), 1e-5));
  EXPECT_TRUE(close_to(out.patch_tokens(), narrow(f.at("last_hidden_state"), 1, 1, 16), 1e-5));
  detach_adapter(model->vision_model.encoder.input_site, "vpt");
  attach_adapter(model->vision_model.encoder.input_site, "vpt", std::make_shared<InsertPrompts>(prompts, false));
  out = model->forward(f.at("pixel_values"));
  EXPECT_FALSE(test::all_close(out.image_embeds, f.at("image_embeds"), 1e-3, 1e-3));
  backward(sum(out.image_embeds));
  ASSERT_TRUE(prompts.grad().defined());
  EXPECT_GT(max_abs(prompts.grad()), 0.0);
}

}  // namespace
}  // namespace vlp
