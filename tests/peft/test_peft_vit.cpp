// PEFT on the tiny ViT classifier against huggingface/peft 0.21.2 on transformers 5.23 (fixtures of
// tools/reference/make_peft_vit_fixtures.py, tests/fixtures/peft_vit/<case>/). PEFT there names ViT's modules
// in the transformers-5 scheme (vit.layers.N.attention.q_proj, mlp.fc1, ...); models/vit keeps the classic ones.
//   - PEFT's files load here (names translated by models/peft/vit_names.cpp) and give PEFT's logits and loss
//     (1e-5 of the largest logit / of the loss) and adapter gradients (1e-4 relative to the gradient's norm);
//   - the same method configured here with classic target names, holding PEFT's adapter values, gives the same;
//   - files written here use the classic names (keys and config) and load back identically; trained copies are
//     left in build/peft_written_vit/<case> for `make_peft_vit_fixtures.py --check build/peft_written_vit`,
//     which renames them to the transformers-5 scheme and loads them in PEFT
//     (tests/fixtures/peft_vit/written_by_vlpeft_check.json);
//   - merged == unmerged (1e-5) for every case;
//   - the name table itself: known keys, regex for a bare fc2, and errors naming what it cannot map.
#include <filesystem>

#include "autograd/optim.h"
#include "models/peft/vit_names.h"

#include "tests/peft/peft_fixture.h"
#include "common/test_util.h"

namespace vlp {
namespace {

using nlohmann::json;
using test::close_in_norm;
using test::close_to_scale;

struct Case {
  std::string name;
  // The module-name fields of PEFT's config, written by hand in classic ViT names (independent of the table).
  json classic_fields;
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

std::string vit_dir(const std::string& c) { return std::string(VLP_SOURCE_DIR) + "/tests/fixtures/peft_vit/" + c; }

using ::vlp::test::error_of;

// PEFT's tensors (or gradients, prefix "grad.") keyed by classic names.
std::map<std::string, Tensor> classic_keyed(const std::map<std::string, Tensor>& hf, const std::string& prefix = "") {
  std::map<std::string, Tensor> out;
  for (auto& [k, t] : hf)
    if (k.rfind(prefix, 0) == 0) out[peft::vit_key_from_transformers5(k.substr(prefix.size()))] = t;
  return out;
}

// Logits, loss and every adapter gradient against PEFT's fixture; exactly the adapter is trainable.
void expect_matches_peft(test::TinyModel& m, const std::string& case_name) {
  auto fx = test::read_tensors(vit_dir(case_name) + "/fixture.safetensors");
  auto out = m.forward();
  EXPECT_TRUE(close_to_scale(out.logits, fx.at("logits"), 1e-5));
  EXPECT_NEAR(out.loss.item(), fx.at("loss").item(), 1e-5 * std::abs(fx.at("loss").item()));
  backward(out.loss);
  EXPECT_TRUE(test::grads_exactly_on_trainable(m.module()));
  auto grads = classic_keyed(fx, "grad.");
  auto sd = peft::adapter_state_dict(m.module(), "default");
  size_t trainable_in_file = 0;
  int64_t saved = 0, trainable = 0;
  for (auto& [key, t] : sd) {
    saved += t.numel();
    if (!t.requires_grad()) {
      EXPECT_FALSE(grads.count(key)) << "PEFT trains " << key;
      continue;
    }
    ++trainable_in_file;
    ASSERT_TRUE(grads.count(key)) << "PEFT has no gradient for " << key;
    EXPECT_TRUE(close_in_norm(t.grad(), grads.at(key), 1e-4, 1e-6)) << key;
  }
  EXPECT_EQ(trainable_in_file, grads.size()) << "trainable set differs from PEFT's";
  for (auto& [n, p] : m.module().named_parameters()) trainable += p.requires_grad() ? p.numel() : 0;
  EXPECT_LE(trainable, saved);  // saved also holds frozen buffers (VeRA's projections)
}

class VitPeft : public ::testing::TestWithParam<Case> {};

TEST_P(VitPeft, Transformers5FilesLoadWithPeftOutputs) {
  const Case c = GetParam();
  test::TinyModel m("vit");
  peft::PeftConfig config = peft::load_adapter(m.module(), vit_dir(c.name));
  for (auto& [field, v] : c.classic_fields.items()) EXPECT_EQ(config.raw[field], v) << field;
  expect_matches_peft(m, c.name);
}

TEST_P(VitPeft, ClassicTargetsWithPeftValuesMatchPeft) {
  const Case c = GetParam();
  test::TinyModel m("vit");
  json j = json::parse(test::read_text(vit_dir(c.name) + "/adapter_config.json"));
  for (auto& [field, v] : c.classic_fields.items()) j[field] = v;
  peft::add_adapter(m.module(), peft::parse_peft_config(j, c.name + " (classic names)"), "default", 7);
  auto values = classic_keyed(test::read_tensors(vit_dir(c.name) + "/adapter_model.safetensors"));
  auto sd = peft::adapter_state_dict(m.module(), "default");
  ASSERT_EQ(sd.size(), values.size());
  {
    NoGradGuard no_grad;
    for (auto& [key, t] : sd) {
      ASSERT_TRUE(values.count(key)) << "PEFT's file has no " << key;
      ASSERT_EQ(t.shape(), values.at(key).shape()) << key;
      copy_(t, values.at(key));
    }
  }
  expect_matches_peft(m, c.name);
}

TEST_P(VitPeft, WrittenFilesUseClassicNamesAndRoundTrip) {
  const Case c = GetParam();
  test::TinyModel m("vit");
  peft::PeftConfig config = peft::load_adapter(m.module(), vit_dir(c.name));
  // Unchanged values first: the same tensors as PEFT's file, under the classic names.
  test::ScratchDir same("vit_peft_" + c.name);
  peft::save_adapter(m.module(), config, "default", same.path.string());
  auto ours = test::read_tensors((same.path / "adapter_model.safetensors").string());
  auto theirs = classic_keyed(test::read_tensors(vit_dir(c.name) + "/adapter_model.safetensors"));
  ASSERT_EQ(ours.size(), theirs.size());
  for (auto& [key, t] : ours) {
    EXPECT_EQ(key.find(".layers."), std::string::npos) << key;
    ASSERT_TRUE(theirs.count(key)) << key;
    EXPECT_TRUE(test::all_close(t, theirs.at(key), 0, 0)) << key;
  }
  json written = json::parse(test::read_text((same.path / "adapter_config.json").string()));
  for (auto& [field, v] : c.classic_fields.items()) EXPECT_EQ(written[field], v) << field;
  EXPECT_FALSE(peft::uses_transformers5_vit_names(written, {}));

  // Trained here, written here: loads back identically; left for the reverse check in PEFT.
  std::vector<Tensor> trainable;
  for (auto& [n, p] : m.module().named_parameters())
    if (p.requires_grad()) trainable.push_back(p);
  Optimizer opt = make_adamw(trainable, 1e-2, 0.0);
  backward(m.forward().loss);
  step(opt);
  const auto out_dir = std::filesystem::path(VLP_BINARY_DIR) / "peft_written_vit" / c.name;
  std::filesystem::remove_all(out_dir);
  peft::save_adapter(m.module(), config, "default", out_dir.string());
  Tensor logits = m.logits();
  save_safetensors((out_dir / "outputs.safetensors").string(), {{"logits", contiguous(logits)}});
  test::TinyModel again("vit");
  peft::load_adapter(again.module(), out_dir.string());
  EXPECT_TRUE(test::all_close(again.logits(), logits, 0, 0));
  EXPECT_FALSE(test::all_close(logits, test::read_tensors(vit_dir(c.name) + "/fixture.safetensors").at("logits"),
                               1e-6, 0));
}

TEST_P(VitPeft, MergedEqualsUnmerged) {
  const Case c = GetParam();
  test::TinyModel m("vit");
  peft::load_adapter(m.module(), vit_dir(c.name));
  Tensor unmerged = m.logits();
  peft::merge_adapters(m.module(), {});
  EXPECT_TRUE(close_to_scale(m.logits(), unmerged, 1e-5));
  peft::unmerge_adapters(m.module());
  EXPECT_TRUE(close_to_scale(m.logits(), unmerged, 1e-5));
  peft::merge_and_unload(m.module());
  EXPECT_TRUE(close_to_scale(m.logits(), unmerged, 1e-5));
}

// Attention-only classic targets as PEFT on transformers 4.x lists them (PEFT's order).
const json kQV = {{"target_modules", {"value", "query"}}, {"modules_to_save", {"classifier"}}};
// A bare fc2 has no classic suffix: the translated list is a full-match regex.
const char* const kIa3Targets = "(.*\\.)?(layer\\.[0-9]+\\.output\\.dense|value|key)";

INSTANTIATE_TEST_SUITE_P(
    Cases, VitPeft,
    ::testing::Values(
        Case{"vit_lora", kQV},
        Case{"vit_dora",
             {{"target_modules", {"intermediate.dense", "attention.output.dense", "query"}},
              {"modules_to_save", {"classifier"}}}},
        Case{"vit_ia3",
             {{"target_modules", kIa3Targets},
              {"feedforward_modules", "(.*\\.)?(layer\\.[0-9]+\\.output\\.dense)"},
              {"modules_to_save", {"classifier"}}}},
        Case{"vit_loha", kQV},
        Case{"vit_lokr",
             {{"target_modules", "(.*\\.)?(layer\\.[0-9]+\\.output\\.dense|intermediate\\.dense)"},
              {"modules_to_save", {"classifier"}}}},
        Case{"vit_vera", kQV}, Case{"vit_oft", kQV}, Case{"vit_hra", kQV}, Case{"vit_fourierft", kQV}),
    [](const auto& info) { return info.param.name; });

TEST(VitNames, KeysMapToClassicNames) {
  using peft::vit_key_from_transformers5;
  const std::string p = "base_model.model.vit.";
  EXPECT_EQ(vit_key_from_transformers5(p + "layers.0.attention.q_proj.lora_A.weight"),
            p + "encoder.layer.0.attention.attention.query.lora_A.weight");
  EXPECT_EQ(vit_key_from_transformers5(p + "layers.11.attention.k_proj.ia3_l"),
            p + "encoder.layer.11.attention.attention.key.ia3_l");
  EXPECT_EQ(vit_key_from_transformers5(p + "layers.1.attention.v_proj.hra_u"),
            p + "encoder.layer.1.attention.attention.value.hra_u");
  EXPECT_EQ(vit_key_from_transformers5(p + "layers.1.attention.o_proj.base_layer.bias"),
            p + "encoder.layer.1.attention.output.dense.base_layer.bias");
  EXPECT_EQ(vit_key_from_transformers5(p + "layers.0.mlp.fc1.lokr_w1"), p + "encoder.layer.0.intermediate.dense.lokr_w1");
  EXPECT_EQ(vit_key_from_transformers5(p + "layers.0.mlp.fc2.lokr_w1"), p + "encoder.layer.0.output.dense.lokr_w1");
  EXPECT_EQ(vit_key_from_transformers5(p + "layers.0.layernorm_before.ln_tuning_layers.weight"),
            p + "encoder.layer.0.layernorm_before.ln_tuning_layers.weight");
  // ViTModel alone (no "vit." prefix), and keys outside the layer blocks.
  EXPECT_EQ(vit_key_from_transformers5("base_model.model.layers.0.mlp.fc1.lora_B.weight"),
            "base_model.model.encoder.layer.0.intermediate.dense.lora_B.weight");
  for (const std::string k : {"base_model.model.classifier.weight", "base_model.vera_A",
                              "base_model.model.vit.layernorm.weight", "base_model.model.vit.embeddings.cls_token"})
    EXPECT_EQ(vit_key_from_transformers5(k), k);
}

TEST(VitNames, UnmappableNamesAreNamedInErrors) {
  const std::string bad = "base_model.model.vit.layers.0.mlp.act.weight";
  std::string e = error_of([&] { peft::vit_key_from_transformers5(bad); });
  EXPECT_NE(e.find(bad), std::string::npos) << e;
  EXPECT_NE(e.find("'mlp'"), std::string::npos) << e;
  e = error_of([] { peft::vit_key_from_transformers5("base_model.model.vit.layers.0.fc2.lora_A.weight"); });
  EXPECT_NE(e.find("layers.0.fc2"), std::string::npos) << e;
  // A regex naming new modules cannot be rewritten.
  e = error_of([] {
    peft::vit_config_from_transformers5(json{{"target_modules", ".*\\.(q_proj|v_proj)"}}, "cfg.json");
  });
  EXPECT_NE(e.find("cfg.json: field 'target_modules'"), std::string::npos) << e;
  // A bare fc2 where no regex is accepted.
  e = error_of([] { peft::vit_config_from_transformers5(json{{"modules_to_save", {"fc2"}}}, "cfg.json"); });
  EXPECT_NE(e.find("'modules_to_save'"), std::string::npos) << e;
  e = error_of([] { peft::vit_config_from_transformers5(json{{"rank_pattern", {{"fc2", 2}}}}, "cfg.json"); });
  EXPECT_NE(e.find("'rank_pattern' key 'fc2'"), std::string::npos) << e;
}

TEST(VitNames, ConfigFieldsMapToClassicNames) {
  json c = peft::vit_config_from_transformers5(
      json::parse(R"({"target_modules": ["q_proj", "attention.o_proj", "mlp.fc1"], "layers_pattern": "layers",
                      "rank_pattern": {"layers.0.mlp.fc2": 2, "v_proj": 3}, "alpha_pattern": {"q_proj": 4},
                      "exclude_modules": ["layers.1.attention.q_proj"], "modules_to_save": ["classifier"], "r": 8})"),
      "cfg.json");
  EXPECT_EQ(c["target_modules"], json({"query", "attention.output.dense", "intermediate.dense"}));
  EXPECT_EQ(c["layers_pattern"], "layer");
  EXPECT_EQ(c["rank_pattern"], json({{"encoder.layer.0.output.dense", 2}, {"value", 3}}));
  EXPECT_EQ(c["alpha_pattern"], json({{"query", 4}}));
  EXPECT_EQ(c["exclude_modules"], json({"encoder.layer.1.attention.attention.query"}));
  EXPECT_EQ(c["modules_to_save"], json({"classifier"}));
  EXPECT_EQ(c["r"], 8);
  EXPECT_TRUE(peft::uses_transformers5_vit_names(json{{"target_modules", {"fc1"}}}, {}));
  EXPECT_TRUE(peft::uses_transformers5_vit_names(json::object(), {"base_model.model.vit.layers.3.x.y"}));
  EXPECT_FALSE(peft::uses_transformers5_vit_names(json{{"target_modules", {"query", "value"}}},
                                                  {"base_model.model.vit.encoder.layer.0.attention.attention.query.w"}));
}

// A transformers-5 adapter file with a key the table cannot map: load_adapter fails naming it, and the model is
// left without the adapter.
TEST(VitNames, LoadNamesAnUnmappableKey) {
  test::ScratchDir dir("vit_peft_badkey");
  std::filesystem::copy_file(vit_dir("vit_lora") + "/adapter_config.json", dir.path / "adapter_config.json");
  NamedTensors tensors;
  for (auto& [k, t] : load_safetensors(vit_dir("vit_lora") + "/adapter_model.safetensors").tensors)
    tensors.push_back({k, t});
  const std::string bad = "base_model.model.vit.layers.0.mlp.gate.lora_A.weight";
  tensors.push_back({bad, zeros({2, 24})});
  save_safetensors((dir.path / "adapter_model.safetensors").string(), tensors);
  test::TinyModel m("vit");
  std::string e = error_of([&] { peft::load_adapter(m.module(), dir.path.string()); });
  EXPECT_NE(e.find(bad), std::string::npos) << e;
  EXPECT_TRUE(peft::adapter_names(m.module()).empty());
}

}  // namespace
}  // namespace vlp
