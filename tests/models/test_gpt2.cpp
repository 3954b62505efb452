// GPT-2 against transformers' GPT2LMHeadModel on the tiny reference model (tests/fixtures/models/gpt2):
// logits and loss within 1e-5 (logits: max |diff| relative to max |logit|; loss: relative), every parameter
// gradient within 1e-4 relative to its norm (+ a 1e-6 RMS floor); parameter names; the KV cache; dropout; the sites.
#include "tests/models/text_fixture.h"

namespace vlp {
namespace {

using test::close_in_norm;
using test::close_to_scale;

struct GPT2Fixture : ::testing::Test {
  GPT2Config config = read_gpt2_config(test::model_fixture_dir("gpt2"));
  std::unique_ptr<GPT2LMHeadModel> model = std::make_unique<GPT2LMHeadModel>(config);
  std::map<std::string, Tensor> fx = test::read_fixture("gpt2");
  void SetUp() override { load_checkpoint(*model, test::model_fixture_dir("gpt2")); }
  GPT2Input batch() const {
    GPT2Input in;
    in.input_ids = fx.at("input_ids");
    in.attention_mask = fx.at("attention_mask");
    in.labels = fx.at("labels");
    return in;
  }
};

TEST_F(GPT2Fixture, LogitsLossAndGradientsMatchTransformers) {
  model->set_requires_grad(true);
  CausalLMOutput out = model->forward(batch());
  EXPECT_TRUE(close_to_scale(out.logits, fx.at("logits"), 1e-5));
  EXPECT_NEAR(out.loss.item(), fx.at("loss").item(), 1e-5 * std::abs(fx.at("loss").item()));
  backward(out.loss);
  test::expect_gradients_match(*model, fx, 1e-4);
}

TEST_F(GPT2Fixture, ParameterNamesAreTransformers) {
  auto names = model->named_parameters();
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front().first, "transformer.wte.weight");
  EXPECT_NE(model->find_module("transformer.h.1.attn.c_attn"), nullptr);
  EXPECT_STREQ(model->find_module("transformer.h.1.attn.c_attn")->type_name(), "Conv1D");
  // Conv1D stores [in, out].
  const auto* c_fc = dynamic_cast<const Linear*>(model->find_module("transformer.h.0.mlp.c_fc"));
  ASSERT_NE(c_fc, nullptr);
  EXPECT_EQ(c_fc->weight.shape(), (Shape{config.n_embd, config.inner_dim()}));
  EXPECT_EQ(model->num_parameters(), num_parameters(config));
}

TEST_F(GPT2Fixture, SitesAreNamedPredictably) {
  for (int64_t i = 0; i < config.n_layer; ++i) {
    const std::string layer = "transformer.h." + std::to_string(i);
    ASSERT_NE(model->find_module(layer + ".sa_site"), nullptr);
    EXPECT_STREQ(model->find_module(layer + ".sa_site")->type_name(), "SublayerSite");
    EXPECT_STREQ(model->find_module(layer + ".ff_site")->type_name(), "SublayerSite");
    EXPECT_STREQ(model->find_module(layer + ".attn.attn_site")->type_name(), "AttentionSite");
  }
  EXPECT_STREQ(model->find_module("transformer.input_site")->type_name(), "InputSite");
}

TEST_F(GPT2Fixture, IncrementalDecodingWithCacheMatchesFullForward) {
  NoGradGuard no_grad;
  GPT2Input full = batch();
  full.labels = Tensor();
  Tensor ref = model->forward(full).logits;
  const int64_t T = full.input_ids.size(1);
  DecoderCache cache;
  std::vector<Tensor> steps;
  for (int64_t start = 0; start < T;) {
    const int64_t n = start == 0 ? 4 : 1;  // a prompt of 4, then one token at a time
    GPT2Input in;
    in.input_ids = narrow(full.input_ids, 1, start, n);
    in.attention_mask = narrow(full.attention_mask, 1, 0, start + n);
    steps.push_back(model->forward(in, {}, &cache).logits);
    start += n;
  }
  EXPECT_EQ(cache.past_length(), T);
  EXPECT_TRUE(close_to_scale(concat(steps, 1), ref, 1e-5));
}

TEST_F(GPT2Fixture, DropoutOnlyInTrainingAndReproducible) {
  NoGradGuard no_grad;
  GPT2Input in = batch();
  in.labels = Tensor();
  Tensor eval = model->forward(in).logits;
  ForwardContext train;
  train.training = true;
  Generator g1(7), g2(7), g3(8);
  train.generator = &g1;
  Tensor a = model->forward(in, train).logits;
  train.generator = &g2;
  Tensor b = model->forward(in, train).logits;
  train.generator = &g3;
  Tensor c = model->forward(in, train).logits;
  EXPECT_TRUE(test::all_close(a, b, 0.0, 0.0)) << "same generator state, same dropout";
  EXPECT_FALSE(test::all_close(a, eval, 1e-3, 1e-3)) << "training applies dropout";
  EXPECT_FALSE(test::all_close(a, c, 1e-3, 1e-3)) << "another seed, other masks";
  EXPECT_TRUE(test::all_close(model->forward(in).logits, eval, 0.0, 0.0)) << "eval is deterministic";
}

TEST_F(GPT2Fixture, SublayerSitesSeeEverySublayer) {
  std::vector<std::shared_ptr<test::CountingSublayerAdapter>> counters;
  for (int64_t i = 0; i < config.n_layer; ++i)
    for (const char* site : {".sa_site", ".ff_site"}) {
      auto* s = dynamic_cast<SublayerSite*>(model->find_module("transformer.h." + std::to_string(i) + site));
      ASSERT_NE(s, nullptr);
      counters.push_back(std::make_shared<test::CountingSublayerAdapter>());
      attach_adapter(*s, "count", counters.back());
    }
  NoGradGuard no_grad;
  GPT2Input in = batch();
  Tensor logits = model->forward(in).logits;
  EXPECT_TRUE(close_to_scale(logits, fx.at("logits"), 1e-5)) << "a pass-through adapter changes nothing";
  for (const auto& c : counters) {
    EXPECT_EQ(c->calls, 1);
    EXPECT_EQ(c->output_shape, (Shape{2, in.input_ids.size(1), config.n_embd}));
    EXPECT_EQ(c->input_shape, c->output_shape);
  }
}

// Prefix tuning through the attention sites equals attending to real earlier tokens: prepend the keys and
// values the first P tokens produce (from a cache), run the rest at positions P.., compare with the full run.
TEST_F(GPT2Fixture, AttentionSitePrefixEqualsCachedContext) {
  NoGradGuard no_grad;
  Tensor ids = narrow(fx.at("input_ids"), 0, 0, 1);  // row 0: 10 real tokens
  const int64_t P = 4, T = ids.size(1);
  GPT2Input full;
  full.input_ids = ids;
  Tensor ref = narrow(model->forward(full).logits, 1, P, T - P);
  DecoderCache cache;
  GPT2Input prefix;
  prefix.input_ids = narrow(ids, 1, 0, P);
  model->forward(prefix, {}, &cache);
  for (int64_t i = 0; i < config.n_layer; ++i) {
    auto adapter = std::make_shared<test::FixedPrefixAdapter>();
    std::tie(adapter->k, adapter->v) = cache.self_attn[size_t(i)].get();
    adapter->k = contiguous(adapter->k), adapter->v = contiguous(adapter->v);
    attach_adapter(model->transformer.blocks[size_t(i)]->attn.attn_site, "prefix", adapter);
  }
  GPT2Input rest;
  rest.input_ids = narrow(ids, 1, P, T - P);
  rest.attention_mask = ones({1, T - P}, DType::I64);  // the adapter extends it over the prefix
  std::vector<int64_t> pos;
  for (int64_t t = P; t < T; ++t) pos.push_back(t);
  rest.position_ids = from_data(pos, {1, T - P});
  EXPECT_TRUE(close_to_scale(model->forward(rest).logits, ref, 1e-5));
}

// Prompt tuning through the input site equals feeding the prompt's tokens: positions run over the prompt too.
TEST_F(GPT2Fixture, InputSitePromptEqualsPrependedTokens) {
  NoGradGuard no_grad;
  Tensor ids = narrow(fx.at("input_ids"), 0, 0, 1);
  const int64_t P = 3;
  auto prompt = std::make_shared<test::FixedPromptAdapter>();
  prompt->prompt = model->transformer.wte.forward(narrow(ids, 1, 0, P));
  GPT2Input full;
  full.input_ids = ids;
  Tensor ref = model->forward(full).logits;
  attach_adapter(model->transformer.input_site, "prompt", prompt);
  GPT2Input rest;
  rest.input_ids = narrow(ids, 1, P, ids.size(1) - P);
  CausalLMOutput out = model->forward(rest);
  EXPECT_TRUE(close_to_scale(out.logits, ref, 1e-5));
}

TEST_F(GPT2Fixture, LossShiftsLabelsAndIgnoresMinus100) {
  NoGradGuard no_grad;
  // A hand-made check of the shift on one row: loss = mean over t of CE(logits[t], ids[t+1]).
  Tensor ids = narrow(fx.at("input_ids"), 0, 1, 1);  // 6 real tokens, 4 pads labelled -100
  GPT2Input in;
  in.input_ids = ids;
  in.attention_mask = narrow(fx.at("attention_mask"), 0, 1, 1);
  in.labels = narrow(fx.at("labels"), 0, 1, 1);
  CausalLMOutput out = model->forward(in);
  std::vector<double> logits = to_vector(out.logits), labels = to_vector(in.labels);
  const int64_t V = config.vocab_size;
  double total = 0;
  int n = 0;
  for (int64_t t = 0; t + 1 < ids.size(1); ++t) {
    if (labels[size_t(t + 1)] == -100) continue;
    double m = -1e300, s = 0;
    for (int64_t v = 0; v < V; ++v) m = std::max(m, logits[size_t(t * V + v)]);
    for (int64_t v = 0; v < V; ++v) s += std::exp(logits[size_t(t * V + v)] - m);
    total += m + std::log(s) - logits[size_t(t * V + int64_t(labels[size_t(t + 1)]))];
    ++n;
  }
  EXPECT_EQ(n, 5);
  EXPECT_NEAR(out.loss.item(), total / n, 1e-5);
}

}  // namespace
}  // namespace vlp
