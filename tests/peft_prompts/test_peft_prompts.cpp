// Prompt methods (prompt tuning, prefix tuning with and without projection, P-tuning) against
// huggingface/peft 0.21.2 on the tiny GPT-2, T5 and BART (fixtures of tools/reference/make_peft_prompt_fixtures.py):
// adapters PEFT wrote load here and give its logits and loss (1e-5) and prompt_embeddings gradient (1e-4);
// the training-mode encoder (table + reparameterisation MLP) given PEFT's values gives PEFT's logits and
// gradients for every encoder tensor; files written here have PEFT's keys, shapes and config fields; greedy
// generation with a prefix gives PEFT's tokens; a short training run lowers the loss.
#include <filesystem>
#include <fstream>

#include "autograd/optim.h"
#include "models/generate.h"
#include "models/peft/adaption_prompt.h"
#include "models/peft/prefix_tuning.h"
#include "models/peft/prompt_tuning.h"
#include "models/peft/vpt.h"

#include "tests/peft/peft_fixture.h"

namespace vlp {
namespace {

using test::close_in_norm;
using test::close_to_scale;

std::string prompt_fixture_dir(const std::string& name) {
  return std::string(VLP_SOURCE_DIR) + "/tests/fixtures/peft_prompts/" + name;
}

bool inserts_positions(const std::string& name) { return name.find("prefix") == std::string::npos; }
std::string model_of(const std::string& name) { return name.substr(0, name.find('_')); }

// Logits and loss as PEFT computes them: prompt positions stay in the logits, their labels are -100.
struct Out {
  Tensor logits, loss;
};
// Encoder-decoders: the prompts enter the encoder only, the decoder's logits and labels are unchanged.
Out forward(test::TinyModel& m, int64_t prompt_tokens, const ForwardContext& ctx = {}) {
  if (!m.gpt2) {
    auto o = m.forward(ctx);
    return {o.logits, o.loss};
  }
  GPT2Input in;
  in.input_ids = m.batch.at("input_ids");
  in.attention_mask = m.batch.at("attention_mask");
  auto o = m.gpt2->forward(in, ctx);
  Tensor labels = m.batch.at("labels");
  if (prompt_tokens > 0)
    labels = concat({full({labels.size(0), prompt_tokens}, -100.0, labels.dtype()), labels}, 1);
  return {o.logits, causal_lm_loss(o.logits, labels)};
}

class PromptReference : public ::testing::TestWithParam<std::string> {};

TEST_P(PromptReference, SavedAdapterMatchesPeft) {
  const std::string name = GetParam();
  test::TinyModel m(model_of(name));
  peft::PeftConfig config = peft::load_adapter(m.module(), prompt_fixture_dir(name));
  auto fx = test::read_tensors(prompt_fixture_dir(name) + "/fixture.safetensors");
  const int64_t n = config.get_int("num_virtual_tokens", 0);
  Out out = forward(m, inserts_positions(name) ? n : 0);
  EXPECT_TRUE(close_to_scale(out.logits, fx.at("logits"), 1e-5));
  EXPECT_NEAR(out.loss.item(), fx.at("loss").item(), 1e-5 * std::abs(fx.at("loss").item()));
  backward(out.loss);
  // Exactly the prompt table is trainable.
  for (auto& [pname, p] : m.module().named_parameters())
    EXPECT_EQ(p.requires_grad(), pname == "peft_shared.default.embedding.weight") << pname;
  auto* enc = peft::find_prompt_encoder(m.module(), "default");
  ASSERT_TRUE(enc);
  EXPECT_TRUE(close_in_norm(enc->embedding.weight.grad(), fx.at("grad.prompt_embeddings"), 1e-4, 1e-7));
}

TEST_P(PromptReference, TrainingModeEncoderMatchesPeft) {
  const std::string name = GetParam();
  test::TinyModel m(model_of(name));
  peft::PeftConfig config = peft::load_peft_config(prompt_fixture_dir(name) + "/adapter_config.json");
  config.raw["inference_mode"] = false;
  peft::add_adapter(m.module(), config, "default", 7);
  auto fx = test::read_tensors(prompt_fixture_dir(name) + "/fixture.safetensors");
  auto* enc = peft::find_prompt_encoder(m.module(), "default");
  ASSERT_TRUE(enc);
  const std::string prefix = "peft_shared.default.";
  size_t matched = 0;
  {
    NoGradGuard no_grad;
    for (auto& [pname, p] : enc->named_parameters(prefix.substr(0, prefix.size() - 1))) {
      auto it = fx.find("train." + pname.substr(prefix.size()));
      ASSERT_TRUE(it != fx.end()) << pname << " has no PEFT counterpart";
      ASSERT_EQ(p.shape(), it->second.shape()) << pname;
      copy_(p, it->second);
      ++matched;
    }
  }
  size_t expected = 0;
  for (auto& [k, t] : fx) expected += k.rfind("train.", 0) == 0;
  EXPECT_EQ(matched, expected);
  const int64_t n = config.get_int("num_virtual_tokens", 0);
  Out out = forward(m, inserts_positions(name) ? n : 0);
  EXPECT_TRUE(close_to_scale(out.logits, fx.at("logits"), 1e-5));
  EXPECT_NEAR(out.loss.item(), fx.at("loss").item(), 1e-5 * std::abs(fx.at("loss").item()));
  backward(out.loss);
  for (auto& [pname, p] : enc->named_parameters(prefix.substr(0, prefix.size() - 1)))
    EXPECT_TRUE(close_in_norm(p.grad(), fx.at("grad.train." + pname.substr(prefix.size())), 1e-4, 1e-7)) << pname;
  // Saved as PEFT saves it: one tensor, the encoder output, which equals PEFT's file.
  const auto dir = std::filesystem::path(VLP_BINARY_DIR) / "peft_prompts_written" / name;
  std::filesystem::remove_all(dir);
  peft::save_adapter(m.module(), config, "default", dir.string());
  auto mine = test::read_tensors((dir / "adapter_model.safetensors").string());
  auto theirs = test::read_tensors(prompt_fixture_dir(name) + "/adapter_model.safetensors");
  ASSERT_EQ(mine.size(), 1u);
  ASSERT_EQ(theirs.size(), 1u);
  ASSERT_TRUE(mine.count("prompt_embeddings"));
  EXPECT_TRUE(close_to_scale(mine.at("prompt_embeddings"), theirs.at("prompt_embeddings"), 1e-5));
  nlohmann::json a = nlohmann::json::parse(test::read_text((dir / "adapter_config.json").string()));
  nlohmann::json b = nlohmann::json::parse(test::read_text(prompt_fixture_dir(name) + "/adapter_config.json"));
  a.erase("base_model_name_or_path");
  b.erase("base_model_name_or_path");
  EXPECT_EQ(a, b);
  // And loads back here to the same logits.
  test::TinyModel again(model_of(name));
  peft::load_adapter(again.module(), dir.string());
  EXPECT_TRUE(close_to_scale(forward(again, inserts_positions(name) ? n : 0).logits, out.logits, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(HfPeft, PromptReference,
                         ::testing::Values("gpt2_prompt_tuning", "gpt2_prefix", "gpt2_prefix_projection",
                                           "gpt2_p_tuning", "t5_prompt_tuning", "t5_p_tuning", "t5_prefix",
                                           "t5_prefix_projection", "bart_prefix", "bart_prefix_projection"));

// Encoder-decoders: the decoder's self-attention reads the prefix at every step (positions after it: BART's
// learned ones, T5's relative ones), cross-attention and the encoder do not.
TEST(PrefixTuning, Seq2SeqGreedyGenerationMatchesPeft) {
  for (const std::string name : {"t5_prefix", "t5_prefix_projection", "bart_prefix", "bart_prefix_projection"}) {
    test::TinyModel m(model_of(name));
    peft::load_adapter(m.module(), prompt_fixture_dir(name));
    auto fx = test::read_tensors(prompt_fixture_dir(name) + "/fixture.safetensors");
    EncoderInput in;
    in.input_ids = contiguous(narrow(narrow(m.batch.at("input_ids"), 0, 0, 1), 1, 0, 5));
    in.attention_mask = ones({1, 5}, DType::I64);
    GenerationOptions opt;
    opt.max_new_tokens = 6;
    NoGradGuard no_grad;
    for (bool cache : {true, false}) {
      opt.use_cache = cache;
      auto g = m.t5 ? generate(*m.t5, in, opt) : generate(*m.bart, in, opt);
      EXPECT_EQ(to_vector(g.sequences), to_vector(fx.at("generated"))) << name << " cache " << cache;
    }
  }
}

// Where the prefixes sit on T5 / BART: decoder self-attention only, decoder layer l reading HF's key block
// (4l mod 2L); with L = 2 both layers read blocks 0 and 1, so blocks 2 and 3 of the table never matter.
TEST(PrefixTuning, Seq2SeqPrefixSitesAndUnusedBlocks) {
  for (const std::string kind : {"t5", "bart"}) {
    test::TinyModel m(kind);
    peft::load_adapter(m.module(), prompt_fixture_dir(kind + "_prefix"));
    size_t prefixed = 0;
    for (auto& [name, site] : peft::attention_sites(m.module()))
      if (!site->adapters.empty()) {
        ++prefixed;
        EXPECT_NE(name.find("decoder"), std::string::npos) << name;
        EXPECT_TRUE(name.find("SelfAttention") != std::string::npos || name.find("self_attn") != std::string::npos)
            << name;
      }
    EXPECT_EQ(prefixed, 2u) << kind;
    Tensor before = m.logits();
    auto* enc = peft::find_prompt_encoder(m.module(), "default");
    ASSERT_TRUE(enc);
    {
      NoGradGuard no_grad;
      const int64_t d = 24;  // blocks 2 and 3 of the 4 (L = 2, keys and values), all rows
      Tensor unused = narrow(enc->embedding.weight, 1, 2 * d, 2 * d);
      copy_(unused, full(unused.shape(), 7.0));
    }
    EXPECT_TRUE(close_to_scale(m.logits(), before, 0)) << kind;
    {
      NoGradGuard no_grad;
      Tensor used = narrow(enc->embedding.weight, 1, 0, 2 * 24);
      copy_(used, full(used.shape(), 7.0));
    }
    EXPECT_FALSE(close_to_scale(m.logits(), before, 1e-3)) << kind;
  }
}

TEST(PrefixTuning, GreedyGenerationMatchesPeft) {
  for (const std::string name : {"gpt2_prefix", "gpt2_prefix_projection"}) {
    test::TinyModel m("gpt2");
    peft::load_adapter(m.module(), prompt_fixture_dir(name));
    auto fx = test::read_tensors(prompt_fixture_dir(name) + "/fixture.safetensors");
    Tensor ids = contiguous(narrow(narrow(m.batch.at("input_ids"), 0, 0, 1), 1, 0, 5));
    GenerationOptions opt;
    opt.max_new_tokens = 6;
    opt.pad_token_id = 0;
    NoGradGuard no_grad;
    auto g = generate(*m.gpt2, ids, ones({1, 5}, DType::I64), opt);
    EXPECT_EQ(to_vector(g.sequences), to_vector(fx.at("generated"))) << name;
    opt.use_cache = false;  // the prefix is prepended on every call, with and without a cache
    EXPECT_EQ(to_vector(generate(*m.gpt2, ids, ones({1, 5}, DType::I64), opt).sequences),
              to_vector(fx.at("generated"))) << name;
  }
}

TEST(PromptTuning, InsertsPromptsAndDisablesCleanly) {
  test::TinyModel m("gpt2");
  Tensor base = forward(m, 0).logits;
  peft::load_adapter(m.module(), prompt_fixture_dir("gpt2_prompt_tuning"));
  Tensor adapted = forward(m, 3).logits;
  EXPECT_EQ(adapted.size(1), base.size(1) + 3);
  peft::set_active_adapters(m.module(), {});
  EXPECT_TRUE(close_to_scale(forward(m, 0).logits, base, 0));
  peft::delete_adapter(m.module(), "default");
  EXPECT_FALSE(peft::find_prompt_encoder(m.module(), "default"));
  EXPECT_TRUE(close_to_scale(forward(m, 0).logits, base, 0));
}

TEST(PromptMethods, ShortTrainingLowersLoss) {
  for (const char* type : {"PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING"}) {
    test::TinyModel m("gpt2");
    nlohmann::json j = {{"peft_type", type}, {"task_type", "CAUSAL_LM"}, {"num_virtual_tokens", 4}};
    if (std::string(type) == "PREFIX_TUNING") j["prefix_projection"] = true;
    peft::add_adapter(m.module(), peft::parse_peft_config(j), "default", 3);
    std::vector<Tensor> trainable;
    for (auto& [n, p] : m.module().named_parameters())
      if (p.requires_grad()) trainable.push_back(p);
    ASSERT_FALSE(trainable.empty());
    Optimizer opt = make_adamw(trainable, 3e-2, 0.0);
    const int64_t inserted = std::string(type) == "PREFIX_TUNING" ? 0 : 4;
    const double first = forward(m, inserted).loss.item();
    double last = first;
    for (int i = 0; i < 15; ++i) {
      zero_grad(opt);
      Tensor loss = forward(m, inserted).loss;
      last = loss.item();
      backward(loss);
      step(opt);
    }
    EXPECT_LT(last, first - 0.05) << type;
  }
}

TEST(PromptMethods, ConfigErrorsNameTheField) {
  test::TinyModel m("gpt2");
  nlohmann::json j = {{"peft_type", "PROMPT_TUNING"}, {"num_virtual_tokens", 0}};
  EXPECT_THROW(peft::add_adapter(m.module(), peft::parse_peft_config(j)), Error);
  j = {{"peft_type", "P_TUNING"}, {"num_virtual_tokens", 2}, {"encoder_reparameterization_type", "LSTM"}};
  EXPECT_THROW(peft::add_adapter(m.module(), peft::parse_peft_config(j)), Error);
  test::TinyModel t5("t5");  // an encoder-decoder prefix needs task_type SEQ_2_SEQ_LM (2 submodules, as HF)
  j = {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 2}};
  EXPECT_THROW(peft::add_adapter(t5.module(), peft::parse_peft_config(j)), Error);
  j = {{"peft_type", "PREFIX_TUNING"}, {"task_type", "SEQ_2_SEQ_LM"}, {"num_virtual_tokens", 2}, {"num_layers", 3}};
  EXPECT_THROW(peft::add_adapter(t5.module(), peft::parse_peft_config(j)), Error);
  test::TinyModel vit("vit");
  j = {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 2}};
  EXPECT_THROW(peft::add_adapter(vit.module(), peft::parse_peft_config(j)), Error);
}

// Adaption prompt (HF's GPT-2 variant): PEFT's adapter (gate non-zero) gives its logits, loss and gradients;
// a fresh adapter (gate 0) is exactly the base model; files written here have PEFT's keys and config fields.
TEST(AdaptionPrompt, MatchesPeftAndIsANoOpAtStepZero) {
  const std::string dir = prompt_fixture_dir("gpt2_adaption_prompt");
  test::TinyModel m("gpt2");
  Tensor base = forward(m, 0).logits;
  peft::PeftConfig config = peft::load_adapter(m.module(), dir);
  auto fx = test::read_tensors(dir + "/fixture.safetensors");
  Out out = forward(m, 0);
  EXPECT_TRUE(close_to_scale(out.logits, fx.at("logits"), 1e-5));
  EXPECT_NEAR(out.loss.item(), fx.at("loss").item(), 1e-5 * std::abs(fx.at("loss").item()));
  backward(out.loss);
  auto sd = peft::adapter_state_dict(m.module(), "default");
  EXPECT_EQ(sd.size(), 2u);
  for (auto& [key, t] : sd) {
    ASSERT_TRUE(fx.count("grad." + key)) << key;
    EXPECT_TRUE(close_in_norm(t.grad(), fx.at("grad." + key), 1e-4, 1e-7)) << key;
  }
  const auto out_dir = std::filesystem::path(VLP_BINARY_DIR) / "peft_prompts_written" / "gpt2_adaption_prompt";
  std::filesystem::remove_all(out_dir);
  peft::save_adapter(m.module(), config, "default", out_dir.string());
  auto mine = test::read_tensors((out_dir / "adapter_model.safetensors").string());
  auto theirs = test::read_tensors(dir + "/adapter_model.safetensors");
  ASSERT_EQ(mine.size(), theirs.size());
  for (auto& [k, t] : theirs) {
    ASSERT_TRUE(mine.count(k)) << k;
    EXPECT_TRUE(close_to_scale(mine.at(k), t, 0)) << k;
  }
  nlohmann::json a = nlohmann::json::parse(test::read_text((out_dir / "adapter_config.json").string()));
  nlohmann::json b = nlohmann::json::parse(test::read_text(dir + "/adapter_config.json"));
  EXPECT_EQ(a, b);

  test::TinyModel fresh("gpt2");
  nlohmann::json j = {{"peft_type", "ADAPTION_PROMPT"}, {"task_type", "CAUSAL_LM"}, {"adapter_len", 4}, {"adapter_layers", 2}};
  peft::add_adapter(fresh.module(), peft::parse_peft_config(j), "default", 11);
  Out zero = forward(fresh, 0);
  EXPECT_TRUE(close_to_scale(zero.logits, base, 0));  // gate 0: exactly the base model
  backward(zero.loss);
  size_t gates = 0;
  for (auto& [n, p] : fresh.module().named_parameters())
    if (n.find("adaption_gate") != std::string::npos) {
      ++gates;
      EXPECT_GT(std::abs(to_vector(p.grad())[0]), 0.0) << n;  // the gate learns from step 0
    }
  EXPECT_EQ(gates, 2u);
}

// VPT on the tiny ViT: the right number of positions inserted, CLS still at 0 (the classifier reads it), patch
// tokens still last; deep replaces the slots before every later layer; training the prompts lowers the loss.
TEST(Vpt, ShallowAndDeepInsertPromptsAfterCls) {
  test::TinyModel base("vit");
  Tensor pixels = base.batch.at("pixel_values");
  auto b = base.vit->forward(pixels);
  const int64_t T = b.vit.last_hidden_state.size(1), L = int64_t(base.vit->vit.encoder.layers.size());
  for (bool deep : {false, true}) {
    test::TinyModel m("vit");
    nlohmann::json j = {{"peft_type", "VLPEFT_VPT"}, {"num_virtual_tokens", 3}, {"vpt_deep", deep}};
    peft::add_adapter(m.module(), peft::parse_peft_config(j), "default", 5);
    size_t prompts = 0;
    for (auto& [n, p] : m.module().named_parameters()) {
      EXPECT_EQ(p.requires_grad(), n.find(".adapters.default.prompt") != std::string::npos) << n;
      if (n.find(".adapters.default.prompt") != std::string::npos) {
        ++prompts;
        EXPECT_EQ(p.size(0), 3);
      }
    }
    EXPECT_EQ(prompts, deep ? size_t(L) : 1u);
    auto o = m.vit->forward(pixels);
    ASSERT_EQ(o.vit.last_hidden_state.size(1), T + 3);
    EXPECT_TRUE(close_to_scale(o.logits, m.vit->classifier.forward(select(o.vit.last_hidden_state, 1, 0)), 0));
    EXPECT_EQ(o.vit.patch_tokens().size(1), T - 1);
    // The prompts reach CLS through attention: the logits moved.
    EXPECT_FALSE(close_to_scale(o.logits, b.logits, 1e-6));
    std::vector<Tensor> trainable;
    for (auto& [n, p] : m.module().named_parameters())
      if (p.requires_grad()) trainable.push_back(p);
    Optimizer opt = make_adamw(trainable, 5e-2, 0.0);
    Tensor labels = m.batch.at("labels");
    const double first = cross_entropy(o.logits, labels).item();
    double last = first;
    for (int i = 0; i < 10; ++i) {
      zero_grad(opt);
      Tensor loss = cross_entropy(m.vit->forward(pixels).logits, labels);
      last = loss.item();
      backward(loss);
      step(opt);
    }
    EXPECT_LT(last, first) << (deep ? "deep" : "shallow");
  }
}

TEST(Vpt, DeepReplacesThePromptSlots) {
  // A replacing adapter keeps CLS and the tokens after the slots, and writes the prompt into positions 1..p.
  peft::VisualPromptAdapter a(2, 4, true);
  {
    NoGradGuard no_grad;
    copy_(a.prompt, from_vector({1, 2, 3, 4, 5, 6, 7, 8}, {2, 4}));
  }
  Tensor h = reshape(arange(24, DType::F32), {1, 6, 4});
  Tensor mask = ones({1, 6}, DType::I64);
  Tensor out = a.forward(h, mask, {});
  ASSERT_EQ(out.shape(), (Shape{1, 6, 4}));
  std::vector<double> v = to_vector(out);
  EXPECT_EQ(std::vector<double>(v.begin(), v.begin() + 4), (std::vector<double>{0, 1, 2, 3}));
  EXPECT_EQ(std::vector<double>(v.begin() + 4, v.begin() + 12), (std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8}));
  std::vector<double> hv = to_vector(h);
  EXPECT_EQ(std::vector<double>(v.begin() + 12, v.end()), std::vector<double>(hv.begin() + 12, hv.end()));
  peft::VisualPromptAdapter ins(2, 4, false);
  Tensor m2 = ones({1, 6}, DType::I64);
  EXPECT_EQ(ins.forward(h, m2, {}).size(1), 8);
  EXPECT_EQ(m2.size(1), 8);
}

}  // namespace
}  // namespace vlp
