// PEFT configs and target selection (spec/peft.md §5, §6.3): HF field names parsed, wrong types and
// unknown values named in errors; list entries match exactly or as dotted suffixes, regexes match the
// full name, exclusions first, modules_to_save never targeted, layer selection by the first
// ".<pattern>.<digits>." segment; default targets per backbone; rank_pattern / alpha_pattern.
#include "models/peft/lora.h"
#include "tests/peft/peft_fixture.h"
#include "common/test_util.h"

namespace vlp {
namespace {

using nlohmann::json;
using peft::parse_peft_config;

using ::vlp::test::error_of;

TEST(PeftConfig, ParsesHfFields) {
  auto c = parse_peft_config(json::parse(R"({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4,
      "target_modules": ["q", "v"], "exclude_modules": "dec.*", "layers_to_transform": 1,
      "layers_pattern": "block", "rank_pattern": {"q": 2}, "alpha_pattern": {"v": 3.5},
      "modules_to_save": ["classifier"], "bias": "lora_only", "base_model_name_or_path": "t5-base"})"));
  EXPECT_EQ(c.peft_type, "LORA");
  EXPECT_EQ(c.task_type, "CAUSAL_LM");
  EXPECT_EQ(c.target_modules, (std::vector<std::string>{"q", "v"}));
  EXPECT_EQ(c.exclude_regex, "dec.*");
  EXPECT_EQ(c.layers_to_transform, (std::vector<int>{1}));
  EXPECT_EQ(c.layers_pattern, (std::vector<std::string>{"block"}));
  EXPECT_EQ(c.rank_pattern.at("q"), 2);
  EXPECT_EQ(c.alpha_pattern.at("v"), 3.5);
  EXPECT_EQ(c.modules_to_save, (std::vector<std::string>{"classifier"}));
  EXPECT_EQ(c.bias, "lora_only");
  EXPECT_EQ(c.get_int("r", 8), 4);
  EXPECT_EQ(c.get_double("lora_alpha", 8), 8);
  auto regex = parse_peft_config(json::parse(R"({"peft_type": "LORA", "target_modules": ".*\\.q"})"));
  EXPECT_EQ(regex.target_regex, ".*\\.q");
  EXPECT_TRUE(regex.target_modules.empty());
  auto all = parse_peft_config(json::parse(R"({"peft_type": "LORA", "target_modules": "all-linear"})"));
  EXPECT_TRUE(all.target_all_linear);
}

TEST(PeftConfig, ErrorsNameTheField) {
  EXPECT_NE(error_of([] { parse_peft_config(json::parse(R"({"r": 4})"), "cfg.json"); }).find("'peft_type'"),
            std::string::npos);
  auto unknown = error_of([] { parse_peft_config(json::parse(R"({"peft_type": "NOPE"})")); });
  EXPECT_NE(unknown.find("NOPE"), std::string::npos);
  EXPECT_NE(unknown.find("LORA"), std::string::npos);  // lists the known types
  auto c = parse_peft_config(json::parse(R"({"peft_type": "LORA", "r": "8", "lora_alpha": true})"), "cfg.json");
  auto r_err = error_of([&] { c.get_int("r", 8); });
  EXPECT_NE(r_err.find("cfg.json"), std::string::npos);
  EXPECT_NE(r_err.find("'r'"), std::string::npos);
  EXPECT_NE(error_of([&] { c.get_double("lora_alpha", 8); }).find("'lora_alpha'"), std::string::npos);
  EXPECT_NE(error_of([&] { c.require_double("scaling"); }).find("'scaling' is missing"), std::string::npos);
  EXPECT_NE(error_of([] { parse_peft_config(json::parse(R"({"peft_type": "LORA", "bias": "some"})")); }).find("'bias'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_peft_config(json::parse(R"({"peft_type": "LORA", "rank_pattern": {"q": 1.5}})"));
            }).find("rank_pattern"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_peft_config(json::parse(R"({"peft_type": "LORA", "target_modules": [1]})"));
            }).find("target_modules"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_peft_config(json::parse(R"({"peft_type": "LORA", "layers_to_transform": ["a"]})"));
            }).find("layers_to_transform"),
            std::string::npos);
}

TEST(PeftMatching, SuffixRegexExcludeLayers) {
  const std::string q0 = "encoder.block.0.layer.0.SelfAttention.q";
  const std::string q1 = "decoder.block.1.layer.0.SelfAttention.q";
  auto cfg = [](const char* text) { return parse_peft_config(json::parse(text)); };
  auto list = cfg(R"({"peft_type": "LORA", "target_modules": ["q", "SelfAttention.v"]})");
  EXPECT_TRUE(peft::name_matches_targets(list, q0, {}));
  EXPECT_TRUE(peft::name_matches_targets(list, "encoder.block.0.layer.0.SelfAttention.v", {}));
  EXPECT_FALSE(peft::name_matches_targets(list, "encoder.block.0.layer.0.SelfAttention.qq", {}));  // dotted suffix only
  EXPECT_FALSE(peft::name_matches_targets(list, "encoder.block.0.layer.1.EncDecAttention.v", {}));
  auto regex = cfg(R"({"peft_type": "LORA", "target_modules": "decoder\\..*\\.q"})");
  EXPECT_TRUE(peft::name_matches_targets(regex, q1, {}));
  EXPECT_FALSE(peft::name_matches_targets(regex, q0, {}));
  auto partial = cfg(R"({"peft_type": "LORA", "target_modules": "SelfAttention\\.q"})");
  EXPECT_FALSE(peft::name_matches_targets(partial, q0, {}));  // must match the full name
  auto excl = cfg(R"({"peft_type": "LORA", "target_modules": ["q"], "exclude_modules": ["encoder.block.0.layer.0.SelfAttention.q"]})");
  EXPECT_FALSE(peft::name_matches_targets(excl, q0, {}));
  EXPECT_TRUE(peft::name_matches_targets(excl, q1, {}));
  auto excl_re = cfg(R"({"peft_type": "LORA", "target_modules": ["q"], "exclude_modules": "encoder\\..*"})");
  EXPECT_FALSE(peft::name_matches_targets(excl_re, q0, {}));
  EXPECT_TRUE(peft::name_matches_targets(excl_re, q1, {}));
  auto layers = cfg(R"({"peft_type": "LORA", "target_modules": ["q"], "layers_to_transform": [1]})");
  EXPECT_FALSE(peft::name_matches_targets(layers, q0, {}));  // block 0 (the first ".block.<n>." segment)
  EXPECT_TRUE(peft::name_matches_targets(layers, q1, {}));
  auto pattern = cfg(R"({"peft_type": "LORA", "target_modules": ["q"], "layers_to_transform": [0], "layers_pattern": ["layer"]})");
  EXPECT_TRUE(peft::name_matches_targets(pattern, q1, {}));  // ".layer.0." is the index now
  EXPECT_FALSE(peft::name_matches_targets(pattern, "model.q", {}));  // no layer index: not targeted
  auto saved = cfg(R"({"peft_type": "LORA", "target_modules": ["dense"], "modules_to_save": ["pooler"]})");
  EXPECT_FALSE(peft::name_matches_targets(saved, "pooler.dense", {}));
  EXPECT_TRUE(peft::name_matches_targets(saved, "encoder.layer.0.output.dense", {}));
  auto defaults = cfg(R"({"peft_type": "LORA"})");
  EXPECT_TRUE(peft::name_matches_targets(defaults, q0, {"q", "v"}));
  EXPECT_FALSE(peft::name_matches_targets(defaults, "x.adapters.default.q", {"q"}));  // never inside PEFT modules
}

int64_t count_lora_layers(Module& m) {
  int64_t n = 0;
  for (auto& [path, l] : peft::linear_sites(m)) n += int64_t(l->adapters.size());
  return n;
}

TEST(PeftMatching, DefaultTargetsPerBackbone) {
  test::TinyModel t5("t5"), bart("bart"), gpt2("gpt2"), vit("vit");
  EXPECT_EQ(peft::backbone_kind(t5.module()), "t5");
  EXPECT_EQ(peft::backbone_kind(bart.module()), "bart");
  EXPECT_EQ(peft::backbone_kind(gpt2.module()), "gpt2");
  EXPECT_EQ(peft::backbone_kind(vit.module()), "vit");
  auto lora = parse_peft_config(json::parse(R"({"peft_type": "LORA", "r": 2})"));
  peft::add_adapter(t5.module(), lora);
  EXPECT_EQ(count_lora_layers(t5.module()), 12);  // q, v in enc self, dec self and dec cross attention, 2 layers
  peft::add_adapter(bart.module(), lora);
  EXPECT_EQ(count_lora_layers(bart.module()), 12);
  peft::add_adapter(gpt2.module(), lora);
  EXPECT_EQ(count_lora_layers(gpt2.module()), 2);  // c_attn
  auto err = error_of([&] { peft::add_adapter(vit.module(), lora); });
  EXPECT_NE(err.find("target_modules"), std::string::npos) << err;
  auto all = parse_peft_config(json::parse(R"({"peft_type": "LORA", "r": 2, "target_modules": "all-linear"})"));
  test::TinyModel g2("gpt2");
  peft::add_adapter(g2.module(), all);
  EXPECT_EQ(count_lora_layers(g2.module()), 8);
  test::TinyModel v2("vit");
  peft::add_adapter(v2.module(), all);
  for (auto& [path, l] : peft::linear_sites(v2.module()))
    EXPECT_EQ(l->adapters.empty(), path == "classifier") << path;  // the head is left out
}

TEST(PeftMatching, NothingMatchedIsAnErrorNamingTheTargets) {
  test::TinyModel gpt2("gpt2");
  auto c = parse_peft_config(json::parse(R"({"peft_type": "LORA", "target_modules": ["q_proj"]})"), "my.json");
  auto err = error_of([&] { peft::add_adapter(gpt2.module(), c); });
  EXPECT_NE(err.find("my.json"), std::string::npos) << err;
  EXPECT_NE(err.find("q_proj"), std::string::npos) << err;
  auto bad = parse_peft_config(json::parse(R"({"peft_type": "LORA", "target_modules": "c_attn("})"), "re.json");
  err = error_of([&] { peft::add_adapter(gpt2.module(), bad); });
  EXPECT_NE(err.find("'target_modules' is not a valid regex"), std::string::npos) << err;
}

TEST(PeftMatching, RankAndAlphaPatterns) {
  test::TinyModel gpt2("gpt2");
  auto c = parse_peft_config(json::parse(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
      "target_modules": ["c_attn", "c_fc"], "rank_pattern": {"h.1.attn.c_attn": 2}, "alpha_pattern": {"c_fc": 2}})"));
  peft::add_adapter(gpt2.module(), c);
  auto* a0 = dynamic_cast<Linear*>(gpt2.module().find_module("transformer.h.0.attn.c_attn"));
  auto* a1 = dynamic_cast<Linear*>(gpt2.module().find_module("transformer.h.1.attn.c_attn"));
  auto* f0 = dynamic_cast<Linear*>(gpt2.module().find_module("transformer.h.0.mlp.c_fc"));
  auto lora = [](Linear* l) { return dynamic_cast<peft::LoraLayer*>(l->adapters.at(0).second.get()); };
  EXPECT_EQ(lora(a0)->r, 4);
  EXPECT_EQ(lora(a1)->r, 2);
  EXPECT_EQ(lora(a1)->lora_A.shape(), (Shape{2, 24}));
  EXPECT_EQ(lora(a1)->lora_B.shape(), (Shape{72, 2}));  // linear orientation on a Conv1D
  EXPECT_DOUBLE_EQ(lora(a1)->scaling, 8.0 / 2);
  EXPECT_DOUBLE_EQ(lora(f0)->scaling, 2.0 / 4);
  auto rs = parse_peft_config(json::parse(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 6, "use_rslora": true,
      "target_modules": ["c_attn"]})"));
  test::TinyModel g2("gpt2");
  peft::add_adapter(g2.module(), rs);
  auto* l = dynamic_cast<Linear*>(g2.module().find_module("transformer.h.0.attn.c_attn"));
  EXPECT_DOUBLE_EQ(lora(l)->scaling, 6.0 / 2.0);
}

}  // namespace
}  // namespace vlp
