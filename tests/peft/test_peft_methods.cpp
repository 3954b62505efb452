// PEFT behaviour without a reference: no-op initialisations leave outputs bit-identical; PiSSA / OLoRA
// rewrite the base so outputs stay equal; exactly the trainable set gets gradients; several adapters (activate,
// disable, delete, merge LIFO); mixed-adapter batches; weighted combination (linear, cat, svd); LN tuning;
// BitFit; file errors (legacy .bin, shape mismatches) name the file and tensor; short training runs lower the
// loss; the float64 decompositions.
#include <filesystem>
#include <fstream>

#include "autograd/optim.h"
#include "models/peft/ia3.h"
#include "models/peft/ln_tuning.h"
#include "models/peft/lora.h"
#include "tests/peft/peft_fixture.h"
#include "common/test_util.h"

namespace vlp {
namespace {

using nlohmann::json;

peft::PeftConfig cfg(const std::string& text) { return peft::parse_peft_config(json::parse(text)); }

using ::vlp::test::error_of;

// A small model with a Linear, a LayerNorm and a Conv1D-layout Linear.
struct TinyMlp : Module {
  Linear fc1{6, 8};
  LayerNorm ln{8};
  Linear fc2{8, 5, true, true};
  TinyMlp() {
    register_module("fc1", &fc1);
    register_module("ln", &ln);
    register_module("fc2", &fc2);
  }
  Tensor forward(const Tensor& x, const ForwardContext& ctx = {}) const {
    return fc2.forward(tanh(ln.forward(fc1.forward(x, ctx))), ctx);
  }
};

Tensor tiny_input(int64_t rows = 3) { return test::rand_input({rows, 4, 6}, 7, DType::F32, false); }

struct NoOpCase {
  std::string model, config;
};
std::ostream& operator<<(std::ostream& os, const NoOpCase& c) { return os << c.model << " " << c.config; }

class NoOpInit : public ::testing::TestWithParam<NoOpCase> {};

TEST_P(NoOpInit, OutputsBitIdenticalAtStepZero) {
  test::TinyModel m(GetParam().model);
  Tensor base = m.logits();
  peft::add_adapter(m.module(), cfg(GetParam().config), "default", 3);
  EXPECT_TRUE(test::all_close(m.logits(), base, 0, 0));
}

INSTANTIATE_TEST_SUITE_P(
    Methods, NoOpInit,
    ::testing::Values(NoOpCase{"gpt2", R"({"peft_type": "LORA", "r": 4})"},
                      NoOpCase{"t5", R"({"peft_type": "LORA", "r": 4, "init_lora_weights": "gaussian"})"},
                      NoOpCase{"bart", R"({"peft_type": "LORA", "r": 2, "use_rslora": true, "lora_bias": true})"},
                      NoOpCase{"bart", R"({"peft_type": "LORA", "r": 2, "use_dora": true})"},
                      NoOpCase{"gpt2", R"({"peft_type": "LORA", "r": 2, "use_dora": true, "target_modules": ["c_attn", "c_proj"]})"},
                      NoOpCase{"vit", R"({"peft_type": "LORA", "r": 2, "target_modules": ["query", "value"], "modules_to_save": ["classifier"]})"},
                      NoOpCase{"gpt2", R"({"peft_type": "IA3"})"}, NoOpCase{"t5", R"({"peft_type": "IA3"})"},
                      NoOpCase{"bart", R"({"peft_type": "IA3"})"}, NoOpCase{"gpt2", R"({"peft_type": "LN_TUNING"})"},
                      NoOpCase{"t5", R"({"peft_type": "LN_TUNING"})"},
                      NoOpCase{"bart", R"({"peft_type": "VLPEFT_BITFIT"})"}),
    [](const auto& info) { return std::to_string(info.index) + "_" + info.param.model; });

TEST(Lora, PissaAndOloraRewriteTheBaseWithoutChangingOutputs) {
  for (const char* init : {"pissa", "olora"}) {
    test::TinyModel m("bart");
    Tensor base = m.logits();
    peft::add_adapter(m.module(),
                      cfg(std::string(R"({"peft_type": "LORA", "r": 3, "lora_alpha": 6, "init_lora_weights": ")") + init + "\"}"));
    EXPECT_TRUE(test::close_to_scale(m.logits(), base, 1e-5)) << init;
    auto* l = dynamic_cast<Linear*>(m.module().find_module("model.encoder.layers.0.self_attn.q_proj"));
    auto* a = dynamic_cast<peft::LoraLayer*>(l->adapters.at(0).second.get());
    double norm_b = 0;
    for (double v : to_vector(a->lora_B)) norm_b += v * v;
    EXPECT_GT(norm_b, 1e-3) << init;  // B is not zero: the principal part moved into the adapter
  }
}

TEST(Lora, PissaSavesAsPlainLoraOrReappliesOnLoad) {
  test::TinyModel m("bart");
  peft::add_adapter(m.module(), cfg(R"({"peft_type": "LORA", "r": 3, "lora_alpha": 6, "init_lora_weights": "pissa"})"));
  std::vector<Tensor> trainable;
  for (auto& [n, p] : m.module().named_parameters())
    if (p.requires_grad()) trainable.push_back(p);
  Optimizer opt = make_adamw(trainable, 1e-2, 0.0);
  backward(m.forward().loss);
  step(opt);
  Tensor trained = m.logits();
  auto dir = test::temp_dir("pissa");
  peft::save_adapter_as_plain_lora(m.module(), "default", (dir / "plain").string());
  peft::save_adapter(m.module(), peft::adapter_config(m.module(), "default"), "default", (dir / "pissa").string());
  auto plain_cfg = json::parse(test::read_text((dir / "plain" / "adapter_config.json").string()));
  EXPECT_EQ(plain_cfg["r"], 6);
  EXPECT_EQ(plain_cfg["lora_alpha"], 12);
  EXPECT_EQ(plain_cfg["init_lora_weights"], true);
  test::TinyModel a("bart"), b("bart");
  peft::load_adapter(a.module(), (dir / "plain").string());  // onto the original base, no rewrite
  EXPECT_TRUE(test::close_to_scale(a.logits(), trained, 1e-5));
  peft::load_adapter(b.module(), (dir / "pissa").string());  // the base rewrite runs again, as in PEFT
  EXPECT_TRUE(test::close_to_scale(b.logits(), trained, 1e-5));
  std::filesystem::remove_all(dir);
}

TEST(Lora, TrainableSetAndGradients) {
  test::TinyModel m("vit");
  peft::add_adapter(m.module(), cfg(R"({"peft_type": "LORA", "r": 2, "target_modules": ["query", "attention.output.dense"],
                                      "modules_to_save": ["classifier"], "bias": "lora_only", "init_lora_weights": false})"));
  backward(m.forward().loss);
  EXPECT_TRUE(test::grads_exactly_on_trainable(m.module()));
  int64_t expected = 0;
  for (auto& [k, t] : peft::adapter_state_dict(m.module(), "default")) {
    expected += t.numel();
    EXPECT_TRUE(t.requires_grad()) << k;
    EXPECT_TRUE(t.grad().defined()) << k;
  }
  auto report = peft::count_parameters(m.module());
  EXPECT_EQ(report.trainable, expected);
  EXPECT_EQ(report.total, m.module().num_parameters());
  EXPECT_NE(report.to_string().find("trainable params: " + std::to_string(expected)), std::string::npos);
  auto sd = peft::adapter_state_dict(m.module(), "default");
  auto has = [&](const std::string& k) {
    return std::any_of(sd.begin(), sd.end(), [&](auto& e) { return e.first == k; });
  };
  EXPECT_TRUE(has("base_model.model.classifier.weight"));
  EXPECT_TRUE(has("base_model.model.vit.encoder.layer.0.attention.attention.query.lora_A.weight"));
  EXPECT_TRUE(has("base_model.model.vit.encoder.layer.0.attention.output.dense.base_layer.bias"));
  EXPECT_FALSE(has("base_model.model.vit.encoder.layer.0.output.dense.bias"));  // not a targeted layer
  EXPECT_FALSE(has("base_model.model.vit.encoder.layer.0.output.dense.base_layer.bias"));
}

// Several named adapters on one small model.
struct Adapters : ::testing::Test {
  TinyMlp mlp;
  Tensor x = tiny_input();
  peft::PeftConfig lora = cfg(R"({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["fc1", "fc2"],
                                  "init_lora_weights": false})");
  Tensor out(const ForwardContext& ctx = {}) {
    NoGradGuard g;
    return mlp.forward(x, ctx);
  }
};

TEST_F(Adapters, ActivateDisableDeleteAndMergeLifo) {
  Tensor base = out();
  peft::add_adapter(mlp, lora, "a", 1);
  Tensor only_a = out();
  EXPECT_FALSE(test::all_close(only_a, base, 0, 1e-4));
  peft::add_adapter(mlp, lora, "b", 2);  // added inactive
  EXPECT_TRUE(test::all_close(out(), only_a, 0, 0));
  EXPECT_EQ(peft::active_adapters(mlp), (std::vector<std::string>{"a"}));
  peft::set_active_adapters(mlp, {"b"});
  Tensor only_b = out();
  peft::set_active_adapters(mlp, {"a", "b"});
  Tensor both = out();
  // On fc1 alone the deltas add.
  {
    NoGradGuard g;
    auto* la = dynamic_cast<peft::LoraLayer*>(mlp.fc1.adapters[0].second.get());
    auto* lb = dynamic_cast<peft::LoraLayer*>(mlp.fc1.adapters[1].second.get());
    Tensor expect = add(add(mlp.fc1.base_forward(x), linear(x, la->delta_weight())), linear(x, lb->delta_weight()));
    EXPECT_TRUE(test::all_close(mlp.fc1.forward(x), expect, 1e-5, 1e-6));
  }
  Tensor w1 = contiguous(mlp.fc1.weight), w2 = contiguous(mlp.fc2.weight);
  peft::merge_adapters(mlp, {"a", "b"});
  EXPECT_TRUE(test::close_to_scale(out(), both, 1e-5));
  peft::unmerge_adapters(mlp);
  EXPECT_TRUE(test::all_close(mlp.fc1.weight, w1, 0, 1e-6));
  EXPECT_TRUE(test::all_close(mlp.fc2.weight, w2, 0, 1e-6));
  EXPECT_TRUE(test::close_to_scale(out(), both, 1e-5));
  // (The base weights went through merge / unmerge: equal up to rounding from here on.)
  peft::set_active_adapters(mlp, {});
  EXPECT_TRUE(test::close_to_scale(out(), base, 1e-6));
  peft::set_active_adapters(mlp, {"b"});
  EXPECT_TRUE(test::close_to_scale(out(), only_b, 1e-6));
  peft::delete_adapter(mlp, "b");
  EXPECT_EQ(peft::adapter_names(mlp), (std::vector<std::string>{"a"}));
  for (auto& [n, p] : mlp.named_parameters()) EXPECT_EQ(n.find("adapters.b"), std::string::npos) << n;
  EXPECT_NE(error_of([&] { peft::set_active_adapters(mlp, {"b"}); }).find("'b'"), std::string::npos);
  peft::set_active_adapters(mlp, {"a"});
  EXPECT_TRUE(test::close_to_scale(out(), only_a, 1e-6));
  peft::merge_and_unload(mlp);
  EXPECT_TRUE(test::close_to_scale(out(), only_a, 1e-5));
  EXPECT_TRUE(mlp.fc1.adapters.empty());
  EXPECT_EQ(mlp.num_parameters(), 6 * 8 + 8 + 16 + 8 * 5 + 5);
}

TEST_F(Adapters, MixedAdapterBatch) {
  peft::add_adapter(mlp, lora, "a", 1);
  peft::add_adapter(mlp, lora, "b", 2);
  Tensor base = out();
  Tensor only_a = out();
  peft::set_active_adapters(mlp, {"b"});
  Tensor only_b = out();
  peft::set_active_adapters(mlp, {});
  base = out();
  peft::set_active_adapters(mlp, {"a", "b"});
  ForwardContext ctx;
  ctx.sample_adapters = {"a", "", "b"};
  Tensor mixed = out(ctx);
  EXPECT_TRUE(test::all_close(select(mixed, 0, 0), select(only_a, 0, 0), 0, 0));
  EXPECT_TRUE(test::all_close(select(mixed, 0, 1), select(base, 0, 1), 0, 0));
  EXPECT_TRUE(test::all_close(select(mixed, 0, 2), select(only_b, 0, 2), 0, 0));
  ctx.sample_adapters = {"a"};
  EXPECT_NE(error_of([&] { out(ctx); }).find("sample_adapters"), std::string::npos);
}

TEST_F(Adapters, WeightedCombination) {
  auto r3 = cfg(R"({"peft_type": "LORA", "r": 3, "lora_alpha": 5, "target_modules": ["fc1", "fc2"], "init_lora_weights": false})");
  peft::add_adapter(mlp, lora, "a", 1);
  peft::add_adapter(mlp, r3, "b", 2);
  peft::add_adapter(mlp, lora, "c", 3);
  auto lora_of = [&](Linear& l, const std::string& n) {
    for (auto& [an, a] : l.adapters)
      if (an == n) return dynamic_cast<peft::LoraLayer*>(a.get());
    return static_cast<peft::LoraLayer*>(nullptr);
  };
  NoGradGuard g;
  for (Linear* l : {&mlp.fc1, &mlp.fc2}) (void)l;
  // cat: exact, ΔW = Σ w_i ΔW_i, rank 5.
  peft::add_weighted_adapter(mlp, {"a", "b"}, {0.7, -1.3}, "cat", "cat");
  for (Linear* l : {&mlp.fc1, &mlp.fc2}) {
    Tensor expect = add(mul(lora_of(*l, "a")->delta_weight(), 0.7), mul(lora_of(*l, "b")->delta_weight(), -1.3));
    EXPECT_EQ(lora_of(*l, "cat")->r, 5);
    EXPECT_TRUE(test::all_close(lora_of(*l, "cat")->delta_weight(), expect, 1e-5, 1e-6));
  }
  // svd at full rank: exact up to rounding.
  peft::add_weighted_adapter(mlp, {"a", "b"}, {0.7, -1.3}, "svd", "svd", 5);
  for (Linear* l : {&mlp.fc1, &mlp.fc2}) {
    Tensor expect = add(mul(lora_of(*l, "a")->delta_weight(), 0.7), mul(lora_of(*l, "b")->delta_weight(), -1.3));
    EXPECT_TRUE(test::all_close(lora_of(*l, "svd")->delta_weight(), expect, 1e-4, 1e-5));
  }
  // linear (equal ranks): A = Σ sign √|w s| A_i, B = Σ √|w s| B_i, scale 1.
  peft::add_weighted_adapter(mlp, {"a", "c"}, {0.5, -2.0}, "lin", "linear");
  auto* a = lora_of(mlp.fc1, "a");
  auto* c = lora_of(mlp.fc1, "c");
  auto* lin = lora_of(mlp.fc1, "lin");
  double ws_a = 0.5 * a->scaling, ws_c = -2.0 * c->scaling;
  Tensor A = add(mul(a->lora_A, std::sqrt(ws_a)), mul(c->lora_A, -std::sqrt(-ws_c)));
  Tensor B = add(mul(a->lora_B, std::sqrt(ws_a)), mul(c->lora_B, std::sqrt(-ws_c)));
  EXPECT_TRUE(test::all_close(lin->lora_A, A, 1e-6, 1e-7));
  EXPECT_TRUE(test::all_close(lin->lora_B, B, 1e-6, 1e-7));
  EXPECT_DOUBLE_EQ(lin->scaling, 1.0);
  EXPECT_NE(error_of([&] { peft::add_weighted_adapter(mlp, {"a", "b"}, {1, 1}, "x", "linear"); }).find("equal ranks"),
            std::string::npos);
}

TEST_F(Adapters, DropoutOnlyInTraining) {
  auto c = cfg(R"({"peft_type": "LORA", "r": 2, "lora_dropout": 0.5, "target_modules": ["fc1"], "init_lora_weights": false})");
  peft::add_adapter(mlp, c);
  Tensor eval1 = out(), eval2 = out();
  EXPECT_TRUE(test::all_close(eval1, eval2, 0, 0));
  Generator gen(5);
  ForwardContext train;
  train.training = true;
  train.generator = &gen;
  EXPECT_FALSE(test::all_close(out(train), eval1, 0, 1e-4));
}

TEST_F(Adapters, Ia3ScalesAndMultiplies) {
  auto c = cfg(R"({"peft_type": "IA3", "target_modules": ["fc1", "fc2"], "feedforward_modules": ["fc2"], "init_ia3_weights": false})");
  peft::add_adapter(mlp, c, "a", 1);
  auto* a1 = dynamic_cast<peft::Ia3Layer*>(mlp.fc1.adapters[0].second.get());
  auto* a2 = dynamic_cast<peft::Ia3Layer*>(mlp.fc2.adapters[0].second.get());
  EXPECT_FALSE(a1->feedforward);
  EXPECT_TRUE(a2->feedforward);
  EXPECT_EQ(a1->ia3_l.shape(), (Shape{8, 1}));
  EXPECT_EQ(a2->ia3_l.shape(), (Shape{1, 8}));
  NoGradGuard g;
  Tensor h = tiny_input(2);
  h = narrow(concat({h, h}, 2), 2, 0, 8);
  EXPECT_TRUE(test::all_close(mlp.fc1.forward(x), mul(mlp.fc1.base_forward(x), reshape(a1->ia3_l, {-1})), 1e-6, 1e-7));
  EXPECT_TRUE(test::all_close(mlp.fc2.forward(h), mlp.fc2.base_forward(mul(h, reshape(a2->ia3_l, {-1}))), 1e-6, 1e-7));
  peft::add_adapter(mlp, c, "b", 2);
  peft::set_active_adapters(mlp, {"a", "b"});
  auto* b2 = dynamic_cast<peft::Ia3Layer*>(mlp.fc2.adapters[1].second.get());
  Tensor both = mlp.fc2.base_forward(mul(mul(h, reshape(a2->ia3_l, {-1})), reshape(b2->ia3_l, {-1})));
  EXPECT_TRUE(test::all_close(mlp.fc2.forward(h), both, 1e-5, 1e-6));
  Tensor before = out();
  peft::merge_adapters(mlp, {"a", "b"});
  EXPECT_TRUE(test::close_to_scale(out(), before, 1e-5));
  peft::unmerge_adapters(mlp);
  EXPECT_TRUE(test::close_to_scale(out(), before, 1e-5));
}

TEST(LnTuning, CopiesTrainedSavedAndMerged) {
  test::TinyModel m("gpt2");
  Tensor base_ln = contiguous(dynamic_cast<LayerNorm*>(m.module().find_module("transformer.h.0.ln_1"))->weight);
  peft::add_adapter(m.module(), cfg(R"({"peft_type": "LN_TUNING"})"));
  auto adapters = peft::ln_tuning_adapters(m.module(), "default");
  EXPECT_EQ(adapters.size(), 5u);  // ln_1, ln_2 per layer + ln_f
  backward(m.forward().loss);
  EXPECT_TRUE(test::grads_exactly_on_trainable(m.module()));
  auto sd = peft::adapter_state_dict(m.module(), "default");
  EXPECT_EQ(sd.size(), 10u);
  EXPECT_EQ(sd[0].first, "base_model.model.transformer.h.0.ln_1.ln_tuning_layers.weight");
  int64_t trainable = 0;
  for (auto& [n, p] : m.module().named_parameters()) trainable += p.requires_grad() ? p.numel() : 0;
  EXPECT_EQ(trainable, 10 * 24);
  // Changing the copy changes the output; disabling restores the original norm.
  Tensor base = [&] {
    peft::set_active_adapters(m.module(), {});
    return m.logits();
  }();
  auto* ln1 = dynamic_cast<LayerNorm*>(m.module().find_module("transformer.h.0.ln_1"));
  EXPECT_TRUE(test::all_close(ln1->weight, base_ln, 0, 0));
  peft::set_active_adapters(m.module(), {"default"});
  {
    NoGradGuard g;
    mul_(adapters[0].second->trained_weight(), 1.5);
  }
  Tensor tuned = m.logits();
  EXPECT_FALSE(test::all_close(tuned, base, 0, 1e-4));
  peft::merge_and_unload(m.module());
  EXPECT_TRUE(test::all_close(m.logits(), tuned, 0, 0));
  EXPECT_TRUE(test::all_close(ln1->weight, mul(base_ln, 1.5), 1e-6, 0));
}

TEST(BitFit, TrainsBiasesOnly) {
  test::TinyModel m("gpt2");
  peft::add_adapter(m.module(), cfg(R"({"peft_type": "VLPEFT_BITFIT", "target_modules": ["c_attn", "c_fc"]})"));
  backward(m.forward().loss);
  EXPECT_TRUE(test::grads_exactly_on_trainable(m.module()));
  std::vector<std::string> trained;
  for (auto& [n, p] : m.module().named_parameters())
    if (p.requires_grad()) trained.push_back(n);
  EXPECT_EQ(trained, (std::vector<std::string>{"transformer.h.0.attn.c_attn.bias", "transformer.h.0.mlp.c_fc.bias",
                                               "transformer.h.1.attn.c_attn.bias", "transformer.h.1.mlp.c_fc.bias"}));
  test::TinyModel t5("t5");
  EXPECT_NE(error_of([&] { peft::add_adapter(t5.module(), cfg(R"({"peft_type": "VLPEFT_BITFIT"})")); }).find("no bias"),
            std::string::npos);
  // Saved under the plain bias names.
  auto dir = test::temp_dir("bitfit");
  peft::save_adapter(m.module(), peft::adapter_config(m.module(), "default"), "default", dir.string());
  auto header = read_safetensors_header((dir / "adapter_model.safetensors").string());
  ASSERT_EQ(header.entries.size(), 4u);
  EXPECT_EQ(header.entries[0].name, "base_model.model.transformer.h.0.attn.c_attn.bias");
  std::filesystem::remove_all(dir);
}

TEST(PeftFiles, ErrorsNameTheFileAndTensor) {
  auto dir = test::temp_dir("peft_files");
  // Legacy pickle refused.
  std::filesystem::create_directories(dir / "legacy");
  std::filesystem::copy_file(test::peft_fixture_dir("gpt2_lora") + "/adapter_config.json", dir / "legacy" / "adapter_config.json");
  std::ofstream(dir / "legacy" / "adapter_model.bin") << "pickle";
  test::TinyModel m("gpt2");
  auto err = error_of([&] { peft::load_adapter(m.module(), (dir / "legacy").string()); });
  EXPECT_NE(err.find("adapter_model.bin"), std::string::npos) << err;
  // A config whose rank disagrees with the tensors: every mismatch named.
  std::filesystem::create_directories(dir / "rank");
  auto j = json::parse(test::read_text(test::peft_fixture_dir("gpt2_lora") + "/adapter_config.json"));
  j["r"] = 2;
  std::ofstream(dir / "rank" / "adapter_config.json") << j.dump(2);
  std::filesystem::copy_file(test::peft_fixture_dir("gpt2_lora") + "/adapter_model.safetensors",
                             dir / "rank" / "adapter_model.safetensors");
  err = error_of([&] { peft::load_adapter(m.module(), (dir / "rank").string()); });
  EXPECT_NE(err.find("shape mismatch: base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("transformer.h.1.mlp.c_proj.lora_B.weight"), std::string::npos) << err;
  EXPECT_TRUE(peft::adapter_names(m.module()).empty());  // nothing left attached
  // Targets the model does not have.
  j["r"] = 4;
  j["target_modules"] = {"q_proj"};
  std::ofstream(dir / "rank" / "adapter_config.json", std::ios::trunc) << j.dump(2);
  err = error_of([&] { peft::load_adapter(m.module(), (dir / "rank").string()); });
  EXPECT_NE(err.find("target_modules"), std::string::npos) << err;
  EXPECT_NE(err.find("adapter_config.json"), std::string::npos) << err;
  // Non-default names go to <dir>/<name>.
  peft::load_adapter(m.module(), test::peft_fixture_dir("gpt2_lora"), "other");
  peft::save_adapter(m.module(), peft::adapter_config(m.module(), "other"), "other", (dir / "multi").string());
  EXPECT_TRUE(std::filesystem::exists(dir / "multi" / "other" / "adapter_model.safetensors"));
  std::filesystem::remove_all(dir);
}

// A few optimizer steps on the tiny GPT-2 lower the loss for each method.
class ShortTraining : public ::testing::TestWithParam<std::string> {};

TEST_P(ShortTraining, LowersTheLoss) {
  test::TinyModel m("gpt2");
  peft::add_adapter(m.module(), cfg(GetParam()), "default", 11);
  std::vector<Tensor> trainable;
  for (auto& [n, p] : m.module().named_parameters())
    if (p.requires_grad()) trainable.push_back(p);
  ASSERT_FALSE(trainable.empty());
  Optimizer opt = make_adamw(trainable, 2e-2, 0.0);
  double first = 0, last = 0;
  for (int s = 0; s < 12; ++s) {
    Tensor loss = m.forward().loss;
    (s == 0 ? first : last) = loss.item();
    backward(loss);
    step(opt);
    zero_grad(opt);
  }
  EXPECT_LT(last, first - 0.05) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Methods, ShortTraining,
                         ::testing::Values(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8})",
                                           R"({"peft_type": "LORA", "r": 4, "use_dora": true})",
                                           R"({"peft_type": "IA3"})", R"({"peft_type": "LN_TUNING"})",
                                           R"({"peft_type": "VLPEFT_BITFIT"})"));

TEST(Decompositions, SvdAndQrReconstruct) {
  for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{5, 3}, {3, 5}, {4, 4}}) {
    std::vector<double> a = to_vector(test::rand_input({m, n}, uint64_t(m * 10 + n), DType::F64, false));
    std::vector<double> u, s, vt, q, r;
    peft::svd_thin(a, m, n, u, s, vt);
    const int64_t k = std::min(m, n);
    for (int64_t i = 0; i + 1 < k; ++i) EXPECT_GE(s[size_t(i)], s[size_t(i + 1)]);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double v = 0;
        for (int64_t t = 0; t < k; ++t) v += u[size_t(i * k + t)] * s[size_t(t)] * vt[size_t(t * n + j)];
        EXPECT_NEAR(v, a[size_t(i * n + j)], 1e-10);
      }
    peft::qr_reduced(a, m, n, q, r);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double v = 0;
        for (int64_t t = 0; t < k; ++t) v += q[size_t(i * k + t)] * r[size_t(t * n + j)];
        EXPECT_NEAR(v, a[size_t(i * n + j)], 1e-10);
      }
    for (int64_t x = 0; x < k; ++x)
      for (int64_t y = 0; y < k; ++y) {
        double d = 0;
        for (int64_t i = 0; i < m; ++i) d += q[size_t(i * k + x)] * q[size_t(i * k + y)];
        EXPECT_NEAR(d, x == y ? 1.0 : 0.0, 1e-10);
      }
  }
}

}  // namespace
}  // namespace vlp
