// VL-Adapter prompt tuning (peft_type VLPEFT_PROMPT, models/peft/vl_prompt.h; spec/peft.md §2.9):
// P = W2 tanh(W1 E + c1) + c2 checked against a plain double-precision computation from the module's tensors;
// the prompts enter the encoder input site in front of the tokens (mask extended); gradients reach E and the
// MLP; sharing "multiple" picks the batch's task; files round-trip with the documented keys; the recipe's
// trainable count is 40 d + (d 800 + 800) + (800 d + d) per task.
#include <cmath>
#include <filesystem>

#include "models/peft/recipes.h"
#include "models/peft/vl_prompt.h"

#include "tests/peft/peft_fixture.h"

namespace vlp {
namespace {

using test::close_to_scale;

peft::VlPromptAdapter* vl_prompt_of(Module& model, const std::string& adapter = "default") {
  for (auto& [name, site] : peft::input_sites(model))
    for (auto& [a, m] : site->adapters)
      if (a == adapter) return dynamic_cast<peft::VlPromptAdapter*>(m.get());
  return nullptr;
}

// P[i] = W2 tanh(W1 E[i] + c1) + c2, in doubles from the module's tensors.
std::vector<double> reference_prompts(const peft::PromptEncoder& enc) {
  const auto E = to_vector(enc.embedding.weight), W1 = to_vector(enc.layers[0]->weight),
             c1 = to_vector(enc.layers[0]->bias), W2 = to_vector(enc.layers[1]->weight),
             c2 = to_vector(enc.layers[1]->bias);
  const int64_t n = enc.embedding.weight.size(0), d = enc.embedding.weight.size(1), h = int64_t(c1.size());
  std::vector<double> P(size_t(n * d));
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> z(static_cast<size_t>(h));
    for (int64_t k = 0; k < h; ++k) {
      double s = c1[size_t(k)];
      for (int64_t j = 0; j < d; ++j) s += W1[size_t(k * d + j)] * E[size_t(i * d + j)];
      z[size_t(k)] = std::tanh(s);
    }
    for (int64_t o = 0; o < d; ++o) {
      double s = c2[size_t(o)];
      for (int64_t k = 0; k < h; ++k) s += W2[size_t(o * h + k)] * z[size_t(k)];
      P[size_t(i * d + o)] = s;
    }
  }
  return P;
}

void expect_near_all(const std::vector<double>& a, const std::vector<double>& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tol * (1.0 + std::abs(b[i]))) << "element " << i;
}

TEST(VlPrompt, MlpMatchesDirectComputationAndPromptsLeadTheEncoderInput) {
  test::TinyModel m("bart");
  nlohmann::json j = {{"peft_type", "VLPEFT_PROMPT"}, {"num_virtual_tokens", 3}, {"prompt_hidden_dim", 5}};
  peft::add_adapter(m.module(), peft::parse_peft_config(j), "default", 9);
  peft::VlPromptAdapter* a = vl_prompt_of(m.module());
  ASSERT_TRUE(a);
  ASSERT_EQ(a->encoders.size(), 1u);
  const peft::PromptEncoder& enc = *a->encoders[0];
  ASSERT_EQ(enc.layers.size(), 2u);
  EXPECT_EQ(enc.embedding.weight.shape(), (Shape{3, 24}));
  EXPECT_EQ(enc.layers[0]->weight.shape(), (Shape{5, 24}));
  EXPECT_EQ(enc.layers[1]->weight.shape(), (Shape{24, 5}));
  Tensor P = a->prompts(ForwardContext{});
  EXPECT_EQ(P.shape(), (Shape{3, 24}));
  expect_near_all(to_vector(P), reference_prompts(enc), 1e-5);

  // The input site: [P; embeds], mask with three leading ones.
  auto [site_name, site] = peft::prompt_input_site(m.module(), "bart");
  EXPECT_EQ(site_name, "model.encoder.input_site");
  Generator g(3);
  Tensor embeds = randn({2, 4, 24}, &g);
  Tensor mask = from_data<int64_t>({1, 1, 1, 0, 1, 1, 1, 1}, {2, 4});
  Tensor out = site->forward(embeds, mask, ForwardContext{});
  EXPECT_EQ(out.shape(), (Shape{2, 7, 24}));
  EXPECT_EQ(to_vector(mask), (std::vector<double>{1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1}));
  for (int64_t b = 0; b < 2; ++b) {
    EXPECT_TRUE(close_to_scale(select(narrow(out, 1, 0, 3), 0, b), P, 0));
    EXPECT_TRUE(close_to_scale(select(narrow(out, 1, 3, 4), 0, b), select(embeds, 0, b), 0));
  }

  // Gradients of the model loss reach E and both layers, and nothing frozen.
  auto o = m.forward();
  backward(o.loss);
  EXPECT_TRUE(test::grads_exactly_on_trainable(m.module()));
  size_t trainable = 0;
  for (auto& [name, p] : m.module().named_parameters())
    if (p.requires_grad()) {
      ++trainable;
      EXPECT_EQ(name.rfind("peft_shared.default.", 0), 0u) << name;
      EXPECT_GT(to_vector(sum(abs(p.grad()))).at(0), 0.0) << name;
    }
  EXPECT_EQ(trainable, 5u);  // E, W1, c1, W2, c2
}

TEST(VlPrompt, MultipleSharingPicksTheTaskAndFilesRoundTrip) {
  test::TinyModel m("t5");
  Tensor base = m.logits();
  nlohmann::json j = {{"peft_type", "VLPEFT_PROMPT"}, {"num_virtual_tokens", 2}, {"prompt_hidden_dim", 6},
                      {"sharing", "multiple"}, {"tasks", {"vqa", "gqa"}}};
  peft::PeftConfig config = peft::parse_peft_config(j);
  peft::add_adapter(m.module(), config, "default", 4);
  peft::VlPromptAdapter* a = vl_prompt_of(m.module());
  ASSERT_TRUE(a);
  ASSERT_EQ(a->encoders.size(), 2u);
  ForwardContext t0, t1, bad;
  t1.task = 1;
  bad.task = 2;
  expect_near_all(to_vector(a->prompts(t0)), reference_prompts(*a->encoders[0]), 1e-5);
  expect_near_all(to_vector(a->prompts(t1)), reference_prompts(*a->encoders[1]), 1e-5);
  EXPECT_FALSE(close_to_scale(a->prompts(t0), a->prompts(t1), 1e-3));
  EXPECT_THROW(m.forward(bad), Error);
  Tensor logits0 = m.forward(t0).logits.detach(), logits1 = m.forward(t1).logits.detach();
  EXPECT_FALSE(close_to_scale(logits0, logits1, 1e-4));

  const auto dir = std::filesystem::path(VLP_BINARY_DIR) / "peft_prompts_written" / "vl_prompt_multiple";
  std::filesystem::remove_all(dir);
  peft::save_adapter(m.module(), config, "default", dir.string());
  auto file = test::read_tensors((dir / "adapter_model.safetensors").string());
  std::set<std::string> keys;
  for (auto& [k, t] : file) keys.insert(k);
  std::set<std::string> expect;
  for (const std::string task : {"vqa", "gqa"})
    for (const std::string p : {"embedding.weight", "transform.0.weight", "transform.0.bias", "transform.2.weight",
                                "transform.2.bias"})
      expect.insert("prompt_encoder." + task + "." + p);
  EXPECT_EQ(keys, expect);
  auto saved = nlohmann::json::parse(test::read_text((dir / "adapter_config.json").string()));
  EXPECT_EQ(saved.at("peft_type"), "VLPEFT_PROMPT");

  test::TinyModel again("t5");
  peft::load_adapter(again.module(), dir.string());
  EXPECT_TRUE(close_to_scale(again.forward(t0).logits, logits0, 0));
  EXPECT_TRUE(close_to_scale(again.forward(t1).logits, logits1, 0));
  peft::set_active_adapters(again.module(), {});
  EXPECT_TRUE(close_to_scale(again.logits(), base, 0));
}

TEST(VlPrompt, RecipeParameterCount) {
  // prompt_single / prompt_multiple: 40 prompts, MLP d -> 800 -> d, one per task for multiple.
  for (const std::string kind : {"t5", "bart"}) {
    for (const std::string recipe : {"prompt_single", "prompt_multiple"}) {
      SCOPED_TRACE(kind + " " + recipe);
      test::TinyModel m(kind);
      const int64_t d = 24, per_task = 40 * d + (d * 800 + 800) + (800 * d + d);
      peft::add_adapter(m.module(), peft::vl_adapter_recipe(recipe, kind, {"vqa", "gqa", "nlvr", "caption"}).config);
      EXPECT_EQ(peft::count_parameters(m.module()).trainable, (recipe == "prompt_single" ? 1 : 4) * per_task);
      // The 40 prompts lead the encoder input.
      EXPECT_EQ(vl_prompt_of(m.module())->prompts(ForwardContext{}).shape(), (Shape{40, d}));
    }
  }
}

TEST(VlPrompt, ConfigErrorsNameTheField) {
  test::TinyModel m("t5");
  nlohmann::json j = {{"peft_type", "VLPEFT_PROMPT"}, {"sharing", "half_shared"}};
  EXPECT_THROW(peft::add_adapter(m.module(), peft::parse_peft_config(j)), Error);
  j = {{"peft_type", "VLPEFT_PROMPT"}, {"sharing", "multiple"}};  // no tasks
  EXPECT_THROW(peft::add_adapter(m.module(), peft::parse_peft_config(j)), Error);
  j = {{"peft_type", "VLPEFT_PROMPT"}, {"prompt_hidden_dim", 0}};
  EXPECT_THROW(peft::add_adapter(m.module(), peft::parse_peft_config(j)), Error);
}

}  // namespace
}  // namespace vlp
